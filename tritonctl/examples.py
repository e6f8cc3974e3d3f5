"""Build the bundled example repository: `python -m tritonctl.examples DIR` (used by `make serve`).

    simple       ONNX add/sub, FP32 [batch, 4]: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1
    classifier   ONNX dense classifier, INPUT0 FP32 [batch, 4] -> LOGITS, PROBABILITIES [batch, 3];
                 its config.pbtxt is generated from the graph, like `tritonctl config generate`
    add_sub_py   the same add/sub as a Triton python-backend model (1/model.py)
    repeat       a decoupled python model: IN INT32 [1] = n -> n responses OUT = 0..n-1, sent from a
                 thread (curl -N .../v2/models/repeat/generate_stream -d '{"IN": 3}')

Idempotent: running it again rewrites the same files. Nothing here is committed to git.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tritonctl.repository.generate import config_text, generate_config
from tritonctl.repository.scaffold import InitOptions, init_model
from tritonctl.repository.tiny_models import build_onnx_classifier

EXAMPLE_MODELS = ("simple", "classifier", "add_sub_py", "repeat")

REPEAT_CONFIG = """\
# repeat: a decoupled (streaming) python model; answers 0..n-1, one response each
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
model_transaction_policy { decoupled: true }
"""

REPEAT_MODEL = """\
import threading

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            threading.Thread(target=self.send, args=(request, n)).start()
        return None  # decoupled: the answers go through the response sender

    def send(self, request, n):
        sender = request.get_response_sender()
        for i in range(n):
            if request.is_cancelled():  # the client went away
                break
            out = pb_utils.Tensor("OUT", np.array([i], np.int32))
            sender.send(pb_utils.InferenceResponse([out]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
"""


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
    repeat = root / "repeat"
    (repeat / "1").mkdir(parents=True, exist_ok=True)
    for path, text in ((repeat / "config.pbtxt", REPEAT_CONFIG), (repeat / "1" / "model.py", REPEAT_MODEL)):
        path.write_text(text, encoding="utf-8")
        written.append(path)
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
