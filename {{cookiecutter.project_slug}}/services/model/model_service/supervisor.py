"""Keeps the transformers generation loop alive.

transformers' continuous batching runs the model in one background thread; an exception
there (a forward pass that fails, a sampler that raises) ends the thread for good, and
without supervision every later request would wait forever. The supervisor notices the
dead loop within `POLL_SECONDS`, fails every request still waiting on it with
`LoopFailed` (answered 503 with `retry-after`), and starts a fresh batching manager on
the same weights. `/health` answers 503 from the moment the loop dies until the new one
runs, so probes and the gateway see the truth.
"""

from __future__ import annotations

import asyncio
import logging

from model_service.generation import GenerationEngine, LoopFailed

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # between failed restarts, then the last


class LoopSupervisor:
    def __init__(self, engine: GenerationEngine) -> None:
        self.engine = engine
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            if not self.engine.alive():
                await self._recover()

    async def _recover(self) -> None:
        reason = self.engine.loop_error()
        failed = self.engine.fail_in_flight(LoopFailed(f"the generation loop failed: {reason}"))
        log.error("generation loop died (%s); failed %d request(s), restarting", reason, failed)
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(self.engine.restart)
                break
            except Exception:
                delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                log.exception("restarting the generation loop failed; retrying in %.0fs", delay)
                attempt += 1
                await asyncio.sleep(delay)
        self.restarts += 1
        self.engine.metrics.observe_loop_restart()
        log.warning("generation loop restarted (%d restart(s) so far)", self.restarts)
