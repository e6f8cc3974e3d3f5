#!/usr/bin/env python3
"""Docker HEALTHCHECK of the tritonctl images: exit 0 when GET /v2/health/ready answers 200, else 1.

The port is the server's --http-port, read from the command line of the container's first process
(`tini -- tritonserver ...`), so `docker run IMAGE tritonserver --http-port=9000 ...` is still checked
on the right port. Installed in the images as `tritonserver-healthcheck`; standard library only.
Environment: TRITONCTL_HEALTH_URL replaces the URL; TRITONCTL_HEALTH_PID names another process to read.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_HTTP_PORT = 8000
READY_PATH = "/v2/health/ready"
TIMEOUT_S = 5.0


def http_port(argv: list[str]) -> int:
    """The last --http-port in a tritonserver command line (`--http-port=N` or `--http-port N`)."""
    port = DEFAULT_HTTP_PORT
    for index, arg in enumerate(argv):
        if arg.startswith("--http-port="):
            port = int(arg.partition("=")[2])
        elif arg == "--http-port" and index + 1 < len(argv):
            port = int(argv[index + 1])
    return port


def process_argv(pid: str) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def ready_url() -> str:
    explicit = os.environ.get("TRITONCTL_HEALTH_URL")
    if explicit:
        return explicit
    try:
        port = http_port(process_argv(os.environ.get("TRITONCTL_HEALTH_PID", "1")))
    except (OSError, ValueError):
        port = DEFAULT_HTTP_PORT
    return f"http://127.0.0.1:{port}{READY_PATH}"


def main() -> int:
    url = ready_url()
    # No proxies: an http_proxy set for the container must not swallow a loopback probe.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_S) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:  # 503 while models load
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        print(f"not ready: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"not ready: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
