"""Entry point of a worker process: `python -m server.workers.main --fd N`.

Started by the main process (server/workers/supervisor.py) with one end of a socketpair as fd N.
Ctrl-C in a terminal reaches the whole process group; the worker ignores it and lets the main
process close it in order (finalize, then exit), or notices the main process is gone.
"""

from __future__ import annotations

import argparse
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.workers.main")
    parser.add_argument(
        "--fd", type=int, required=True, help="control socket inherited from the main process"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from server.malloc_tuning import keep_large_buffers_in_heap

    keep_large_buffers_in_heap()  # outputs of large models are allocated per batch too

    from server.workers.worker import run

    return run(args.fd)


if __name__ == "__main__":
    sys.exit(main())
