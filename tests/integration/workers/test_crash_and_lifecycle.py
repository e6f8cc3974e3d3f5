"""Worker death, restarts, load failures and clean exits, with real worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from server.core.placement import place_instances
from server.errors import LoadError, ModelNotReady, WorkerCrashed
from server.repository import load_model_config
from server.workers.backend_loading import InstanceLaunch
from server.workers.host import Host, HostedProcess, close_hosts, host_for
from server.workers.settings import WorkerOptions
from server.workers.supervisor import InstanceSupervisor, start_worker
from tests.integration.workers.pool import Workers, output, request
from tests.support.models import INIT_FAILURE_MESSAGE, write_python_model, write_python_source

pytestmark = pytest.mark.integration

CRASH = -np.ones((1, 2), np.float32)
OK = np.ones((1, 2), np.float32)


@pytest.mark.parametrize(
    ("how", "said"), [("exit", "exited with code 3"), ("segfault", "SIGSEGV"), ("kill", "SIGKILL")]
)
def test_crash_in_flight_fails_every_request_promptly(workers: Workers, how: str, said: str) -> None:
    channel = workers.start(write_python_model(workers.root, f"crash_{how}", "crash", how=how))

    async def crash_with_a_second_batch_queued() -> tuple[object, ...]:
        first = asyncio.ensure_future(channel.submit([request("m", INPUT0=CRASH), request("m", INPUT0=OK)]))
        second = asyncio.ensure_future(channel.submit([request("m", INPUT0=OK)]))
        return await asyncio.gather(first, second, return_exceptions=True)

    started = time.monotonic()
    outcomes = workers.run(crash_with_a_second_batch_queued(), timeout=20)
    assert time.monotonic() - started < 5
    for outcome in outcomes:
        assert isinstance(outcome, WorkerCrashed), outcome
        assert said in outcome.message and "instance 'crash_" in outcome.message
    assert not channel.alive
    with pytest.raises(WorkerCrashed, match="is not running"):
        workers.run(channel.submit([request("m", INPUT0=OK)]))

    async def exit_reason() -> str:
        return await channel.exited

    assert said in workers.run(exit_reason()) and channel.process.returncode is not None


def test_initialize_failure_is_a_load_error_with_the_models_message(workers: Workers) -> None:
    with pytest.raises(
        LoadError, match=f"instance 'init_fails_0_0' failed to load: RuntimeError: {INIT_FAILURE_MESSAGE}"
    ):
        workers.start(write_python_model(workers.root, "init_fails", "init_fails"))


def test_missing_model_file_and_unknown_backend_are_load_errors(workers: Workers) -> None:
    model_dir = write_python_model(workers.root, "no_file", "identity")
    (model_dir / "1" / "model.py").unlink()
    with pytest.raises(LoadError, match=r"python model file '.*no_file/1/model.py' does not exist"):
        workers.start(model_dir)
    config = load_model_config(model_dir)
    spec = place_instances(config, [])[0]
    with pytest.raises(LoadError, match="names backend 'cobol', which tritonctl lacks"):
        workers.run(
            start_worker(InstanceLaunch("no_file", 1, model_dir, config, spec, "cobol"), WorkerOptions())
        )


def test_worker_dying_while_loading_is_a_load_error(workers: Workers) -> None:
    model_dir = write_python_model(workers.root, "dies_loading", "identity")
    write_python_source(model_dir, "import os\nos._exit(9)\n")
    with pytest.raises(LoadError, match="exited with code 9 while loading"):
        workers.start(model_dir)


def test_a_forked_worker_whose_load_is_abandoned_is_reaped_before_the_start_ends(
    workers: Workers, tmp_path: Path
) -> None:
    # A load that times out or is cancelled kills its worker (supervisor._stop) and waits, on the
    # event loop, for its template to report it reaped. Cancelled here once the worker is inside
    # its model's import: a load timeout would race a loaded machine's slow fork.
    marker = tmp_path / "pid"
    model_dir = write_python_model(workers.root, "hangs_loading", "identity")
    source = f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n"
    write_python_source(model_dir, source)
    config = load_model_config(model_dir)
    spec = place_instances(config, [])[0]

    async def abandon() -> int:
        starting = asyncio.ensure_future(
            start_worker(InstanceLaunch("hangs_loading", 1, model_dir, config, spec), WorkerOptions())
        )
        while not (marker.exists() and marker.read_text()):
            await asyncio.sleep(0.01)
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        return int(marker.read_text())

    assert not psutil.pid_exists(workers.run(abandon(), timeout=60))


def test_tensorrt_model_without_tensorrt_says_so(workers: Workers) -> None:
    model_dir = write_python_model(workers.root, "plan", "identity")
    config = load_model_config(model_dir)
    config.backend, config.platform = "", "tensorrt_plan"
    spec = place_instances(config, [])[0]
    with pytest.raises(LoadError, match=r"the 'tensorrt' Python package is not installed|run only on a GPU"):
        workers.run(
            start_worker(InstanceLaunch("plan", 1, model_dir, config, spec, "tensorrt"), WorkerOptions())
        )


def test_supervisor_restarts_a_crashed_instance_and_reports_each_state(workers: Workers) -> None:
    model_dir = write_python_model(workers.root, "crash_supervised", "crash")
    config = load_model_config(model_dir)
    spec = place_instances(config, [])[0]
    states: list[tuple[str, str]] = []

    async def scenario() -> None:
        supervisor = await InstanceSupervisor.launch(
            InstanceLaunch("crash_supervised", 1, model_dir, config, spec),
            WorkerOptions(),
            lambda _name, state, reason: states.append((state, reason)),
            backoff_initial_s=0.05,
        )
        try:
            first_pid = supervisor.channel.pid  # type: ignore[union-attr]
            with pytest.raises(WorkerCrashed):
                await supervisor.submit([request("m", INPUT0=CRASH)])
            await asyncio.sleep(0)
            with pytest.raises(ModelNotReady, match="restarting"):
                await supervisor.submit([request("m", INPUT0=OK)])
            for _ in range(300):
                if supervisor.alive:
                    break
                await asyncio.sleep(0.05)
            assert supervisor.alive and supervisor.restarts == 1
            assert supervisor.channel is not None and supervisor.channel.pid != first_pid
            outcome = await supervisor.submit([request("m", INPUT0=OK)])
            np.testing.assert_array_equal(output(outcome.results[0], "OUTPUT0"), OK)
        finally:
            await supervisor.close()

    workers.run(scenario())
    assert [state for state, _ in states] == ["READY", "RESTARTING", "READY", "STOPPED"]
    assert "exited with code 3" in states[1][1]


def test_supervisor_gives_up_after_rapid_crashes_and_keeps_the_reason(workers: Workers) -> None:
    model_dir = write_python_model(workers.root, "crash_forever", "crash")
    config = load_model_config(model_dir)
    spec = place_instances(config, [])[0]
    states: list[str] = []

    async def scenario() -> tuple[str, str]:
        supervisor = await InstanceSupervisor.launch(
            InstanceLaunch("crash_forever", 1, model_dir, config, spec),
            WorkerOptions(),
            lambda _name, state, _reason: states.append(state),
            backoff_initial_s=0.01,
            max_rapid_crashes=2,
        )
        for _ in range(2):
            while not supervisor.alive and supervisor.state != "FAILED":
                await asyncio.sleep(0.05)
            if supervisor.state == "FAILED":
                break
            with pytest.raises(WorkerCrashed):
                await supervisor.submit([request("m", INPUT0=CRASH)])
            await asyncio.sleep(0.05)
        while supervisor.state != "FAILED":
            await asyncio.sleep(0.05)
        with pytest.raises(ModelNotReady, match="instance 'crash_forever_0_0' is failed: gave up"):
            await supervisor.submit([request("m", INPUT0=OK)])
        await supervisor.close()
        return supervisor.state, supervisor.reason

    state, reason = workers.run(scenario())
    assert state == "STOPPED"
    assert "gave up after 2 crashes within 60 s; last: " in reason and "exited with code 3" in reason
    assert states == ["READY", "RESTARTING", "READY", "FAILED", "STOPPED"]


FINALIZE_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

MARKER = {marker!r}


class TritonPythonModel:
    def execute(self, requests):
        out = pb_utils.Tensor("OUTPUT0", np.zeros(1, np.float32))
        return [pb_utils.InferenceResponse([out]) for _ in requests]

    def finalize(self):
        with open(MARKER, "w") as f:
            f.write("finalized")
"""


def test_close_runs_finalize_and_the_process_exits_cleanly(workers: Workers, tmp_path: Path) -> None:
    marker = tmp_path / "finalized.txt"
    model_dir = write_python_model(workers.root, "finalizes", "identity")
    write_python_source(model_dir, FINALIZE_MODEL.format(marker=str(marker)))
    channel = workers.start(model_dir)
    workers.run(channel.close())
    assert marker.read_text() == "finalized"
    assert channel.process.returncode == 0 and not channel.alive
    workers.run(channel.close())  # idempotent


def test_kill_ends_a_busy_instance_that_is_closing(workers: Workers) -> None:
    # What shutdown does when its exit timeout runs out: close() waits for the busy batch,
    # kill() ends the worker at once; the batch fails and the supervisor does not restart it.
    model_dir = write_python_model(workers.root, "slow_killed", "slow", delay_ms=60_000)
    config = load_model_config(model_dir)
    spec = place_instances(config, [])[0]
    states: list[str] = []

    async def scenario() -> tuple[int, float]:
        supervisor = await InstanceSupervisor.launch(
            InstanceLaunch("slow_killed", 1, model_dir, config, spec),
            WorkerOptions(),  # forked from the template (the default)
            lambda _n, state, _r: states.append(state),
        )
        assert supervisor.channel is not None
        pid = supervisor.channel.pid
        busy = asyncio.ensure_future(supervisor.submit([request("m", INPUT0=OK)]))
        await asyncio.sleep(0.2)
        closing = asyncio.ensure_future(supervisor.close())
        await asyncio.sleep(0.2)
        assert not closing.done() and not busy.done()
        started = time.monotonic()
        supervisor.kill()
        with pytest.raises(WorkerCrashed, match="SIGKILL"):
            await busy
        await asyncio.wait_for(closing, 10)
        supervisor.kill()  # harmless once gone
        return pid, time.monotonic() - started

    pid, took = workers.run(scenario(), timeout=30)
    assert took < 5
    assert states == ["READY", "STOPPED"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def _pidfd_target(pidfd: int) -> int:
    """The pid a pidfd of ours refers to (/proc/self/fdinfo; -1 once that process is reaped)."""
    for line in Path(f"/proc/self/fdinfo/{pidfd}").read_text().splitlines():
        if line.startswith("Pid:"):
            return int(line.split()[1])
    raise AssertionError(f"fd {pidfd} is not a pidfd")


def test_a_killed_forked_worker_is_reported_ended_once_its_template_reaped_it(workers: Workers) -> None:
    # The kill used to report the exit at once (status -9) while the process still ran: on a
    # loaded machine its pid read 'running' after close() returned.
    channel = workers.start(write_python_model(workers.root, "slow_reaped", "slow", delay_ms=60_000))
    process = channel.process
    assert isinstance(process, HostedProcess) and process.host.fork
    pid = channel.pid
    assert pid != process.host.pid and psutil.Process(pid).ppid() == process.host.pid
    assert _pidfd_target(process._pidfd) == pid  # the template's pidfd of exactly this worker

    async def kill_while_busy() -> str:
        busy = asyncio.ensure_future(channel.submit([request("m", INPUT0=OK)]))
        await asyncio.sleep(0.2)
        channel.kill()
        assert process.poll() is None  # sent SIGKILL, not ended yet
        with pytest.raises(WorkerCrashed, match="SIGKILL"):
            await busy
        return await channel.exited

    assert "SIGKILL" in workers.run(kill_while_busy(), timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not psutil.pid_exists(pid)  # reaped by the template before it reported the exit
    assert process._pidfd == -1  # closed


def test_a_dead_templates_workers_are_killed_before_they_are_reported_ended(tmp_path: Path) -> None:
    # A worker outlives its template until it notices (worker.PARENT_POLL_S); reporting it ended
    # when the template died let its restart run beside it. Its own event loop: its own template.
    model_dir = write_python_model(tmp_path, "orphaned", "slow", delay_ms=60_000)
    config = load_model_config(model_dir)
    spec = place_instances(config, [])[0]

    def running(pid: int) -> bool:  # an orphan is reaped by init, not by us: a zombie is gone
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        return False

    async def scenario() -> str:
        try:
            launch = InstanceLaunch("orphaned", 1, model_dir, config, spec)
            channel = await start_worker(launch, WorkerOptions())
            process = channel.process
            assert isinstance(process, HostedProcess)
            os.kill(process.host.pid, signal.SIGKILL)
            while process.poll() is None:
                await asyncio.sleep(0.001)
            assert not running(channel.pid)  # the moment it reads ended
            return await channel.exited
        finally:
            close_hosts()

    loop = asyncio.new_event_loop()
    try:
        assert "SIGKILL" in loop.run_until_complete(asyncio.wait_for(scenario(), 30))
    finally:
        loop.close()


ORPHAN_SCRIPT = """
import asyncio, sys
from pathlib import Path
from server.core.placement import place_instances
from server.repository import load_model_config
from server.workers.backend_loading import InstanceLaunch
from server.workers.settings import WorkerOptions
from server.workers.supervisor import start_worker

async def main():
    model_dir = Path(sys.argv[1])
    config = load_model_config(model_dir)
    spec = place_instances(config, [])[0]
    channel = await start_worker(InstanceLaunch("m", 1, model_dir, config, spec), WorkerOptions())
    print(channel.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_worker_exits_when_the_main_process_is_killed(workers: Workers) -> None:
    model_dir = write_python_model(workers.root, "orphan", "slow", delay_ms=100)
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(ORPHAN_SCRIPT), str(model_dir)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},  # any cwd
    )
    try:
        assert parent.stdout is not None
        worker_pid = int(parent.stdout.readline())
        worker = psutil.Process(worker_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        worker.wait(timeout=10)  # raises TimeoutExpired if the orphan lingers
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


def test_hosts_of_an_event_loop_that_ended_without_close_hosts_are_closed_by_the_next() -> None:
    # A Host refers to its loop, so its weak key never went: its control socket waited for the
    # collector (a ResourceWarning at exit) and its process for the end of the interpreter.
    environment = dict(os.environ)

    async def template() -> Host:
        return host_for("python", None, lambda: environment, fork=True)

    ended = asyncio.new_event_loop()
    try:
        host = ended.run_until_complete(template())
    finally:
        ended.close()
    assert host.alive and host.process is not None

    async def next_loop() -> None:
        try:
            await template()
        finally:
            close_hosts()

    asyncio.run(next_loop())
    assert not host.alive
    assert host.process.wait(timeout=30) == 0  # the template ends on its control socket's EOF
