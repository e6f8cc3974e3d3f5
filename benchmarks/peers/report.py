"""Tables of medians and ratios to the real Triton, the issue's targets as PASS/FAIL, the RESULTS.md entry."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from benchmarks.peers.load import P50, P99, THROUGHPUT
from benchmarks.peers.rounds import Results
from benchmarks.peers.scenarios import MB_PER_S, ONNXRUNTIME, READY_S
from benchmarks.peers.systems import MLSERVER, OURS, TRITON

TITLES = {
    "P1": "P1 overhead: python-backend identity FP32[16], max_batch_size 64, dynamic_batching {}; "
    "perf_analyzer",
    "P2": "P2 compute: ONNX MLP 256-1024-1024-10 (ours: onnxruntime backend; Triton: python model.py "
    "calling onnxruntime), dynamic batching; perf_analyzer gRPC",
    "P3": "P3 large tensors: python identity FP32 3x224x224 (602 KB each way); perf_analyzer, HTTP binary; "
    "MB/s of input tensors",
    "P4": "P4 start-up: seconds from process start to /v2/health/ready (python identity models)",
    "P7": "P7 stateful: python accumulator INT32[1], max_batch_size 8, sequence_batching direct with START/"
    "READY controls; perf_analyzer gRPC (sequences of 20)",
    "MLServer": "MLServer on P1's identity; load generator `tritonctl perf` for every system",
    "P3shm": "P3shm: P3's identity FP32 3x224x224 (602 KB each way) through system shared memory "
    "(perf_analyzer --shared-memory system) and through the body; MB/s of input tensors",
    "P5": "P5 streaming: decoupled python model, 16 responses FP32[1] per request sent from execute(); "
    "perf_analyzer --streaming gRPC; responses/s",
    "P6": "P6 BLS: python model calling an add_sub python model FP32[16] with InferenceRequest.exec(); "
    "perf_analyzer",
    "P8": "P8 response cache hits: P1's identity with response_cache { enable: true }, local cache 64 MB "
    "on both; perf_analyzer repeats one input",
}
METRICS = {
    "P1": [THROUGHPUT, P50, P99],
    "P2": [THROUGHPUT, P50, P99],
    "P3": [MB_PER_S, P50, P99],
    "P4": [READY_S],
    "P5": ["responses/s", P50, P99],
    "P6": [THROUGHPUT, P50, P99],
    "P7": [THROUGHPUT, P50, P99],
    "MLServer": [THROUGHPUT, P50, P99],
    "P3shm": [MB_PER_S, P50, P99],
    "P8": [THROUGHPUT, P50, P99],
}
SYSTEM_ORDER = [OURS, TRITON, MLSERVER, ONNXRUNTIME]


@dataclass(frozen=True)
class Goal:
    """One target of the issue: ratio system/baseline of a metric, at least or at most a threshold."""

    scenario: str
    case: str
    metric: str
    at_least: bool
    threshold: float
    baseline: str = TRITON

    def describe(self) -> str:
        sign = ">=" if self.at_least else "<="
        return f"{self.scenario} {self.case} {self.metric}: ours/{self.baseline} {sign} {self.threshold:g}"


GOALS = [
    Goal("P1", "gRPC c=8", THROUGHPUT, True, 1.0),
    Goal("P1", "HTTP c=8", THROUGHPUT, True, 1.0),
    Goal("P1", "gRPC c=1", P50, False, 1.2),
    Goal("P1", "HTTP c=1", P50, False, 1.2),
    Goal("P2", "gRPC c=16", THROUGHPUT, True, 2.0),
    *(Goal("P3", f"{p} c={c}", MB_PER_S, True, 1.0) for p in ("gRPC", "HTTP") for c in (1, 4)),
    Goal("P4", "50 models", READY_S, False, 1.0),
    Goal("P5", "gRPC c=8", "responses/s", True, 1.0),
    Goal("P6", "gRPC c=8", THROUGHPUT, True, 1.0),
    Goal("P6", "HTTP c=8", THROUGHPUT, True, 1.0),
    Goal("P7", "gRPC c=8", THROUGHPUT, True, 1.0),
    Goal("P7", "gRPC c=8", P99, False, 1.0),
    Goal("MLServer", "gRPC c=8", THROUGHPUT, True, 3.0, MLSERVER),
    Goal("MLServer", "HTTP c=8", THROUGHPUT, True, 3.0, MLSERVER),
    *(Goal("P3shm", f"{p} shm c={c}", MB_PER_S, True, 1.5) for p in ("gRPC", "HTTP") for c in (1, 4)),
    Goal("P8", "gRPC c=8", THROUGHPUT, True, 1.0),
    Goal("P8", "HTTP c=8", THROUGHPUT, True, 1.0),
]


def ratio(results: Results, scenario: str, case: str, metric: str, baseline: str = TRITON) -> float | None:
    ours, base = results.find(scenario, case, OURS), results.find(scenario, case, baseline)
    if ours is None or base is None:
        return None
    a, b = ours.median(metric), base.median(metric)
    return a / b if a is not None and b else None


def round_ratios(results: Results, scenario: str, case: str, metric: str, baseline: str = TRITON) -> str:
    """Ours/baseline round by round (same round = same minute of machine load)."""
    ours, base = results.find(scenario, case, OURS), results.find(scenario, case, baseline)
    if ours is None or base is None:
        return ""
    pairs = zip(ours.values(metric), base.values(metric), strict=False)
    return " / ".join(f"{a / b:.2f}" for a, b in pairs if b)


def _format(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric == READY_S:
        return f"{value:.2f}"
    return f"{value:.1f}" if metric == MB_PER_S else f"{value:.0f}"


def scenario_table(results: Results, scenario: str) -> list[str]:
    """Markdown rows: one per (case, metric), medians per system and ratios to Triton (and MLServer)."""
    systems = [name for name in SYSTEM_ORDER if name in results.systems(scenario)]
    baselines = [name for name in (TRITON, MLSERVER) if name in systems]
    header = ["case", "metric", *systems, *(f"ours/{b}" for b in baselines), "ours/triton per round"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case in results.cases(scenario):
        for metric in METRICS[scenario]:
            cells = [results.find(scenario, case, name) for name in systems]
            values = [cell.median(metric) if cell else None for cell in cells]
            if all(value is None for value in values):
                errors = [cell for cell in cells if cell and cell.errors]
                if metric == METRICS[scenario][0] and errors:
                    lines.append(f"| {case} | {metric} | failed: see the log | |")
                continue
            ratios = []
            for base in baselines:
                found = ratio(results, scenario, case, metric, base)
                ratios.append(f"{found:.2f}x" if found is not None else "-")
            per_round = round_ratios(results, scenario, case, metric) if TRITON in baselines else ""
            row = [case, metric, *(_format(metric, v) for v in values), *ratios, per_round]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def goal_rows(results: Results) -> list[tuple[Goal, float | None, str]]:
    rows: list[tuple[Goal, float | None, str]] = []
    for goal in GOALS:
        if goal.scenario not in results.scenarios:
            continue
        found = ratio(results, goal.scenario, goal.case, goal.metric, goal.baseline)
        if found is None:
            rows.append((goal, None, "n/a"))
            continue
        met = found >= goal.threshold if goal.at_least else found <= goal.threshold
        rows.append((goal, found, "PASS" if met else "FAIL"))
    return rows


def goals_table(results: Results) -> list[str]:
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    for goal, found, verdict in goal_rows(results):
        measured = f"{found:.2f}x" if found is not None else "-"
        lines.append(f"| {goal.describe()} | {measured} | **{verdict}** |")
    return lines


def body(results: Results, rounds: int) -> list[str]:
    """Every scenario's table with its notes, then the targets (what is printed and recorded)."""
    lines: list[str] = []
    for scenario in results.scenarios:
        lines += ["", f"### {TITLES[scenario]}", "", *scenario_table(results, scenario)]
        lines += [f"- {note}" for note in results.notes.get(scenario, [])]
        failed = [
            f"{system} {case} x{len(cell.errors)}"
            for (name, case, system), cell in results.cells.items()
            if name == scenario and cell.errors
        ]
        if failed:
            lines.append(f"- failed attempts (each retried once, see the log): {', '.join(failed)}")
    lines += [
        "",
        f"### Targets (medians of {rounds} round(s), ratios from this run)",
        "",
        *goals_table(results),
    ]
    return lines


def entry(
    results: Results,
    *,
    title: str,
    command: str,
    facts: dict[str, str],
    versions: dict[str, str],
    commit: str,
    rounds: int,
    interval_s: float,
) -> list[str]:
    """The dated RESULTS.md section for this run."""
    loads = results.loads()
    load_text = (
        f"{min(loads):.1f}-{max(loads):.1f} (median {statistics.median(loads):.1f})"
        if loads
        else "not sampled"
    )
    machine = ", ".join(f"{key} {value}" for key, value in facts.items())
    version_text = ", ".join(f"{key} {value}" for key, value in versions.items())
    return [
        f"## {title}",
        "",
        f"- Command: `{command}`",
        f"- Commit: {commit}",
        f"- Machine: {machine}; 1-minute load average during the samples {load_text} "
        "(other engineers' test runs share the cores: compare ratios, not absolute numbers)",
        f"- Versions: {version_text}",
        f"- Method: the systems of a scenario run side by side on 127.0.0.1; {rounds} round(s), each "
        "measuring every system once per case with the order rotated; medians over rounds. perf_analyzer and "
        f"`tritonctl perf`: 3 count windows sized to ~{interval_s:g} s each, after one warm-up measurement.",
        *body(results, rounds),
        "",
    ]


def append_entry(path: Path, lines: list[str]) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    path.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines).rstrip("\n") + "\n")
