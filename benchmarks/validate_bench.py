"""`tritonctl validate` on a 200-model repository without model checks must take under 2 s.

Builds a repository of N models (python, ONNX and PyTorch configs in turn, each with dynamic
batching, instance groups and a version policy; model files are placeholders since model checks
are off), then times two things, alternating round by round:

- in process: `validate_repository(repo, check_models=False)` (parse, scan, rules, ensembles);
- end to end: the `tritonctl validate REPO --no-check-models` command in a fresh interpreter,
  start-up included (what CI and pre-commit pay).

Both wall-clock and CPU time (user + system) are reported. The command is single-threaded, so on an
idle machine its wall time is its CPU time; on a shared, loaded machine (load average above the
core count) wall time mostly measures waiting for a core, and the budget is judged on CPU time.

Usage:  .venv/bin/python -m benchmarks.validate_bench [--models 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from server.repository.validate import validate_repository

BUDGET_S = 2.0
KINDS = (
    (
        "python",
        'backend: "python"',
        "model.py",
        "class TritonPythonModel:\n    def execute(self, r):\n        return []\n",
    ),
    ("onnx", 'platform: "onnxruntime_onnx"', "model.onnx", ""),
    ("pytorch", 'platform: "pytorch_libtorch"', "model.pt", ""),
)
CONFIG = """name: "{name}"
{identity}
max_batch_size: 16
input [
  {{ name: "INPUT__0", data_type: TYPE_FP32, dims: [ 3, 224, 224 ] }},
  {{ name: "INPUT__1", data_type: TYPE_INT64, dims: [ -1 ] }}
]
output [ {{ name: "OUTPUT__0", data_type: TYPE_FP32, dims: [ 1000 ] }} ]
instance_group [ {{ count: 2, kind: KIND_CPU }} ]
dynamic_batching {{
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
}}
version_policy: {{ latest: {{ num_versions: 2 }} }}
"""


def build_repository(root: Path, models: int) -> None:
    for index in range(models):
        kind, identity, filename, content = KINDS[index % len(KINDS)]
        name = f"{kind}_{index:03d}"
        for version in (1, 2):
            (root / name / str(version)).mkdir(parents=True)
            (root / name / str(version) / filename).write_text(content)
        (root / name / "config.pbtxt").write_text(CONFIG.format(name=name, identity=identity))


def time_in_process(root: Path, models: int) -> tuple[float, float]:
    """(wall, cpu) seconds of one in-process validation."""
    start, cpu_start = time.perf_counter(), time.process_time()
    report = validate_repository(root, check_models=False)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if len(report.models) != models or report.errors:
        raise SystemExit(f"unexpected report: {len(report.models)} models, errors {report.errors[:3]}")
    return elapsed, cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(root: Path) -> tuple[float, float]:
    """(wall, cpu) seconds of `tritonctl validate` in a fresh interpreter."""
    start, cpu_start = time.perf_counter(), _children_cpu()
    command = [sys.executable, "-m", "tritonctl", "validate", str(root), "--no-check-models"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
    if result.returncode != 0:
        raise SystemExit(
            f"validate failed ({result.returncode}): {result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return elapsed, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=200, help="models in the repository")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each measurement")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="validate_bench_") as tmp:
        root = Path(tmp)
        build_repository(root, args.models)
        time_in_process(root, args.models)  # warm-up: imports, file cache
        in_process, command = [], []
        for _ in range(args.rounds):
            in_process.append(time_in_process(root, args.models))
            command.append(time_command(root))
    load = os.getloadavg()[0]
    print(f"repository: {args.models} models, 2 versions each, model checks off; {args.rounds} rounds")
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f} at the end")
    for label, pairs in (("in process", in_process), ("tritonctl validate (fresh process)", command)):
        for kind, values in (("wall", [w for w, _ in pairs]), ("cpu", [c for _, c in pairs])):
            spread = f"min {min(values):.3f} s  max {max(values):.3f} s"
            print(f"{label:36s} {kind:4s} median {statistics.median(values):.3f} s  {spread}")
    end_to_end = statistics.median(c for _, c in command)
    verdict = "within" if end_to_end < BUDGET_S else "OVER"
    print(f"budget {BUDGET_S:.1f} s: end-to-end CPU median {end_to_end:.3f} s is {verdict} budget")
    return 0 if end_to_end < BUDGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
