"""Model files against their config (`tritonctl validate --check-models`).

ONNX graphs are read with the `onnx` package, TorchScript files loaded with torch (both imported
lazily, only when such a model is checked), and a python model's `model.py` is parsed with `ast`
to find `TritonPythonModel.execute`: it is never imported or run.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2

from server.errors import ConfigError
from server.repository.autocomplete import TensorSignature, read_onnx_signature
from server.repository.diagnostics import Diagnostic
from server.repository.findings import Findings, file_diagnostic
from server.repository.layout import backend_of, default_model_filename, resolve_versions
from server.repository.sequence_rules import check_onnx_sequence_tensors, sequence_tensor_names


def _data_type_name(data_type: int) -> str:
    return str(model_config_pb2.DataType.Name(data_type))


def _compare_tensor(
    found: Findings, path: str, tensor: Any, graph: TensorSignature, *, max_batch_size: int, kind: str
) -> None:
    config_type = _data_type_name(tensor.data_type)
    if graph.data_type and tensor.data_type and config_type != graph.data_type:
        found.error(
            "E504-model-dtype-mismatch",
            f"{path}.data_type",
            f'{kind} "{tensor.name}" is {config_type} in the config but {graph.data_type} in the model',
            f"set data_type: {graph.data_type}",
        )
    if graph.dims is None:
        return
    dims = list(tensor.dims)
    model_dims = list(graph.dims)
    if max_batch_size > 0:
        if len(model_dims) == len(dims) and model_dims[:1] == [-1] and dims:
            found.error(
                "E505-model-rank-mismatch",
                f"{path}.dims",
                f'{kind} "{tensor.name}": the model has rank {len(model_dims)} {model_dims}, but with '
                f"max_batch_size > 0 the config means [-1] + {dims} (rank {len(dims) + 1}): the batch axis "
                "is listed twice",
                f"write dims: {model_dims[1:]} (without the batch axis)",
            )
            return
        if model_dims and model_dims[0] != -1:
            found.error(
                "E507-model-no-batch-axis",
                f"{path}.dims",
                f'{kind} "{tensor.name}": max_batch_size is {max_batch_size} but the model\'s first axis '
                f"is fixed to {model_dims[0]}, so it cannot take a batch",
                f"set max_batch_size: 0 and dims: {model_dims}, or export the model with a dynamic "
                "batch axis",
            )
            return
        model_dims = model_dims[1:]
    if len(model_dims) != len(dims):
        found.error(
            "E505-model-rank-mismatch",
            f"{path}.dims",
            f'{kind} "{tensor.name}" has {len(dims)} dims in the config but rank {len(model_dims)} '
            f"{model_dims} in the model",
            f"write dims: {model_dims}",
        )
        return
    for index, (want, have) in enumerate(zip(dims, model_dims, strict=True)):
        if have not in (-1, want):
            found.error(
                "E506-model-dim-mismatch",
                f"{path}.dims[{index}]",
                f'{kind} "{tensor.name}" axis {index} is {want} in the config but {have} in the model',
                f"write {have} at that position",
            )


def _check_onnx(config: Any, model_file: Path, found: Findings) -> None:
    try:
        signature = read_onnx_signature(model_file)
    except ConfigError as exc:
        found.items.extend(d.with_model(found.model) for d in exc.diagnostics)
        return
    for field, graph_tensors, kind in (
        ("input", signature.inputs, "input"),
        ("output", signature.outputs, "output"),
    ):
        by_name = {t.name: t for t in graph_tensors}
        tensors = getattr(config, field)
        for index, tensor in enumerate(tensors):
            graph = by_name.get(tensor.name)
            if graph is None:
                found.error(
                    "E502-model-unknown-tensor",
                    f"{field}[{index}].name",
                    f'{kind} "{tensor.name}" is not an {kind} of {model_file.name} '
                    f"(the model's {kind}s: {', '.join(by_name) or 'none'})",
                    f"use the model's {kind} names, or run `tritonctl config generate` to write them",
                )
                continue
            _compare_tensor(
                found, f"{field}[{index}]", tensor, graph, max_batch_size=config.max_batch_size, kind=kind
            )
        if field == "input" and tensors:
            fed, _ = sequence_tensor_names(config)  # control and state inputs: the batcher's
            missing = sorted(set(by_name) - {t.name for t in tensors} - fed)
            for name in missing:
                found.error(
                    "E503-model-input-not-in-config",
                    "input",
                    f'the model needs input "{name}" but the config does not list it',
                    f'add an input named "{name}" (data_type {by_name[name].data_type or "?"})',
                )

    check_onnx_sequence_tensors(config, signature, model_file, found)


def _check_torchscript(config: Any, model_file: Path, found: Findings) -> None:
    import torch  # heavy: only when a TorchScript model is checked

    try:
        load: Any = torch.jit.load  # untyped in torch's annotations
        module = load(str(model_file), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError, ValueError, zip errors...
        reason = (str(exc).splitlines() or [repr(exc)])[0].split(". ")[0]  # torch appends paragraphs
        file_diagnostic(
            found,
            "E510-torchscript-unloadable",
            model_file,
            f"torch.jit.load cannot load {model_file.name}: {reason}",
            "save a TorchScript module: torch.jit.save(torch.jit.script(model), 'model.pt') "
            "(a state_dict or pickled nn.Module is not loadable)",
        )
        return
    try:
        arguments = [a.name for a in module.forward.schema.arguments if a.name != "self"]
    except AttributeError:
        return
    if config.input and len(arguments) != len(config.input):
        found.error(
            "E511-torchscript-input-count",
            "input",
            f"forward() of {model_file.name} takes {len(arguments)} tensors ({', '.join(arguments)}) but the "
            f"config lists {len(config.input)} inputs",
            "list exactly one config input per forward() argument, in order",
        )


def _check_python(model_file: Path, found: Findings) -> None:
    try:
        tree = ast.parse(model_file.read_bytes(), filename=str(model_file))
    except SyntaxError as exc:
        found.items.append(
            Diagnostic(
                "E520-python-syntax",
                "error",
                f"model.py does not parse: {exc.msg}",
                "fix the Python syntax error",
                str(model_file),
                exc.lineno,
                exc.offset,
                found.model,
            )
        )
        return
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TritonPythonModel"]
    if not classes:
        file_diagnostic(
            found,
            "E521-no-triton-python-model",
            model_file,
            "model.py defines no top-level class TritonPythonModel",
            "define `class TritonPythonModel:` with an execute(self, requests) method",
        )
        return
    methods = {n.name for n in classes[0].body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    if "execute" not in methods:
        found.items.append(
            Diagnostic(
                "E522-no-execute",
                "error",
                "class TritonPythonModel has no execute method",
                "add `def execute(self, requests):` returning one InferenceResponse per request",
                str(model_file),
                classes[0].lineno,
                classes[0].col_offset + 1,
                found.model,
            )
        )


def check_model_files(config: Any, model_dir: Path, found: Findings) -> list[Diagnostic]:
    """Compare the model file of each selected version with `config` (identity-normalized)."""
    backend = backend_of(config)
    filename = default_model_filename(config)
    if filename is None:
        return found.items
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    for version in resolve_versions(config, versions):
        model_file = model_dir / str(version) / filename
        if not model_file.is_file():
            continue
        if backend == "onnxruntime":
            _check_onnx(config, model_file, found)
        elif backend == "pytorch":
            _check_torchscript(config, model_file, found)
        elif backend == "python":
            _check_python(model_file, found)
    return found.items
