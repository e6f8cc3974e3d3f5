"""Importing a python model's `model.py` and the helper modules beside it.

In a worker process (one model per interpreter) `model.py` is imported as module `model` and its
folder goes to the front of sys.path for good, as Triton's stub does.

In-process instances (TRITONCTL_INSTANCE_MODE inline/thread) share the server's interpreter with
other models, whose folders may hold helper modules of the same name (a `utils.py` beside each of
two models). So each such instance imports its `model.py` under a module name of its own, and
every module it imports from its folder while loading (top level of model.py, auto_complete_config,
initialize) or finalizing is taken out of sys.modules afterwards and kept with the instance: the
next model then imports its own `utils`, and each model keeps the one it bound. A sibling module
first imported inside `execute` is not found in-process (its folder is on sys.path only during
load and finalize): import helpers at the top of model.py.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import itertools
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from server.errors import LoadError

# sys.path and sys.modules belong to the whole process: one in-process import scope at a time.
_SCOPE_LOCK = threading.Lock()
_NUMBERS = itertools.count(1)


class ModelImports:
    """The module of one instance's model.py and the helper modules it imported."""

    def __init__(self, folder: Path, *, in_process: bool, instance_name: str) -> None:
        self.folder = folder
        self.in_process = in_process
        if in_process:
            safe_name = re.sub(r"\W", "_", instance_name)
            self.module_name = f"tritonctl_model_{next(_NUMBERS)}_{safe_name}"
        else:
            self.module_name = "model"
        self._private: dict[str, ModuleType] = {}  # helper name -> this instance's module (in-process)
        self._on_path = False

    def import_model(self, path: Path) -> ModuleType:
        """Import `path` as this instance's model module (call inside `scope()`)."""
        spec = importlib.util.spec_from_file_location(self.module_name, path)
        if spec is None or spec.loader is None:
            raise LoadError(f"cannot import python model file '{path}'")
        module = importlib.util.module_from_spec(spec)
        # Registered before it runs: dataclasses, pickle and typing look their module up by name.
        sys.modules[self.module_name] = module
        spec.loader.exec_module(module)
        return module

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Where the model's code may import its sibling modules: loading and finalizing."""
        if not self.in_process:
            if not self._on_path:  # a worker process: the folder stays in front, as in Triton
                sys.path.insert(0, str(self.folder))
                self._on_path = True
            yield
            return
        with _SCOPE_LOCK:
            shadowed = {name: sys.modules[name] for name in self._private if name in sys.modules}
            sys.modules.update(self._private)
            before = set(sys.modules)
            sys.path.insert(0, str(self.folder))
            importlib.invalidate_caches()  # the folder's files may be newer than the finder's listing
            try:
                yield
            finally:
                with contextlib.suppress(ValueError):
                    sys.path.remove(str(self.folder))
                self._keep_new_modules(before)
                for name, module in self._private.items():
                    if sys.modules.get(name) is module:
                        del sys.modules[name]
                sys.modules.update(shadowed)

    def _keep_new_modules(self, before: set[str]) -> None:
        folder = self.folder.resolve()
        for name in [name for name in sys.modules if name not in before and name != self.module_name]:
            if _lies_in(sys.modules[name], folder):
                self._private[name] = sys.modules[name]

    def release(self) -> None:
        """Forget the instance's modules (after finalize, or when loading failed)."""
        if self.in_process:
            sys.modules.pop(self.module_name, None)
            self._private.clear()


def _lies_in(module: ModuleType, folder: Path) -> bool:
    """Whether a module was loaded from a file (or package folder) under `folder`."""
    locations = [getattr(module, "__file__", None), *list(getattr(module, "__path__", []) or [])[:1]]
    for location in locations:
        if isinstance(location, str):
            with contextlib.suppress(OSError, ValueError):
                if Path(location).resolve().is_relative_to(folder):
                    return True
    return False
