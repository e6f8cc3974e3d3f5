"""`make gpu-check`: the GPU paths end to end, on a machine with a GPU, in a few minutes.

    .venv/bin/python -m benchmarks.gpu_check [--keep]

Serves, in one server with `--model-memory-budget=gpu0=90%`: an ONNX model on the CUDA execution
provider, a TorchScript model on CUDA, a TensorRT engine built here from an ONNX model, and a model
with two KIND_GPU groups (on GPUs 0 and 1, or twice on GPU 0 with one GPU), and an ONNX model whose
KIND_GPU group lists no GPUs (with a GPU budget it must land on exactly one GPU: the one with the
most room). Each gets one inference checked against numpy; then CUDA shared memory: a CPU add_sub
model whose inputs and outputs sit in CUDA regions made by tritonclient.utils.cuda_shared_memory,
registered over HTTP and over gRPC (needs cuda-python: `pip install 'tritonctl[cuda]'`); then the GPU metrics
(nv_gpu_memory_used_bytes...) and the per-device memory accounting are read: every GPU model has
memory on its own device (tritonctl_model_memory_bytes{device="gpuN"}, statistics memory_usage of
type GPU), at least its files, and the models' sum on gpu0 is the budget's used memory there.
Prints one line per check and a summary; exit 1 if any check failed. (Per-device eviction is
covered by tests/unit/core/test_gpu_budget.py: a model's GPU footprint here depends on the CUDA
context its host pays first, so a budget that fits one model but not two cannot be set blind.)

Without a GPU (NVML finds none) it says so and exits 0, so `make test` never needs one. A check
whose framework is missing here (onnxruntime-gpu, torch with CUDA, tensorrt, cuda-python) is SKIP,
not FAIL.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.models import (  # noqa: E402
    write_onnx_model,
    write_python_model,
    write_torchscript_model,
)
from tests.support.server import start_server  # noqa: E402

Check = tuple[str, str, str]  # name, PASS|FAIL|SKIP, detail
CUDA_SHM = "cuda_shm"  # the model, and the prefix of its checks


def gpu_count() -> tuple[int, str]:
    try:
        import pynvml

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetCount()), ""
    except Exception as exc:  # no driver, no library, no device
        return 0, f"{type(exc).__name__}: {exc}"


def gpu_group(config_path: Path, gpus: list[list[int]]) -> None:
    """Replace the config's instance_group with one KIND_GPU group per entry of `gpus`."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    del config.instance_group[:]
    for group in gpus:
        config.instance_group.add(count=1, kind=model_config_pb2.ModelInstanceGroup.KIND_GPU, gpus=group)
    config_path.write_text(text_format.MessageToString(config))


def build_tensorrt_engine(onnx_path: Path, plan_path: Path) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {parser.get_error(0)}")
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        shape = list(tensor.shape)
        low = [1 if d < 0 else d for d in shape]
        high = [8 if d < 0 else d for d in shape]
        profile.set_shape(tensor.name, low, high, high)
    config = builder.create_builder_config()
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT could not build the engine")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))


def prepare(repo: Path, gpus: int) -> dict[str, str]:
    """Write the models; returns name -> reason for those that cannot run here (SKIP)."""
    skipped: dict[str, str] = {}
    write_onnx_model(repo, "onnx_cuda", "add_sub", dims=[4])
    gpu_group(repo / "onnx_cuda" / "config.pbtxt", [[0]])
    try:
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            skipped["onnx_cuda"] = "onnxruntime has no CUDA provider (pip install onnxruntime-gpu)"
    except ImportError:
        skipped["onnx_cuda"] = "onnxruntime is not installed"
    try:
        import torch

        if torch.cuda.is_available():
            write_torchscript_model(repo, "torch_cuda", "add_sub", dims=[4])
            gpu_group(repo / "torch_cuda" / "config.pbtxt", [[0]])
        else:
            skipped["torch_cuda"] = "torch sees no CUDA device"
    except ImportError:
        skipped["torch_cuda"] = "torch is not installed"
    try:
        source = write_onnx_model(Path(tempfile.mkdtemp()), "source", "add_sub", dims=[4])
        folder = repo / "trt_engine"
        folder.mkdir()
        build_tensorrt_engine(source / "1" / "model.onnx", folder / "1" / "model.plan")
        config = (source / "config.pbtxt").read_text().replace('name: "source"', 'name: "trt_engine"')
        lines = [line for line in config.splitlines() if not line.startswith(("platform", "backend"))]
        (folder / "config.pbtxt").write_text('platform: "tensorrt_plan"\n' + "\n".join(lines) + "\n")
        gpu_group(folder / "config.pbtxt", [[0]])
    except Exception as exc:
        shutil.rmtree(repo / "trt_engine", ignore_errors=True)
        skipped["trt_engine"] = f"no engine built ({type(exc).__name__}: {exc})"
    write_onnx_model(repo, "two_groups", "add_sub", dims=[4])
    gpu_group(repo / "two_groups" / "config.pbtxt", [[0], [1]] if gpus > 1 else [[0], [0]])
    write_onnx_model(repo, "placed_auto", "add_sub", dims=[4])
    gpu_group(repo / "placed_auto" / "config.pbtxt", [[]])  # KIND_GPU, no gpus: placed by room
    if "onnx_cuda" in skipped:
        skipped["two_groups"] = skipped["placed_auto"] = skipped["onnx_cuda"]
    prepare_cuda_shm(repo, skipped)
    for name in skipped:
        shutil.rmtree(repo / name, ignore_errors=True)
    return skipped


def cuda_shm_unavailable() -> str:
    """Why CUDA shared memory cannot be checked here, "" when it can (the server's own probe)."""
    from server.vocabulary.cuda_regions import probe_cuda

    found = probe_cuda()
    return found if isinstance(found, str) else ""


def prepare_cuda_shm(repo: Path, skipped: dict[str, str]) -> None:
    """The CPU add_sub model the CUDA shared-memory checks feed, or their reason to skip."""
    reason = cuda_shm_unavailable()
    if reason:
        skipped[CUDA_SHM] = reason
    else:
        write_python_model(repo, CUDA_SHM, "add_sub", dims=[4])


def check_add_sub(got: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """`got`: OUTPUT0 then OUTPUT1 as read back from the output region."""
    expected = np.concatenate([(a + b).reshape(-1), (a - b).reshape(-1)])
    if got.shape != expected.shape or not np.array_equal(got, expected):
        raise AssertionError(f"the output region holds {got.tolist()}, expected {expected.tolist()}")


def cuda_shm_round_trip(url: str, protocol: str) -> str:
    """Register two CUDA regions over `protocol` ("http" or "grpc"), run add_sub with both inputs in
    one and both outputs in the other, read the answer back from the device and unregister."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    import tritonclient.utils.cuda_shared_memory as cudashm

    module: Any = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(url)
    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    b = np.full((1, 4), 10, np.float32)
    size = a.nbytes
    names = (f"gpu_check_in_{protocol}", f"gpu_check_out_{protocol}")
    regions = [cudashm.create_shared_memory_region(name, 2 * size, 0) for name in names]
    try:
        cudashm.set_shared_memory_region(regions[0], [a, b])
        for name, region in zip(names, regions, strict=True):
            client.register_cuda_shared_memory(name, cudashm.get_raw_handle(region), 0, 2 * size)
        status = client.get_cuda_shared_memory_status()
        listed = sorted(r["name"] for r in status) if protocol == "http" else sorted(status.regions)
        if listed != sorted(names):
            raise AssertionError(f"status lists {listed}")
        inputs, outputs = [], []
        for index, name in enumerate(("INPUT0", "INPUT1")):
            tensor = module.InferInput(name, [1, 4], "FP32")
            tensor.set_shared_memory(names[0], size, offset=index * size)
            inputs.append(tensor)
        for index, name in enumerate(("OUTPUT0", "OUTPUT1")):
            output = module.InferRequestedOutput(name)
            output.set_shared_memory(names[1], size, offset=index * size)
            outputs.append(output)
        client.infer(CUDA_SHM, inputs, outputs=outputs)
        check_add_sub(cudashm.get_contents_as_numpy(regions[1], np.float32, [2 * a.size]), a, b)
    finally:
        with contextlib.suppress(Exception):
            client.unregister_cuda_shared_memory()
        for region in regions:
            cudashm.destroy_shared_memory_region(region)
    return f"add_sub in and out of CUDA regions on GPU 0, registered over {protocol}: answer checked"


def infer_add_sub(http_url: str, model: str) -> str:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url, network_timeout=120)
    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    b = np.ones((1, 4), np.float32)
    names = [tensor["name"] for tensor in client.get_model_metadata(model)["inputs"]]
    inputs = []
    for name, data in zip(names, (a, b), strict=True):
        tensor = httpclient.InferInput(name, [1, 4], "FP32")
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    result = client.infer(model, inputs)
    got = result.as_numpy(result.get_response()["outputs"][0]["name"])
    if got is None or (not np.allclose(got, a + b) and not np.allclose(got, a - b)):
        raise AssertionError(f"{model} answered {got}")
    return "answer checked"


def run_checks(repo: Path, skipped: dict[str, str]) -> list[Check]:
    import tritonclient.http as httpclient

    checks: list[Check] = [(name, "SKIP", why) for name, why in skipped.items()]
    flags = ("--model-memory-budget=gpu0=90%", "--exit-on-error=false", "--allow-client-shm=true")
    with start_server(repo, *flags, timeout=240) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        for name in ("onnx_cuda", "torch_cuda", "trt_engine", "two_groups", "placed_auto"):
            if name in skipped:
                continue
            checks.append(attempt(name, lambda name=name: infer_add_sub(server.http_url, name)))  # type: ignore[misc]
        if CUDA_SHM not in skipped:
            for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
                check = functools.partial(cuda_shm_round_trip, url, protocol)
                checks.append(attempt(f"{CUDA_SHM} {protocol}", check))
        metrics = urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=30).read().decode()

        def gpu_metrics() -> str:
            lines = [line for line in metrics.splitlines() if line.startswith("nv_gpu_memory_used_bytes")]
            if not lines:
                raise AssertionError("no nv_gpu_memory_used_bytes sample")
            return f"{len(lines)} GPU(s) reported"

        def accounting() -> str:
            lines = [
                line
                for line in metrics.splitlines()
                if line.startswith("tritonctl_model_memory_bytes") and 'device="gpu' in line
            ]
            stats = client.get_inference_statistics()["model_stats"]
            gpu_usage = [u for m in stats for u in m.get("memory_usage", []) if u["type"] == "GPU"]
            if not lines or not gpu_usage:
                raise AssertionError(f"no per-GPU memory accounted (metrics {len(lines)}, stats {gpu_usage})")
            return f"{len(lines)} version(s) hold GPU memory, statistics agree ({len(gpu_usage)})"

        checks.append(attempt("gpu metrics", gpu_metrics))
        checks.append(attempt("gpu memory accounting", accounting))
        model_memory = memory_samples(metrics, "tritonctl_model_memory_bytes")
        if "placed_auto" not in skipped:
            checks.append(attempt("placement by room", lambda: placed_on_one_gpu(model_memory)))
        stats = client.get_inference_statistics()["model_stats"]
        used = memory_samples(metrics, "tritonctl_model_memory_used_bytes")
        checks.append(attempt("per-device accounting", lambda: per_device(repo, model_memory, used, stats)))
    return checks


_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)$")


def memory_samples(metrics: str, family: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of one metric family from the Prometheus text."""
    found = []
    for line in metrics.splitlines():
        match = _SAMPLE.match(line.strip())
        if match and match.group(1) == family:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            found.append((labels, float(match.group(3))))
    return found


def placed_on_one_gpu(model_memory: list[tuple[dict[str, str], float]]) -> str:
    """With a GPU budget, a KIND_GPU group without gpus is on exactly one GPU."""
    devices = sorted(
        labels["device"]
        for labels, value in model_memory
        if labels.get("model") == "placed_auto" and labels.get("device", "").startswith("gpu") and value > 0
    )
    if len(devices) != 1:
        raise AssertionError(f"placed_auto holds memory on {devices or 'no GPU'}, expected exactly one GPU")
    return f"placed on {devices[0]} (count 1, no gpus listed, --model-memory-budget names gpu0)"


def per_device(
    repo: Path,
    model_memory: list[tuple[dict[str, str], float]],
    used: list[tuple[dict[str, str], float]],
    stats: list[dict[str, object]],
) -> str:
    """Each GPU model's memory is on its own device and at least its files; statistics agree with
    the metric; the models' sum on gpu0 is the budget's used memory there."""
    expected = {"onnx_cuda": "gpu0", "torch_cuda": "gpu0", "trt_engine": "gpu0"}
    by_model: dict[str, dict[str, float]] = {}
    for labels, value in model_memory:
        by_model.setdefault(labels.get("model", ""), {})[labels.get("device", "")] = value
    notes = []
    for model, device in expected.items():
        if model not in by_model:
            continue  # skipped here
        held = by_model[model].get(device, 0.0)
        files = sum(path.stat().st_size for path in (repo / model / "1").rglob("*") if path.is_file())
        if held < files:
            raise AssertionError(f"{model} holds {held:.0f} B on {device}, less than its {files} B of files")
        others = [d for d, v in by_model[model].items() if d.startswith("gpu") and d != device and v > 0]
        if others:
            raise AssertionError(f"{model} (gpus [0]) holds memory on {others}")
        delta = "NVML delta" if held > files else "files floor (NVML read no delta for the host pid)"
        notes.append(f"{model} {device} {held / (1 << 20):.1f} MiB ({delta})")
    for entry in stats:
        name = str(entry.get("name", ""))
        usage = entry.get("memory_usage") or []
        assert isinstance(usage, list)
        for item in usage:
            if item.get("type") == "GPU":
                device = f"gpu{int(item.get('id', 0))}"
                metric = by_model.get(name, {}).get(device)
                if metric is None or int(metric) != int(item.get("byte_size", 0)):
                    raise AssertionError(f"{name} {device}: statistics {item} vs metric {metric}")
    total = sum(value for labels, value in model_memory if labels.get("device") == "gpu0")
    budget_used = next((value for labels, value in used if labels.get("device") == "gpu0"), None)
    if budget_used is None or int(budget_used) != int(total):
        raise AssertionError(f"models hold {total:.0f} B on gpu0, the budget counts {budget_used}")
    return "; ".join(notes) + f"; gpu0 budget used {total / (1 << 20):.1f} MiB = the models' sum"


def attempt(name: str, check: Callable[[], str]) -> Check:
    try:
        return (name, "PASS", check())
    except Exception as exc:
        return (name, "FAIL", f"{type(exc).__name__}: {str(exc)[:300]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", action="store_true", help="keep the repository it writes")
    args = parser.parse_args(argv)
    count, why = gpu_count()
    if count == 0:
        print(f"gpu-check: no GPU on this machine ({why or 'NVML sees 0 devices'}): nothing to check.")
        print(f"SKIP  {CUDA_SHM}  {cuda_shm_unavailable() or 'no GPU'}")
        return 0
    started = time.monotonic()
    repo = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        skipped = prepare(repo, count)
        checks = run_checks(repo, skipped)
    finally:
        if not args.keep:
            shutil.rmtree(repo, ignore_errors=True)
    width = max(len(name) for name, _, _ in checks)
    for name, verdict, detail in checks:
        print(f"{verdict:4}  {name:{width}}  {detail}")
    counts = {v: sum(1 for _, verdict, _ in checks if verdict == v) for v in ("PASS", "FAIL", "SKIP")}
    print(
        f"gpu-check: {count} GPU(s), {counts['PASS']} passed, {counts['FAIL']} failed, "
        f"{counts['SKIP']} skipped in {time.monotonic() - started:.0f} s"
    )
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
