"""Measure ours against the real Triton 2.51 and MLServer 1.7 in one run; record the result.

    .venv/bin/python -m benchmarks.peers                  # everything, 3 rounds, then RESULTS.md
    .venv/bin/python -m benchmarks.peers --quick          # 1 round, short windows
    .venv/bin/python -m benchmarks.peers --scenarios P1,MLServer --rounds 5 --no-record

Sets up the peers in .tools/ on first use (perf_analyzer, nvidia-pytriton, MLServer; minutes),
prints medians, ratios to the real Triton and PASS/FAIL per target of issue #8, writes the raw
samples to benchmarks/out/ and appends a dated `## peers` entry to benchmarks/RESULTS.md.
Never run from the test suite: it loads both cores for minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import sys
import tempfile
from pathlib import Path

from benchmarks.peers import report, tools
from benchmarks.peers.load import WindowSizer
from benchmarks.peers.rounds import Results
from benchmarks.peers.scenarios import RUNNERS, SCENARIOS, Context
from server.repository.instance_mode import INSTANCE_MODES, PROCESS

RESULTS_MD = tools.ROOT / "benchmarks" / "RESULTS.md"
OUT = tools.ROOT / "benchmarks" / "out"


def _levels(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 3, --quick 1)")
    parser.add_argument(
        "--interval-s", type=float, help="seconds per measurement window (default 2, --quick 0.5)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round, 0.5 s windows: a smoke run of every scenario"
    )
    parser.add_argument("--p4-models", type=int, default=50, help="models in P4's large start-up case")
    parser.add_argument(
        "--mlserver-workers", type=int, default=1, help="MLServer parallel_workers (0: in-process)"
    )
    parser.add_argument("--p1-concurrency", type=_levels, default=(1, 8), help="comma list (default 1,8)")
    parser.add_argument(
        "--ours-instance-mode",
        choices=INSTANCE_MODES,
        default=PROCESS,
        help="TRITONCTL_INSTANCE_MODE set on our copies of the repositories (Triton's stay unchanged)",
    )
    parser.add_argument(
        "--working-tree",
        action="store_true",
        help="run our server from the working tree instead of a snapshot of HEAD (uncommitted changes)",
    )
    parser.add_argument(
        "--ours-commit",
        default="HEAD",
        help="measure our server as of this commit (a snapshot; e.g. the 'before' of a change)",
    )
    parser.add_argument("--no-setup", action="store_true", help="fail instead of installing missing peers")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("--results", type=Path, default=RESULTS_MD, help="the Markdown file to append to")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.interval_s = args.interval_s or (0.5 if args.quick else 2.0)
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    lookup = {name.lower(): name for name in SCENARIOS}
    unknown = [name for name in chosen if name.lower() not in lookup]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    args.scenarios = [lookup[name.lower()] for name in chosen]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    peers = tools.ensure_tools(install=not args.no_setup)
    started = datetime.datetime.now(datetime.timezone.utc)
    results = Results()
    with tempfile.TemporaryDirectory(prefix="peers-") as folder:
        if args.working_tree:
            commit = tools.commit() + " (working tree)"
        else:
            rev = args.ours_commit
            commit = tools.snapshot_head(Path(folder) / "code", rev) + f" (snapshot of {rev})"
            peers = dataclasses.replace(peers, ours_code=Path(folder) / "code")
        ctx = Context(
            tools=peers,
            results=results,
            workdir=Path(folder),
            rounds=args.rounds,
            sizer=WindowSizer(args.interval_s),
            p1_concurrency=args.p1_concurrency,
            p4_models=args.p4_models,
            mlserver_workers=args.mlserver_workers,
            ours_instance_mode=args.ours_instance_mode,
        )
        for scenario in args.scenarios:
            print(f"[peers] {scenario}: {report.TITLES[scenario]}", file=sys.stderr, flush=True)
            try:
                RUNNERS[scenario](ctx)
            except (RuntimeError, TimeoutError, OSError) as exc:  # e.g. a server that does not start
                print(f"[peers] {scenario} aborted: {exc}", file=sys.stderr, flush=True)
                results.cell(scenario, "(aborted)", "-")
                results.note(scenario, f"scenario aborted: {str(exc).splitlines()[0][:300]}")
    command = " ".join([".venv/bin/python -m benchmarks.peers", *map(shlex.quote, argv)])
    suffix = " (--quick)" if args.quick else ""
    lines = report.entry(
        results,
        title=f"peers: {started:%Y-%m-%d %H:%M} UTC{suffix}",
        command=command,
        facts=tools.machine_facts(),
        versions=tools.versions(peers),
        commit=commit,
        rounds=args.rounds,
        interval_s=args.interval_s,
    )
    print("\n".join(lines))
    OUT.mkdir(parents=True, exist_ok=True)
    raw = OUT / f"peers-{started:%Y%m%d-%H%M%S}.json"
    raw.write_text(json.dumps({"command": command, **results.to_json()}, indent=1))
    print(f"raw samples: {raw.relative_to(tools.ROOT)}", file=sys.stderr)
    if not args.no_record:
        report.append_entry(args.results, lines)
        print(f"appended to {args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
