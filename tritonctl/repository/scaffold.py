"""`tritonctl init`: render a template from `templates/` into `REPO/NAME/`.

Templates are `string.Template` files (see templates/README.md). The option blocks (instance
group, dynamic batching) are rendered here so the templates stay readable. With `from_file`,
the user's model is copied into version 1 and the config is generated from it instead.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from server.errors import ConfigError
from server.repository.layout import validate_model_name
from tritonctl.repository.generate import TensorSpec, config_text, generate_config

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
TEMPLATE_NAMES = ("onnx", "pytorch", "tensorrt", "python", "ensemble")
MODEL_FILES = {"onnx": "model.onnx", "pytorch": "model.pt", "tensorrt": "model.plan", "python": "model.py"}
INSTANCE_KINDS = ("KIND_AUTO", "KIND_CPU", "KIND_GPU", "KIND_MODEL")
WIDTH = 4  # the tiny models' feature width
DEFAULT_TEMPLATE_BATCH_SIZE = 8


@dataclass(frozen=True)
class InitOptions:
    """What `tritonctl init` was asked for."""

    max_batch_size: int | None = None  # None: 8 for templates, from the model file with from_file
    instance_count: int = 1
    instance_kind: str = "KIND_AUTO"
    gpus: tuple[int, ...] = ()
    dynamic_batching: bool | None = None  # None: on whenever max_batch_size > 0
    max_queue_delay_us: int = 0
    from_file: Path | None = None
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    force: bool = False
    allow_python: bool = False  # with from_file and a python model: run its auto_complete_config
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return DEFAULT_TEMPLATE_BATCH_SIZE if self.max_batch_size is None else self.max_batch_size

    @property
    def batching(self) -> bool:
        wanted = self.batch_size > 0 if self.dynamic_batching is None else self.dynamic_batching
        return wanted and self.batch_size > 0


def _instance_group_block(options: InitOptions) -> str:
    parts = [f"count: {options.instance_count}", f"kind: {options.instance_kind}"]
    if options.gpus:
        parts.append(f"gpus: [ {', '.join(map(str, options.gpus))} ]")
    return f"instance_group [\n  {{ {', '.join(parts)} }}\n]\n"


def _dynamic_batching_block(options: InitOptions) -> str:
    if not options.batching:
        return ""
    if options.max_queue_delay_us:
        return f"dynamic_batching {{\n  max_queue_delay_microseconds: {options.max_queue_delay_us}\n}}\n"
    return "dynamic_batching { }\n"


def _regenerate_command(model_dir: Path, options: InitOptions) -> str:
    """The `config generate` line a config's comment suggests: an absolute path so that it works from
    any folder, and init's own batch size (generate's default differs)."""
    target = shlex.quote(str(model_dir.resolve()))
    return f"tritonctl config generate {target} --force --max-batch-size {options.batch_size}"


def _variables(model_dir: Path, options: InitOptions) -> dict[str, str]:
    name = model_dir.name
    dims = f"[ {WIDTH} ]" if options.batch_size > 0 else f"[ -1, {WIDTH} ]"
    return {
        "name": name,
        "regenerate": _regenerate_command(model_dir, options),
        "max_batch_size": str(options.batch_size),
        "dims": dims,
        "instance_group": _instance_group_block(options),
        "dynamic_batching": _dynamic_batching_block(options),
        "opt_batch": str(max(options.batch_size // 2, 1)),
        "max_batch": str(max(options.batch_size, 1)),
        **options.extra,
    }


def _render(template_file: Path, variables: dict[str, str]) -> str:
    text = Template(template_file.read_text(encoding="utf-8")).substitute(variables)
    # Option blocks end in a newline of their own: exactly one at the end of every file.
    return text.rstrip("\n") + "\n"


def _write(path: Path, text: str, written: list[Path]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    written.append(path)


def _check_free(model_dir: Path, force: bool) -> None:
    if model_dir.exists() and any(model_dir.iterdir()) and not force:
        raise ConfigError(f"{model_dir} already exists and is not empty; pass --force to overwrite it")


def _render_model(template: str, model_dir: Path, variables: dict[str, str], written: list[Path]) -> None:
    """Render every `.tmpl` file of one template folder (ensemble step files excluded)."""
    root = TEMPLATES_DIR / template
    for template_file in sorted(root.rglob("*.tmpl")):
        relative = template_file.relative_to(root)
        if relative.name.startswith("step_"):
            continue
        target = model_dir / str(relative)[: -len(".tmpl")]
        _write(target, _render(template_file, variables), written)


def _build_model_file(template: str, model_file: Path) -> None:
    from tritonctl.repository import tiny_models

    if template == "onnx":
        tiny_models.build_onnx_add_sub(model_file, WIDTH)
    elif template == "pytorch":
        tiny_models.build_torchscript_add_sub(model_file)


def _init_ensemble(repo: Path, name: str, options: InitOptions, written: list[Path]) -> None:
    steps = {
        f"{name}_scale": ("INPUT0 * 2", "x * 2"),
        f"{name}_offset": ("INPUT0 + 1", "x + 1"),
    }
    for step_name in steps:
        _check_free(repo / step_name, options.force)
    variables = _variables(repo / name, options)
    _write(
        repo / name / "config.pbtxt",
        _render(TEMPLATES_DIR / "ensemble" / "config.pbtxt.tmpl", variables),
        written,
    )
    (repo / name / "1").mkdir(parents=True, exist_ok=True)  # ensembles have an empty version folder
    for step_name, (expression, code) in steps.items():
        step_vars = {**variables, "step_name": step_name, "expression": expression, "expression_code": code}
        step_dir = repo / step_name
        _write(
            step_dir / "config.pbtxt",
            _render(TEMPLATES_DIR / "ensemble" / "step_config.pbtxt.tmpl", step_vars),
            written,
        )
        _write(
            step_dir / "1" / "model.py",
            _render(TEMPLATES_DIR / "ensemble" / "step_model.py.tmpl", step_vars),
            written,
        )


def _apply_options(config: Any, options: InitOptions, can_batch: bool) -> None:
    """Instance group and batching options over a generated config."""
    del config.instance_group[:]
    group = config.instance_group.add(count=options.instance_count, kind=options.instance_kind)
    group.gpus.extend(options.gpus)
    if not can_batch or options.dynamic_batching is False:
        config.ClearField("dynamic_batching")
    elif options.max_queue_delay_us:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    else:
        config.dynamic_batching.SetInParent()


def _init_from_file(template: str, model_dir: Path, options: InitOptions, written: list[Path]) -> None:
    source = options.from_file
    if source is None or not source.exists():
        raise ConfigError(f"--from {source}: no such file")
    target = model_dir / "1" / MODEL_FILES[template]
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copyfile(source, target)
    written.append(target)
    if template == "tensorrt":
        # A plan cannot be inspected without TensorRT: the template's tensors stand in until edited.
        variables = _variables(model_dir, options)
        _render_model(template, model_dir, variables, written)
        return
    config = generate_config(
        model_dir,
        max_batch_size=options.max_batch_size,
        inputs=options.inputs,
        outputs=options.outputs,
        allow_python=options.allow_python,
    )
    _apply_options(config, options, config.max_batch_size > 0)
    header = f"{model_dir.name}: generated by `tritonctl init --template {template} --from {source.name}`"
    _write(model_dir / "config.pbtxt", config_text(config, header), written)


def init_model(repo: Path, template: str, name: str, options: InitOptions) -> list[Path]:
    """Scaffold `repo/name` from `template`; returns the files written. Raises ConfigError."""
    if template not in TEMPLATE_NAMES:
        raise ConfigError(f"unknown template {template!r}: use one of {', '.join(TEMPLATE_NAMES)}")
    validate_model_name(name)
    if options.instance_kind not in INSTANCE_KINDS:
        raise ConfigError(f"unknown instance kind {options.instance_kind!r}: use {', '.join(INSTANCE_KINDS)}")
    if options.gpus and options.instance_kind != "KIND_GPU":
        raise ConfigError("--gpus needs --instance-kind gpu")
    if (options.max_batch_size or 0) < 0 or options.instance_count < 1:
        raise ConfigError("--max-batch-size must be >= 0 and --instance-count >= 1")
    model_dir = repo / name
    _check_free(model_dir, options.force)
    existed = model_dir.exists()
    try:
        return _scaffold(repo, template, model_dir, options)
    except BaseException:
        if not existed:  # leave no half-written model behind
            shutil.rmtree(model_dir, ignore_errors=True)
        raise


def _scaffold(repo: Path, template: str, model_dir: Path, options: InitOptions) -> list[Path]:
    name = model_dir.name
    written: list[Path] = []
    if template == "ensemble":
        if options.from_file is not None:
            raise ConfigError("--from does not apply to the ensemble template")
        _init_ensemble(repo, name, options, written)
        return written
    if options.from_file is not None:
        _init_from_file(template, model_dir, options, written)
        return written
    _render_model(template, model_dir, _variables(model_dir, options), written)
    (model_dir / "1").mkdir(parents=True, exist_ok=True)  # tensorrt: where the engine goes
    if template in ("onnx", "pytorch"):
        model_file = model_dir / "1" / MODEL_FILES[template]
        _build_model_file(template, model_file)
        written.append(model_file)
    return written
