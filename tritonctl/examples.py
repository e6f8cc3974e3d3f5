"""Build the bundled example repository: `python -m tritonctl.examples DIR` (used by `make serve`).

    simple       ONNX add/sub, FP32 [batch, 4]: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1
    classifier   ONNX dense classifier, INPUT0 FP32 [batch, 4] -> LOGITS, PROBABILITIES [batch, 3];
                 its config.pbtxt is generated from the graph, like `tritonctl config generate`
    add_sub_py   the same add/sub as a Triton python-backend model (1/model.py)

Idempotent: running it again rewrites the same files. Nothing here is committed to git.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tritonctl.repository.generate import config_text, generate_config
from tritonctl.repository.scaffold import InitOptions, init_model
from tritonctl.repository.tiny_models import build_onnx_classifier

EXAMPLE_MODELS = ("simple", "classifier", "add_sub_py")


def build_examples(root: Path) -> list[Path]:
    """Write the example models under `root`; returns the files written."""
    root.mkdir(parents=True, exist_ok=True)
    options = InitOptions(max_batch_size=8, instance_kind="KIND_CPU", force=True)
    written = init_model(root, "onnx", "simple", options)
    written += init_model(root, "python", "add_sub_py", options)
    classifier = root / "classifier"
    written.append(build_onnx_classifier(classifier / "1" / "model.onnx"))
    config = generate_config(classifier, max_batch_size=8)
    config.instance_group.add(count=1, kind="KIND_CPU")
    config_file = classifier / "config.pbtxt"
    config_file.write_text(config_text(config, "classifier: generated from 1/model.onnx"), encoding="utf-8")
    written.append(config_file)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tritonctl.examples DIR", file=sys.stderr)
        return 2
    root = Path(args[0])
    build_examples(root)
    print(f"example repository ready at {root} ({', '.join(EXAMPLE_MODELS)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
