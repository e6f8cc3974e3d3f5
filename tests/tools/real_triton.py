"""Start the real Triton server (the one `nvidia-pytriton` bundles) on free ports, for tests and benchmarks.

Recipe: docs/PEERS.md. Install once with
    python3 -m venv .tools/triton && .tools/triton/bin/pip install nvidia-pytriton onnxruntime "numpy<2"
The bundled `tritonserver` 2.51 has only the python backend; serve ONNX through a python-backend
`model.py` (see `onnx_python_wrapper`). Tests call `find_real_triton()` and skip when it returns None.

    with start_real_triton(repo, model_control_mode="explicit", load_models=["*"]) as triton:
        httpclient.InferenceServerClient(triton.http_url)

Run directly to serve a repository by hand: `python tests/tools/real_triton.py REPO [--explicit]`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = PROJECT_ROOT / ".tools" / "triton"


@dataclass(frozen=True)
class RealTritonInstall:
    """Where the pieces of a pytriton-bundled Triton live."""

    venv: Path
    server_binary: Path
    backends_source: Path  # pytriton/tritonserver/backends (libtriton_python.so, utils)
    python_stub: Path  # the stub built for this Python minor version
    libs: Path  # nvidia_pytriton.libs (the server's shared libraries)


@dataclass
class RealTriton:
    """A running real Triton server."""

    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    host: str = "127.0.0.1"
    _workdir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        # SIGTERM: a background tritonserver may ignore SIGINT (docs/PEERS.md).
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


def find_real_triton(venv: Path = DEFAULT_VENV) -> RealTritonInstall | None:
    """The install under `venv`, or None when nvidia-pytriton is not installed there."""
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = sorted(venv.glob("lib/python3*/site-packages/pytriton/tritonserver"))
    if not found:
        return None
    root = found[0]
    install = RealTritonInstall(
        venv=venv,
        server_binary=root / "bin" / "tritonserver",
        backends_source=root / "backends",
        python_stub=root / "python_backend_stubs" / minor / "triton_python_backend_stub",
        libs=root.parents[1] / "nvidia_pytriton.libs",
    )
    needed = (install.server_binary, install.backends_source / "python", install.python_stub)
    return install if all(path.exists() for path in needed) else None


def cache_args(size: int, install: RealTritonInstall | None = None) -> list[str]:
    """Flags that give the real Triton its local response cache of `size` bytes (the library
    ships in the wheel under tritonserver/caches/, not in Triton's default /opt/tritonserver/caches)."""
    install = install or find_real_triton()
    if install is None:
        raise FileNotFoundError(f"real Triton is not installed under {DEFAULT_VENV} (see docs/PEERS.md)")
    caches = install.server_binary.parent.parent / "caches"
    return [f"--cache-config=local,size={size}", f"--cache-directory={caches}"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _backend_directory(install: RealTritonInstall, workdir: Path) -> Path:
    """A backend folder holding the python backend with the stub beside it (Triton's expected layout)."""
    backends = workdir / "backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True)
    for item in (install.backends_source / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, python_dir / item.name)
    shutil.copy2(install.python_stub, python_dir / install.python_stub.name)
    return backends


def _environment(install: RealTritonInstall) -> dict[str, str]:
    # The stub must link against this interpreter's libpython (not Debian's), and it finds
    # site-packages (numpy, onnxruntime) through the `python3` first on PATH.
    python_libdir = sysconfig.get_config_var("LIBDIR") or ""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (python_libdir, str(install.libs)) if p)
    env["PATH"] = os.pathsep.join((str(install.venv / "bin"), env.get("PATH", "")))
    env.pop("PYTHONPATH", None)
    return env


def _ready(http_port: int, host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{http_port}/v2/health/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def launch_real_triton(
    repository: Path,
    *,
    install: RealTritonInstall | None = None,
    model_control_mode: str = "none",
    load_models: list[str] | None = None,
    extra_args: list[str] | None = None,
    startup_timeout: float = 90.0,
) -> RealTriton:
    """Start tritonserver on free ports and wait until it is ready; the caller must `stop()` it."""
    install = install or find_real_triton()
    if install is None:
        raise FileNotFoundError(f"real Triton is not installed under {DEFAULT_VENV} (see docs/PEERS.md)")
    workdir = tempfile.TemporaryDirectory(prefix="real-triton-")
    work = Path(workdir.name)
    host = "127.0.0.1"
    ports = [free_port(host) for _ in range(3)]
    args = [
        str(install.server_binary),
        f"--model-repository={repository}",
        f"--backend-directory={_backend_directory(install, work)}",
        f"--http-address={host}",
        f"--grpc-address={host}",
        f"--metrics-address={host}",
        f"--http-port={ports[0]}",
        f"--grpc-port={ports[1]}",
        f"--metrics-port={ports[2]}",
        "--exit-on-error=false",
        f"--model-control-mode={model_control_mode}",
    ]
    args += [f"--load-model={name}" for name in load_models or []]
    args += extra_args or []
    log_path = work / "tritonserver.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, env=_environment(install), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = RealTriton(process, ports[0], ports[1], ports[2], log_path, host, workdir)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = server.log()
            server.stop()
            raise RuntimeError(f"tritonserver exited with {process.returncode}:\n{text[-4000:]}")
        if _ready(ports[0], host):
            return server
        time.sleep(0.2)
    text = server.log()
    server.stop()
    raise TimeoutError(f"tritonserver not ready after {startup_timeout:.0f}s:\n{text[-4000:]}")


@contextlib.contextmanager
def start_real_triton(repository: Path, **kwargs: object) -> Iterator[RealTriton]:
    """Context manager around `launch_real_triton` that always stops the server."""
    server = launch_real_triton(repository, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


ONNX_PYTHON_WRAPPER = '''
import json
import os

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Runs model.onnx beside this file with onnxruntime (the bundled Triton lacks the ORT backend)."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        here = os.path.dirname(os.path.abspath(__file__))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(os.path.join(here, "model.onnx"), options)
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests):
        # Concatenate the batch like Triton's ONNX backend does, run once, split back per request.
        arrays = {name: [] for name in self.inputs}
        sizes = []
        for request in requests:
            for name in self.inputs:
                arrays[name].append(pb_utils.get_input_tensor_by_name(request, name).as_numpy())
            sizes.append(arrays[self.inputs[0]][-1].shape[0])
        feeds = {name: np.concatenate(parts) for name, parts in arrays.items()}
        results = self.session.run(self.outputs, feeds)
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(n, r[start:start + size]) for n, r in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
'''


def onnx_python_wrapper(model_dir: Path, version: int = 1) -> None:
    """Turn an ONNX model folder (config + `<version>/model.onnx`) into one the bundled Triton serves.

    The config switches to `backend: "python"`; model.py runs the ONNX file with onnxruntime. Models
    must batch (max_batch_size > 0) since the wrapper splits results along the first dimension.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config_path = model_dir / "config.pbtxt"
    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    config.ClearField("platform")
    config.backend = "python"
    config_path.write_text(text_format.MessageToString(config))
    (model_dir / str(version) / "model.py").write_text(ONNX_PYTHON_WRAPPER)


def _main() -> int:
    if len(sys.argv) < 2:
        print("usage: real_triton.py REPOSITORY [--explicit]", file=sys.stderr)
        return 2
    mode = "explicit" if "--explicit" in sys.argv else "none"
    loads = ["*"] if mode == "explicit" else []
    with start_real_triton(Path(sys.argv[1]).resolve(), model_control_mode=mode, load_models=loads) as server:
        print(f"HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
