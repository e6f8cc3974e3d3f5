"""`tritonctl tune` against real servers: finds a faster config for an ONNX MLP, writes it, reports,
and leaves the original config loaded, also when stopped by SIGTERM; refuses clearly without
explicit model control."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import InferenceServerClient, InferInput, model_config_pb2
from typer.testing import CliRunner

from tests.integration.perf.targets import Target
from tests.support.server import PROJECT_ROOT
from tritonctl.cli.main import app
from tritonctl.perf.control import GrpcControlClient

pytestmark = pytest.mark.integration

MODEL = "mlp_tune"  # starts with a 200 ms batching delay (see targets.py)
SLOW_DELAY_US = 200_000
QUICK = ["--concurrency-range", "4", "-p", "300", "--warmup-ms", "200", "-r", "3", "-s", "50"]


def key_fields(config: model_config_pb2.ModelConfig) -> tuple[object, ...]:
    """What tune changes: anything else differing after a reload is the server's own bookkeeping."""
    delay = (
        config.dynamic_batching.max_queue_delay_microseconds if config.HasField("dynamic_batching") else None
    )
    return config.max_batch_size, delay, [group.count for group in config.instance_group]


@pytest.fixture
def control(target: Target) -> Iterator[GrpcControlClient]:
    client = GrpcControlClient(target.grpc_url)
    try:
        yield client
    finally:
        client.close()


def warm_up(url: str) -> None:
    """First inferences of a fresh ONNX session are slow; keep them out of the baseline."""
    client = InferenceServerClient(url)
    tensor = InferInput("INPUT0", [8, 256], "FP32")
    tensor.set_data_from_numpy(np.ones((8, 256), dtype=np.float32))
    for _ in range(10):
        client.infer(MODEL, [tensor])
    client.close()


def test_tune_finds_a_faster_config_and_restores_the_original(
    target: Target, control: GrpcControlClient, tmp_path: Path
) -> None:
    original = control.model_config(MODEL)
    assert original is not None and key_fields(original) == (8, SLOW_DELAY_US, [1])
    warm_up(target.grpc_url)
    best, report = tmp_path / "best.pbtxt", tmp_path / "report"
    args = ["tune", MODEL, "-u", target.grpc_url, "--max-queue-delay-us", "0,500", *QUICK]
    result = CliRunner().invoke(app, [*args, "--write-config", str(best), "--report", str(report)])
    assert result.exit_code == 0, result.output

    document = json.loads((report / "tune.json").read_text())
    winner = document["ranked"][0]
    assert document["winner"] == winner["candidate"] in ("delay=0us", "delay=500us"), result.output
    # The start is capped near 20 infer/s by its batching delay; either candidate is far above.
    assert winner["level"]["throughput"] > 2 * document["baseline"]["level"]["throughput"], result.output
    written = text_format.Parse(best.read_text(), model_config_pb2.ModelConfig())
    assert written.dynamic_batching.max_queue_delay_microseconds in (0, 500)
    assert {path.name for path in report.iterdir()} == {
        "tune.json",
        "tune.md",
        "throughput.png",
        "latency_vs_throughput.png",
    }
    assert "Original config restored: yes" in (report / "tune.md").read_text()

    restored = control.model_config(MODEL)
    assert restored is not None and key_fields(restored) == key_fields(original)
    warm_up(target.grpc_url)  # and it serves


def test_sigterm_during_tune_restores_the_original(target: Target, control: GrpcControlClient) -> None:
    if target.kind != "ours":
        pytest.skip("the restore path is the client's: one server suffices (keeps the suite short)")
    original = control.model_config(MODEL)
    assert original is not None
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    args = [
        "--max-queue-delay-us",
        "1000,2000",
        "--concurrency-range",
        "4",
        "-p",
        "500",
        "-r",
        "3",
        "-s",
        "100",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "tritonctl", "tune", MODEL, "-u", target.grpc_url, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            loaded = control.model_config(MODEL)
            if loaded is not None and key_fields(loaded) != key_fields(original):
                break  # a candidate is loaded: now interrupt
            time.sleep(0.1)
        else:
            pytest.fail(f"tune never loaded a candidate: {process.communicate(timeout=30)}")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert b"original config was reloaded" in stderr
    restored = control.model_config(MODEL)
    assert restored is not None and key_fields(restored) == key_fields(original)
