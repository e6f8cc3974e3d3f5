"""Entry point of a shared host process: `python -m server.workers.host_process --fd N [--fork]`.

With `--fork` it is a template instead (`Template`): python workers are forked from it, warm.

One host holds the instances of many framework models (onnxruntime, pytorch, tensorrt) of one
device: each instance is a thread running the ordinary worker loop (worker.py) over its own
control socket and arenas, so the main process talks to a hosted instance exactly as to a worker
process (server/workers/host.py). The interpreter, numpy and the framework are paid for once.

The host's own control socket (fd N, SOCK_SEQPACKET) carries:
  main -> host   {"op": "add", "id": k} + the instance's socket as a file descriptor
  host -> main   {"op": "loaded", "id": k, "memory": bytes, "gpu_memory": bytes}   after the
                 instance's load (ok or not): the resident memory and the GPU memory (NVML, this
                 pid, the host's one device; 0 on a CPU host) the load added, loads serialised
                 {"op": "ended", "id": k, "code": 0|1}         the instance's thread ended
A template (--fork) answers "add" with {"op": "forked", "id": k, "pid": pid} + a pidfd of the
worker (opened before the template can reap it, so it names that process and no later one with a
reused pid), and reports "ended" with the worker's exit status (negative: the signal that killed it)
once it has reaped it: only then is the worker gone, so the main process reports a forked worker's
exit on that message, never on its own kill.
End-of-file on it (the main process is gone) ends the host. A model that kills the interpreter
(segfault, os._exit) ends the host: the main process sees every hosted instance exit and restarts
them in a new host (their supervisors' usual crash path).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import socket
import sys
import threading
import traceback

from server.vocabulary.collector import settle_after_load
from server.workers.shm import Receiver, decode, encode, send

_PAGE = os.sysconf("SC_PAGE_SIZE")
_FRAMEWORKS = {"onnxruntime": "onnxruntime", "pytorch": "torch", "tensorrt": "tensorrt"}
# Backends whose framework sets up megabytes once per process on its first model: warm_up() pays
# that at the host's start, so a memory budget does not charge it to whichever model comes first.
_WARM_UPS = {"onnxruntime": "server.backends.onnxruntime", "pytorch": "server.backends.pytorch"}


class ResidentSize:
    """This process's resident set size, from /proc/self/statm kept open (read twice per load)."""

    def __init__(self) -> None:
        self._statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)

    def __call__(self) -> int:
        return int(os.pread(self._statm, 256, 0).split()[1]) * _PAGE


class Host:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self._send_lock = threading.Lock()
        self._load_lock = threading.Lock()  # loads one at a time: their memory is then measurable
        self._resident = ResidentSize()
        from server.vocabulary.gpu_memory import own_gpu_reader

        self._gpu_used = own_gpu_reader() or (lambda: 0)  # a CPU host never imports pynvml

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
        worker: Worker | None = None
        try:
            worker = Worker(sock)
            with self._load_lock:
                before, gpu_before = self._resident(), self._gpu_used()
                started = worker.start()
                added = max(0, self._resident() - before)
                gpu_added = max(0, self._gpu_used() - gpu_before)
            settle_after_load()
            self.tell({"op": "loaded", "id": ident, "memory": added, "gpu_memory": gpu_added})
            if started:
                worker.serve()
                code = 0
        except Exception:
            traceback.print_exc()
        finally:
            if worker is not None:
                worker.close()
            self.tell({"op": "ended", "id": ident, "code": code})
            sock.close()


class Template:
    """A warm process that forks python workers: the interpreter, numpy, the worker loop and the
    python backend are imported once, and every worker forked from here shares those pages with
    it (copy-on-write) instead of importing them again, which makes a worker cheaper to start
    and to keep. Single-threaded, so forking is safe; children are reaped on SIGCHLD."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.children: dict[int, int] = {}  # pid -> instance id

    def tell(self, record: dict[str, object], fds: list[int] | None = None) -> None:
        with contextlib.suppress(OSError):
            send(self.control, encode(record), fds)

    def serve(self) -> None:
        import selectors

        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        receiver = Receiver(self.control)
        selector = selectors.DefaultSelector()  # epoll: the inherited fd may be above select()'s 1024
        selector.register(self.control.fileno(), selectors.EVENT_READ)
        selector.register(wake_read, selectors.EVENT_READ)
        while True:
            readable = {key.fd for key, _ in selector.select()}
            if wake_read in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 512)
                self._reap()
            if self.control.fileno() not in readable:
                continue
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
            pid = os.fork()
            if pid == 0:  # the worker
                selector.close()
                os.close(wake_read)
                os.close(wake_write)
                self._become_worker(fds[0])
            os.close(fds[0])
            self.children[pid] = int(record["id"])
            pidfd = _pidfd_of(pid)
            self.tell({"op": "forked", "id": int(record["id"]), "pid": pid}, [pidfd] if pidfd >= 0 else None)
            if pidfd >= 0:
                os.close(pidfd)  # the main process holds its own copy now

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            ident = self.children.pop(pid, None)
            if ident is not None:
                self.tell({"op": "ended", "id": ident, "code": os.waitstatus_to_exitcode(status)})

    def _become_worker(self, fd: int) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.control.close()
            retitle(f"{sys.executable}\0-m\0server.workers.main\0--fd\0{fd}")
            from server.workers.worker import run

            code = run(fd)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def _pidfd_of(pid: int) -> int:
    """A pidfd of our child `pid` for the main process, or -1 where pidfds are missing (Linux < 5.3):
    the main process then signals the bare pid until this template reports it reaped."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1


def retitle(command_line: str) -> None:
    """Rewrite this process's command line (/proc/PID/cmdline, ps) in place: a forked worker then
    reads as `python -m server.workers.main`, like one that was spawned. Best effort."""
    with contextlib.suppress(Exception):
        import ctypes

        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
        text = command_line.encode()[: end - start - 1]
        ctypes.memmove(start, text + b"\0" * (end - start - len(text)), end - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.workers.host_process")
    parser.add_argument("--fd", type=int, required=True, help="control socket from the main process")
    parser.add_argument("--fork", action="store_true", help="fork python workers instead of hosting threads")
    parser.add_argument("--backend", default="", help="the framework to import before the first model")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from server.malloc_tuning import keep_large_buffers_in_heap

    keep_large_buffers_in_heap()
    import server.workers.worker
    from server.workers.backend_loading import import_what_loads_need

    # Before any load: a host's first model is not charged them, a template's workers share them.
    import_what_loads_need()
    control = socket.socket(fileno=args.fd)
    if args.fork:
        import server.backends.python.backend  # noqa: F401  (what every forked worker needs)

        Template(control).serve()
    else:
        # Imported (and warmed up) before the first load, so what a load adds to the host (its
        # measured memory) is the model's, not the framework's or our own modules'.
        framework = _FRAMEWORKS.get(args.backend)
        if framework is not None:
            with contextlib.suppress(ImportError):
                importlib.import_module(framework)
        warming = _WARM_UPS.get(args.backend)
        if warming is not None:
            # A broken framework is for the model's own load to report, with its name on it.
            with contextlib.suppress(Exception):
                importlib.import_module(warming).warm_up()
        Host(control).serve()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # instance threads may sit in user code: they end with the process


if __name__ == "__main__":
    sys.exit(main())
