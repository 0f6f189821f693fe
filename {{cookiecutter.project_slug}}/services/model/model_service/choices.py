"""Running a request's `n` choices: each its own sequence in the batch, with its own seed
(`seed + index`, as vLLM derives its child requests' seeds), whole or streamed."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from model_service.generation import Delta, GenerationEngine, RequestStats
from model_service.logprobs import TokenLogprob
from model_service.sampling import SamplingParams


@dataclass
class Generated:
    """One finished choice."""

    text: str = ""
    last: Delta = field(default_factory=lambda: Delta("", 0))
    logprobs: list[TokenLogprob] = field(default_factory=list)


def per_choice(params: SamplingParams, n: int) -> list[SamplingParams]:
    if params.seed is None:
        return [params] * n
    return [dataclasses.replace(params, seed=params.seed + i) for i in range(n)]


async def collect(deltas: AsyncGenerator[Delta, None]) -> Generated:
    result = Generated()
    parts = []
    async for delta in deltas:
        parts.append(delta.text)
        result.logprobs.extend(delta.logprobs)
        result.last = delta
    result.text = "".join(parts)
    return result


async def open_streams(
    engine: GenerationEngine,
    prompt_ids: list[int],
    params: list[SamplingParams],
    stats: list[RequestStats],
) -> list[tuple[AsyncGenerator[Delta, None], Delta]]:
    """Admit every choice and take its first delta (so a full queue is an error before
    any response starts); on failure the choices admitted so far are closed."""
    opened: list[tuple[AsyncGenerator[Delta, None], Delta]] = []
    try:
        for choice_params, choice_stats in zip(params, stats, strict=True):
            deltas = engine.generate(prompt_ids, choice_params, choice_stats)
            try:
                opened.append((deltas, await anext(deltas)))
            except BaseException:
                await deltas.aclose()
                raise
    except BaseException:
        for deltas, _ in opened:
            await deltas.aclose()
        raise
    return opened


async def merged(
    streams: list[tuple[AsyncGenerator[Delta, None], Delta]],
) -> AsyncGenerator[tuple[int, Delta], None]:
    """(choice index, delta) in the order they are generated; an error in one choice
    ends the whole stream; leaving early cancels every choice."""
    queue: asyncio.Queue[tuple[int, Delta | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, deltas: AsyncGenerator[Delta, None]) -> None:
        try:
            async for delta in deltas:
                await queue.put((index, delta))
            await queue.put((index, None))
        except Exception as error:
            await queue.put((index, error))

    for index, (_, opening) in enumerate(streams):
        yield index, opening
    tasks = [asyncio.ensure_future(pump(i, deltas)) for i, (deltas, _) in enumerate(streams)]
    running = len(tasks)
    try:
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for deltas, _ in streams:
            await deltas.aclose()
