"""Entry point of a shared host process: `python -m server.workers.host_process --fd N`.

One host holds the instances of many framework models (onnxruntime, pytorch, tensorrt) of one
device: each instance is a thread running the ordinary worker loop (worker.py) over its own
control socket and arenas, so the main process talks to a hosted instance exactly as to a worker
process (server/workers/host.py). The interpreter, numpy and the framework are paid for once.

The host's own control socket (fd N, SOCK_SEQPACKET) carries:
  main -> host   {"op": "add", "id": k} + the instance's socket as a file descriptor
  host -> main   {"op": "loaded", "id": k, "memory": bytes}   after the instance's load (ok or not):
                 the resident memory the load added, measured with loads serialised
                 {"op": "ended", "id": k, "code": 0|1}         the instance's thread ended
End-of-file on it (the main process is gone) ends the host. A model that kills the interpreter
(segfault, os._exit) ends the host: the main process sees every hosted instance exit and restarts
them in a new host (their supervisors' usual crash path).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
import traceback

from server.workers.shm import Receiver, decode, encode, send

_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident set size (from /proc/self/statm)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


class Host:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self._send_lock = threading.Lock()
        self._load_lock = threading.Lock()  # loads one at a time: their memory is then measurable

    def tell(self, record: dict[str, object]) -> None:
        with self._send_lock, contextlib.suppress(OSError):  # main gone: serve() ends the host
            send(self.control, encode(record))

    def serve(self) -> None:
        receiver = Receiver(self.control)
        while True:
            received = receiver.receive()
            if received is None:
                return
            message, fds = received
            record = decode(message)
            if record.get("op") != "add" or not fds:
                for fd in fds:
                    os.close(fd)
                continue
            for extra in fds[1:]:
                os.close(extra)
            threading.Thread(
                target=self._run_instance,
                args=(int(record["id"]), fds[0]),
                name=f"instance-{record['id']}",
                daemon=True,
            ).start()

    def _run_instance(self, ident: int, fd: int) -> None:
        from server.workers.worker import Worker

        sock = socket.socket(fileno=fd)
        code = 1
        try:
            worker = Worker(sock)
            with self._load_lock:
                before = resident_bytes()
                started = worker.start()
                added = max(0, resident_bytes() - before)
            self.tell({"op": "loaded", "id": ident, "memory": added})
            if started:
                worker.serve()
                code = 0
        except Exception:
            traceback.print_exc()
        finally:
            self.tell({"op": "ended", "id": ident, "code": code})
            sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.workers.host_process")
    parser.add_argument("--fd", type=int, required=True, help="control socket from the main process")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from server.malloc_tuning import keep_large_buffers_in_heap

    keep_large_buffers_in_heap()
    import server.workers.worker  # noqa: F401  (the loop every hosted instance runs)

    host = Host(socket.socket(fileno=args.fd))
    host.serve()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # instance threads may sit in user code: they end with the process


if __name__ == "__main__":
    sys.exit(main())
