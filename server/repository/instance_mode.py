"""The `TRITONCTL_INSTANCE_MODE` model parameter: where a model's instances run.

    parameters { key: "TRITONCTL_INSTANCE_MODE" value { string_value: "inline" } }

- `host` (default for onnxruntime, pytorch, tensorrt): a thread of the backend's shared host
  process for the instance's device (server/workers/host.py): many models, one interpreter; a
  crash takes down the host (restarted with its models), never the front end;
- `process` (default for python, and always for it): one worker process per instance
  (server/workers/supervisor.py);
- `inline`: the instance lives in the server's main process and executes on the event-loop thread;
- `thread`: the instance lives in the main process and executes on a thread of its own.

In-process modes skip the shared-memory hop (issue #8) and give up isolation: see the README.
They are for CPU instances only. The real Triton ignores parameters it does not know, so a
repository using this one still loads there. One reader for the server and `tritonctl validate`.
"""

from __future__ import annotations

from typing import Any

INSTANCE_MODE_KEY = "TRITONCTL_INSTANCE_MODE"
PROCESS, INLINE, THREAD, HOST = "process", "inline", "thread", "host"
INSTANCE_MODES = (PROCESS, INLINE, THREAD, HOST)
# Backends whose instances share a host process by default (their models are data, not code
# that imports modules by name: many of them live well in one interpreter).
HOSTED_BACKENDS = frozenset({"onnxruntime", "pytorch", "tensorrt"})
INSTANCE_MODE_EXAMPLE = f'parameters {{ key: "{INSTANCE_MODE_KEY}" value {{ string_value: "inline" }} }}'


def configured_instance_mode(config: Any) -> str:
    """The mode text as written (stripped, lower case); `process` when the parameter is absent."""
    if INSTANCE_MODE_KEY not in config.parameters:
        return PROCESS
    return str(config.parameters[INSTANCE_MODE_KEY].string_value).strip().lower()


def effective_instance_mode(config: Any, backend: str) -> str:
    """Where the instances of a model of `backend` run: the parameter if written, else `host` for
    the framework backends and `process` for the others. A python model always gets `process`
    for `host` (its model.py modules would share one interpreter's names)."""
    mode = configured_instance_mode(config)
    if INSTANCE_MODE_KEY not in config.parameters:
        return HOST if backend in HOSTED_BACKENDS else PROCESS
    if mode == HOST and backend not in HOSTED_BACKENDS:
        return PROCESS
    return mode


def unknown_mode_problem(mode: str) -> str | None:
    if mode in INSTANCE_MODES:
        return None
    return f"{INSTANCE_MODE_KEY} is '{mode}'; it must be one of {', '.join(INSTANCE_MODES)}"


def gpu_kind_problem(mode: str, where: str) -> str:
    """Why `mode` cannot serve a GPU instance (`where` names the group or instance)."""
    return (
        f"{INSTANCE_MODE_KEY} '{mode}' runs instances inside the server process, on CPU only, "
        f"but {where} is KIND_GPU"
    )
