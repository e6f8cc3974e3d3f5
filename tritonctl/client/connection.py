"""One small client API over tritonclient's HTTP and gRPC clients, for the CLI and the tools.

Any Triton-compatible server works (ours or the real one). tritonclient, gevent and grpc load
only when a `TritonConnection` is created, so importing this module stays cheap. Server errors
arrive as tritonclient's `InferenceServerException` and leave as our ServerError classes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from server.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerError,
    Unsupported,
)

PROTOCOLS = ("http", "grpc")
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
T = TypeVar("T")

# tritonclient reports HTTP statuses as numbers and gRPC ones as "StatusCode.NAME".
_STATUS_ERRORS: dict[str, type[ServerError]] = {
    "400": InvalidInput,
    "404": ModelNotFound,
    "501": Unsupported,
    "503": ModelNotReady,
    "StatusCode.INVALID_ARGUMENT": InvalidInput,
    "StatusCode.NOT_FOUND": ModelNotFound,
    "StatusCode.UNIMPLEMENTED": Unsupported,
    "StatusCode.UNAVAILABLE": ModelNotReady,
}


class ConnectionFailed(ServerError):
    """Nothing answered at the URL (server down, wrong port or protocol)."""

    http_status = 503


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]  # -1 for variable dimensions (the batch dimension included)
    optional: bool = False  # the config marks the input `optional: true`


@dataclass(frozen=True)
class ModelSignature:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        known = ", ".join(spec.name for spec in self.inputs)
        raise InvalidInput(f"model '{self.name}' has no input '{name}' (its inputs: {known})")


def normalize_url(url: str | None, protocol: str) -> str:
    """`None` -> 127.0.0.1 on the protocol's default port; `http://h:p/` -> `h:p`."""
    if protocol not in PROTOCOLS:
        raise InvalidInput(f"unknown protocol '{protocol}' (use http or grpc)")
    if not url:
        return f"127.0.0.1:{DEFAULT_PORTS[protocol]}"
    for scheme in ("http://", "grpc://"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
    if url.startswith("https://"):
        raise Unsupported("https URLs are not supported by tritonctl's client; use plain http")
    return url.rstrip("/")


def _translate(exc: Exception, url: str) -> ServerError:
    status = str(getattr(exc, "status", lambda: None)() or "")
    message = str(getattr(exc, "message", lambda: str(exc))() or exc)
    if status in _STATUS_ERRORS:
        return _STATUS_ERRORS[status](message)
    lowered = message.lower()
    if "connect" in lowered or "unavailable" in lowered or "refused" in lowered:
        return ConnectionFailed(f"no Triton-compatible server answers at {url}: {message}")
    return ServerError(message if not status else f"[{status}] {message}")


class TritonConnection:
    """A client for one server over one protocol."""

    def __init__(self, url: str | None = None, protocol: str = "http", timeout: float = 60.0) -> None:
        self.protocol = protocol
        self.url = normalize_url(url, protocol)
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
        self._module: Any = module
        if protocol == "http":
            self._client: Any = module.InferenceServerClient(
                self.url, connection_timeout=timeout, network_timeout=timeout
            )
        else:
            self._client = module.InferenceServerClient(self.url)
        self._timeout = timeout

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        from tritonclient.utils import InferenceServerException

        try:
            yield
        except InferenceServerException as exc:
            raise _translate(exc, self.url) from None
        except (ConnectionError, OSError) as exc:
            raise ConnectionFailed(f"no Triton-compatible server answers at {self.url}: {exc}") from None

    def _call(self, action: Callable[[], T]) -> T:
        with self._errors():
            return action()

    # -- metadata --------------------------------------------------------------------------------
    def server_live(self) -> bool:
        return bool(self._call(self._client.is_server_live))

    def model_ready(self, model: str, version: str = "") -> bool:
        return bool(self._call(lambda: self._client.is_model_ready(model, version)))

    def signature(self, model: str, version: str = "") -> ModelSignature:
        if self.protocol == "http":
            raw = self._call(lambda: self._client.get_model_metadata(model, version))
        else:
            raw = self._call(lambda: self._client.get_model_metadata(model, version, as_json=True))

        # Metadata does not say which inputs may be left out; the config does.
        optional = {
            item.get("name")
            for item in self.model_config(model, version).get("input", [])
            if item.get("optional")
        }

        def specs(items: list[dict[str, Any]]) -> list[TensorSpec]:
            return [
                TensorSpec(
                    t["name"], t["datatype"], [int(d) for d in t.get("shape", [])], t["name"] in optional
                )
                for t in items
            ]

        return ModelSignature(
            raw["name"],
            list(raw.get("versions", [])),
            raw.get("platform", ""),
            specs(raw.get("inputs", [])),
            specs(raw.get("outputs", [])),
        )

    def model_config(self, model: str, version: str = "") -> dict[str, Any]:
        """The config as Triton's HTTP endpoint shows it (numbers as numbers, over gRPC too)."""
        if self.protocol == "http":
            return dict(self._call(lambda: self._client.get_model_config(model, version)))
        from server.repository import config_to_json

        response = self._call(lambda: self._client.get_model_config(model, version))
        return config_to_json(response.config)

    def model_statistics(self, model: str = "", version: str = "") -> list[dict[str, Any]]:
        if self.protocol == "http":
            raw = self._call(lambda: self._client.get_inference_statistics(model, version))
        else:
            raw = self._call(lambda: self._client.get_inference_statistics(model, version, as_json=True))
        return list(raw.get("model_stats", []))

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        if self.protocol == "http":
            entries = self._call(self._client.get_model_repository_index)
        else:
            entries = self._call(lambda: self._client.get_model_repository_index(as_json=True)).get(
                "models", []
            )
        result = [dict(entry) for entry in entries]
        return [e for e in result if e.get("state") == "READY"] if ready_only else result

    def load_model(self, model: str, config_json: str | None = None) -> None:
        self._call(lambda: self._client.load_model(model, config=config_json))

    def unload_model(self, model: str) -> None:
        self._call(lambda: self._client.unload_model(model))

    # -- inference -------------------------------------------------------------------------------
    def infer(
        self,
        model: str,
        inputs: dict[str, tuple[str, npt.NDArray[Any]]],
        outputs: list[str] | None = None,
        version: str = "",
    ) -> InferAnswer:
        """`inputs`: name -> (Triton datatype, array). Binary tensors over HTTP."""
        infer_inputs = []
        for name, (datatype, array) in inputs.items():
            tensor = self._module.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            infer_inputs.append(tensor)
        requested = [self._module.InferRequestedOutput(name) for name in outputs or []] or None
        result = self._call(
            lambda: self._client.infer(model, infer_inputs, model_version=version, outputs=requested)
        )
        response = result.get_response(as_json=True) if self.protocol == "grpc" else result.get_response()
        tensors: list[OutputTensor] = []
        for output in response.get("outputs", []):
            name = output["name"]
            data = result.as_numpy(name)
            tensors.append(OutputTensor(name, output["datatype"], [int(d) for d in output["shape"]], data))
        return InferAnswer(response.get("model_name", model), str(response.get("model_version", "")), tensors)


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    data: npt.NDArray[Any]

    def to_json(self) -> dict[str, Any]:
        values = self.data
        if values.dtype.name == "bfloat16":  # ml_dtypes: print as ordinary floats
            values = values.astype(np.float32)
        if values.dtype == np.object_:
            values = np.vectorize(_text, otypes=[object])(values) if values.size else values
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape, "data": values.tolist()}


def _text(item: Any) -> Any:
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError:
            return item.hex()
    return item


@dataclass(frozen=True)
class InferAnswer:
    model_name: str
    model_version: str
    outputs: list[OutputTensor]

    def to_json(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "outputs": [output.to_json() for output in self.outputs],
        }

    def to_text(self) -> str:
        return json.dumps(self.to_json())
