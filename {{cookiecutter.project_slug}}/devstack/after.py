"""`python -m devstack.after URL... -- COMMAND...`: start COMMAND once every URL is healthy.

The process manager starts every service at once; this gate gives the dependency order
compose gets from `depends_on: condition: service_healthy`. The command replaces this
process (exec), so signals and the exit code are the service's own.
"""

from __future__ import annotations

import os
import sys

from devstack.health import wait_healthy


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: python -m devstack.after URL... -- COMMAND...", file=sys.stderr)
        return 2
    split = argv.index("--")
    urls, command = argv[:split], argv[split + 1 :]
    if not command:
        print("devstack.after: no command after --", file=sys.stderr)
        return 2
    timeout = float(os.environ.get("DEV_START_TIMEOUT", "900"))
    for url in urls:
        print(f"waiting for {url}", flush=True)
        if not wait_healthy(url, timeout, redis_password=os.environ.get("REDISCLI_AUTH")):
            print(f"{url} not healthy after {timeout:.0f}s; not starting", file=sys.stderr)
            return 1
    print(f"starting: {' '.join(command)}", flush=True)
    os.execvp(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
