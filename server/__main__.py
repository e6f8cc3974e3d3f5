"""`python -m server [tritonserver flags]`: the server with Triton's command-line spellings."""

from __future__ import annotations

import sys

from server.app import serve
from server.errors import ConfigError
from server.options import parse_tritonserver_args


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_tritonserver_args(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return serve(options)


if __name__ == "__main__":
    sys.exit(main())
