"""Classification labels: an output's `label_filename` (a file in the model's folder, one label per
line) gives the `value:index:label` strings of Triton's classification extension."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.repository.findings import Findings


def label_file(model_dir: Path, filename: str) -> Path:
    """Where an output's `label_filename` lives: in the model's folder, as Triton looks for it."""
    return model_dir / filename


def read_output_labels(config: Any, model_dir: Path) -> dict[str, list[str]]:
    """Output name -> its labels (line N labels class N) for every output with a `label_filename`.

    Raises OSError when a file cannot be read (the server refuses such a model at load:
    rules E216-missing-label-file)."""
    labels: dict[str, list[str]] = {}
    for output in config.output:
        if output.label_filename:
            text = label_file(model_dir, output.label_filename).read_text(encoding="utf-8", errors="replace")
            labels[output.name] = text.splitlines()
    return labels


def check_label_files(config: Any, model_dir: Path, found: Findings) -> None:
    """E216: an output's `label_filename` must name a readable file in the model's folder."""
    for index, output in enumerate(config.output):
        if not output.label_filename:
            continue
        path = label_file(model_dir, output.label_filename)
        if not path.is_file():
            found.error(
                "E216-missing-label-file",
                f"output[{index}].label_filename",
                f"output '{output.name}' names the label file '{output.label_filename}', "
                f"which is not in {model_dir}",
                f"put the labels (one per line, line N for class N) in {path}, or remove label_filename",
            )
