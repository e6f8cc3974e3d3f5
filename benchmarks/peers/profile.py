"""Where does a P1 request's time go? CPU per request per process, then a py-spy profile of ours.

    .venv/bin/python -m benchmarks.peers.profile --protocol grpc --concurrency 8 --seconds 15

1. Cost: ours and the real Triton serve P1's identity; perf_analyzer loads each for `--seconds`
   (alternating, `--rounds` times). Each process's CPU time over the run divided by the requests the
   server counted (statistics endpoint) gives CPU microseconds per request: front end vs worker
   (ours), tritonserver vs python stub (Triton), and what perf_analyzer itself burns.
2. Profile: py-spy samples our server and its workers (`--subprocesses`) under the same load and
   writes raw collapsed stacks (open them in speedscope.app) plus the top frames, by self and by
   inclusive time, per process, to benchmarks/out/profile-<protocol>-c<N>.{txt,md}.
Needs py-spy (`.venv/bin/pip install py-spy`, in the `bench` extra).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.peers import repos
from benchmarks.peers.floor import ENGINES
from benchmarks.peers.systems import OURS, TRITON, System, start_ours, start_triton
from benchmarks.peers.tools import ROOT, Tools, ensure_tools, snapshot_head
from server.repository.instance_mode import INSTANCE_MODES, PROCESS

OUT = ROOT / "benchmarks" / "out"
PY_SPY = Path(sys.executable).parent / "py-spy"


def _counts(system: System) -> tuple[int, int]:
    """(requests, executions) the server counted (gRPC statistics: the floor server has no HTTP)."""
    from tritonclient.grpc import InferenceServerClient

    with InferenceServerClient(system.grpc_url) as client:
        stats = client.get_inference_statistics(repos.IDENTITY).model_stats[0]
    return int(stats.inference_stats.success.count), int(stats.execution_count)


def start_floor(engine: str) -> System:
    """The minimal identity server of benchmarks/peers/floor.py on one gRPC engine, as a subprocess."""
    command = [sys.executable, "-m", "benchmarks.peers.floor", "--engine", engine]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout is not None
    port = int(process.stdout.readline())

    def stop() -> None:
        process.terminate()
        process.wait(10)

    return System(f"floor {engine}", f"127.0.0.1:{port}", "", process.pid, stop)


def _role(process: psutil.Process, root_pid: int) -> str:
    if process.pid == root_pid:
        return "front end" if "python" in process.name() else process.name()
    text = " ".join(process.cmdline())
    return "python stub" if "triton_python_backend_stub" in text else "worker"


def _cpu_seconds(root_pid: int) -> dict[str, float]:
    root = psutil.Process(root_pid)
    totals: dict[str, float] = collections.defaultdict(float)
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            totals[_role(process, root_pid)] += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return dict(totals)


def _thread_names(pid: int) -> dict[int, str]:
    """OS thread id -> Python thread name, from `py-spy dump` (empty without py-spy)."""
    if not PY_SPY.exists():
        return {}
    done = subprocess.run(
        [str(PY_SPY), "dump", "--pid", str(pid)], capture_output=True, text=True, check=False
    )
    return {int(tid): name for tid, name in re.findall(r'Thread (\d+) \(\w+\): "([^"]*)"', done.stdout)}


def _thread_cpu(pid: int) -> dict[int, float]:
    return {thread.id: thread.user_time + thread.system_time for thread in psutil.Process(pid).threads()}


def _load(tools: Tools, system: System, protocol: str, concurrency: int, seconds: float) -> float:
    """Run perf_analyzer for ~`seconds` (three time windows); returns the CPU seconds it used itself."""
    command = [
        str(tools.perf_analyzer),
        *("-m", repos.IDENTITY, "-u", system.url(protocol), "-i", protocol),
        *("--concurrency-range", f"{concurrency}:{concurrency}", "-p", str(int(seconds * 1000 / 3))),
        *("-s", "999", "-r", "3"),
    ]
    env = dict(os.environ, LD_LIBRARY_PATH=str(tools.perf_analyzer_libs))
    process = psutil.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    used = 0.0
    while process.poll() is None:
        try:
            times = process.cpu_times()
            used = times.user + times.system
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    return used


def measure_cost(
    tools: Tools, systems: dict[str, System], protocol: str, concurrency: int, seconds: float
) -> str:
    """One row per system: requests/s and CPU us per request of each process role and of the client."""
    rows, thread_rows = [], []
    for name, system in systems.items():
        before_cpu, (before_count, before_runs) = _cpu_seconds(system.pid), _counts(system)
        before_threads = _thread_cpu(system.pid)
        started = time.monotonic()
        client_cpu = _load(tools, system, protocol, concurrency, seconds)
        elapsed = time.monotonic() - started
        after_cpu, (after_count, after_runs) = _cpu_seconds(system.pid), _counts(system)
        requests = after_count - before_count
        threads = {
            tid: (used - before_threads.get(tid, 0.0)) * 1e6 / requests
            for tid, used in _thread_cpu(system.pid).items()
        }
        names = _thread_names(system.pid) if name != TRITON else {}
        busy = sorted(threads.items(), key=lambda item: -item[1])[:4]
        thread_rows.append(
            f"  {name} main-process threads, CPU us/req: "
            + ", ".join(f"{names.get(tid, tid)} {cost:.0f}" for tid, cost in busy)
        )
        per_role = {
            role: (after_cpu[role] - before_cpu.get(role, 0.0)) * 1e6 / requests for role in after_cpu
        }
        roles = ", ".join(f"{role} {cost:.0f}" for role, cost in sorted(per_role.items()))
        rows.append(
            f"| {name} | {requests / elapsed:.0f} | {sum(per_role.values()):.0f} | {roles} | "
            f"{requests / max(after_runs - before_runs, 1):.1f} | {client_cpu * 1e6 / requests:.0f} | "
            f"{os.getloadavg()[0]:.1f} |"
        )
    return "\n".join(rows) + "\n" + "\n".join(thread_rows)


def _top(counter: collections.Counter[str], total: int, limit: int) -> list[str]:
    return [f"  {count * 100 / total:5.1f}%  {frame}" for frame, count in counter.most_common(limit)]


# Native stacks (--native) include blocked threads; these leaves or frames mean "waiting", not CPU.
WAIT_LEAVES = {
    "epoll_wait",
    "epoll_pwait",
    "poll",
    "select",
    "clock_nanosleep",
    "nanosleep",
    "recvmsg",
    "accept4",
}
WAIT_FRAMES = ("PyThread_acquire_lock_timed", "time_sleep", "pthread_cond_wait", "pthread_cond_timedwait")


def _waiting(frames: list[str]) -> bool:
    leaf = frames[-1].split(" (", 1)[0]
    return leaf in WAIT_LEAVES or any(frame.startswith(WAIT_FRAMES) for frame in frames[-6:])


ENTRY_MODULES = {"server/app.py", "server/__main__.py"}  # below every main-thread stack: not a cost


def _module_of(frames: list[str]) -> str:
    """The leaf-most frame of our own code (`server/...`): what the sample was doing on our behalf.

    Library frames below it (asyncio, numpy, protobuf) count for the server module that called them;
    a stack without any server frame is the event loop's or a library thread's own C work."""
    for frame in reversed(frames):
        found = re.search(r"\((server/[^:]+):\d+\)", frame)
        if found and found.group(1) not in ENTRY_MODULES:
            return found.group(1)
    leaf = re.search(r"\(([^:()]+)(?::\d+)?\)$", frames[-1])
    return f"(no server frame; leaf in {leaf.group(1) if leaf else frames[-1]})"


def summarize(raw: Path, limit: int = 20) -> str:
    """Per process: samples by thread, by server module, and the top self/inclusive frames (py-spy raw)."""
    tables: dict[str, dict[str, collections.Counter[str]]] = collections.defaultdict(
        lambda: collections.defaultdict(collections.Counter)
    )
    totals: collections.Counter[str] = collections.Counter()
    waiting = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        # With --subprocesses a worker's stacks hang below its parent's "process" frame: the last one owns it.
        owner = max(index for index, frame in enumerate(frames) if frame.startswith("process "))
        process, count = frames[owner][:90], int(count_text)
        frames = frames[owner + 1 :] or ["(no Python frame)"]
        if _waiting(frames):
            waiting += count
            continue
        totals[process] += count
        table = tables[process]
        thread = frames[0] if frames[0].startswith("thread ") else "(thread unknown)"
        table["thread"][thread] += count
        table["module"][_module_of(frames)] += count
        table["self"][frames[-1]] += count
        for frame in set(frames):
            table["inclusive"][frame] += count
    lines = [f"samples judged waiting (native stacks) and dropped: {waiting}", ""]
    for process, total in totals.most_common():
        lines.append(f"## {process}: {total} samples")
        for kind in ("thread", "module", "self", "inclusive"):
            lines += [f"by {kind}:", *_top(tables[process][kind], total, limit)]
        lines.append("")
    return "\n".join(lines)


def record_profile(
    tools: Tools, system: System, protocol: str, concurrency: int, seconds: float, *, native: bool, gil: bool
) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    raw = OUT / f"profile-{protocol}-c{concurrency}.txt"
    command = [str(PY_SPY), "record", "--pid", str(system.pid), "--subprocesses", "--format", "raw"]
    command += ["--rate", "250", "--duration", str(int(seconds)), "-o", str(raw), "--threads"]
    if native:
        command.append("--native")
    if gil:
        command.append("--gil")  # only threads holding the GIL: Python CPU, no idle C threads
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # let py-spy attach before the load starts
    _load(tools, system, protocol, concurrency, seconds + 2)
    _, errors = spy.communicate(timeout=60)
    if spy.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {errors[-2000:]}")
    summary = raw.with_suffix(".md")
    mode = " ".join(flag for flag, on in (("--native", native), ("--gil", gil)) if on) or "default"
    title = f"# py-spy ({mode}): ours, identity, {protocol} c={concurrency}"
    summary.write_text(f"{title}\n\n{summarize(raw)}\n")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2, help="cost measurements per system")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C/C++ frames too)")
    parser.add_argument("--gil", action="store_true", help="py-spy --gil (only samples holding the GIL)")
    parser.add_argument("--dims", default="16", help="identity tensor dims, e.g. 3,224,224 for P3's image")
    parser.add_argument("--floor", action="store_true", help="also measure minimal gRPC servers (floor.py)")
    parser.add_argument("--working-tree", action="store_true", help="profile the working tree, not HEAD")
    parser.add_argument("--no-profile", action="store_true", help="only the CPU-per-request part")
    parser.add_argument(
        "--ours-instance-mode",
        choices=INSTANCE_MODES,
        default=PROCESS,
        help="TRITONCTL_INSTANCE_MODE of our copy of the repository (Triton's stays unchanged)",
    )
    args = parser.parse_args()
    if not args.no_profile and not shutil.which(str(PY_SPY)):
        raise SystemExit(f"py-spy is missing: {Path(sys.executable).parent / 'pip'} install py-spy")
    tools = ensure_tools(install=False)
    with tempfile.TemporaryDirectory(prefix="peers-profile-") as folder:
        repo = Path(folder) / "repo"
        repos.write_identity(repo, dims=[int(dim) for dim in args.dims.split(",")])
        if not args.working_tree:
            head = snapshot_head(Path(folder) / "code")
            tools = dataclasses.replace(tools, ours_code=Path(folder) / "code")
            print(f"our server: snapshot of HEAD {head}")
        ours = start_ours(repos.ours_copy(repo, args.ours_instance_mode), tools)
        triton = start_triton(repo, tools)
        systems = {OURS: ours, TRITON: triton}
        if args.floor:
            if args.protocol != "grpc" or args.dims != "16":
                raise SystemExit("--floor serves gRPC FP32[16] only: use it with --protocol grpc --dims 16")
            for engine in ENGINES:
                floor = start_floor(engine)
                systems[floor.name] = floor
        try:
            print(
                f"\n{args.protocol} c={args.concurrency}, {args.seconds:g} s per run, CPU us per request:\n"
            )
            print(
                "| system | infer/s | server CPU us/req | by process | avg batch | client CPU us/req | load |"
            )
            print("|---|---|---|---|---|---|---|")
            for _ in range(args.rounds):
                print(measure_cost(tools, systems, args.protocol, args.concurrency, args.seconds), flush=True)
            if not args.no_profile:
                summary = record_profile(
                    tools,
                    ours,
                    args.protocol,
                    args.concurrency,
                    args.seconds,
                    native=args.native,
                    gil=args.gil,
                )
                print(f"\nprofile: {summary.relative_to(ROOT)} (raw stacks beside it)")
        finally:
            for system in systems.values():
                system.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
