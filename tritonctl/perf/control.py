"""The few control calls perf and tune make (metadata, config, statistics, repository load), both protocols.

Blocking and deliberately small: these calls happen between measurement windows, never on the hot
path. Endpoints a server may lack (config, statistics: MLServer has neither) answer None instead of
raising, so a run goes on without them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tritonctl.perf.errors import ModelControlRefused, PerfError
from tritonctl.perf.settings import Protocol as WireProtocol

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

STAT_FIELDS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str  # wire name, e.g. FP32; "" when the server does not say
    shape: list[int]  # -1 marks a variable dimension (the batch dimension included)


@dataclass(frozen=True)
class ModelInfo:
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


@dataclass(frozen=True)
class StatsSnapshot:
    """Cumulative statistics of one model (all versions summed): (count, ns) per duration kind."""

    durations: dict[str, tuple[int, int]]
    inference_count: int
    execution_count: int

    def minus(self, earlier: StatsSnapshot) -> StatsSnapshot:
        return StatsSnapshot(
            {
                key: (count - earlier.durations[key][0], ns - earlier.durations[key][1])
                for key, (count, ns) in self.durations.items()
            },
            self.inference_count - earlier.inference_count,
            self.execution_count - earlier.execution_count,
        )

    def average_us(self, key: str) -> float:
        count, ns = self.durations[key]
        return ns / count / 1000.0 if count > 0 else 0.0


class ControlClient(Protocol):
    """What perf and tune need from a server besides inference."""

    def model_info(self, model: str, version: str = "") -> ModelInfo: ...
    def model_config(self, model: str, version: str = "") -> model_config_pb2.ModelConfig | None: ...
    def statistics(self, model: str, version: str = "") -> StatsSnapshot | None: ...
    def load_model(self, model: str, config: model_config_pb2.ModelConfig | None = None) -> None: ...
    def close(self) -> None: ...


def config_to_override_json(config: model_config_pb2.ModelConfig) -> str:
    """The JSON a repository load takes as its `config` parameter."""
    from google.protobuf import json_format

    return json_format.MessageToJson(config, preserving_proto_field_name=True, indent=None)


def config_from_json(data: dict[str, Any]) -> model_config_pb2.ModelConfig:
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    return json_format.ParseDict(data, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)


def _snapshot_from_json(stats: dict[str, Any]) -> StatsSnapshot:
    totals = dict.fromkeys(STAT_FIELDS, (0, 0))
    inferences = executions = 0
    for entry in stats.get("model_stats", []):
        block = entry.get("inference_stats", {})
        for key in STAT_FIELDS:
            item = block.get(key, {})
            count, ns = totals[key]
            totals[key] = (count + int(item.get("count", 0)), ns + int(item.get("ns", 0)))
        inferences += int(entry.get("inference_count", 0))
        executions += int(entry.get("execution_count", 0))
    return StatsSnapshot(totals, inferences, executions)


def _refused_message(model: str, detail: str) -> str:
    return (
        f"the server refused to load {model!r} over the repository API: {detail}. "
        "tune needs the server in explicit model-control mode "
        "(tritonserver / tritonctl serve --model-control-mode=explicit)"
    )


class HttpControlClient:
    """Control calls over KServe v2 REST with Triton's extensions."""

    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        import httpx

        self._client = httpx.Client(base_url=f"http://{url}", timeout=timeout_s)

    def _get(self, path: str) -> tuple[int, Any]:
        import httpx

        try:
            response = self._client.get(path)
        except httpx.HTTPError as exc:
            raise PerfError(f"cannot reach the server at {self._client.base_url}: {exc}") from exc
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {"error": response.text[:200]}
        return response.status_code, body

    @staticmethod
    def _version_path(model: str, version: str) -> str:
        return f"/v2/models/{model}" + (f"/versions/{version}" if version else "")

    def model_info(self, model: str, version: str = "") -> ModelInfo:
        status, body = self._get(self._version_path(model, version))
        if status != 200:
            raise PerfError(f"model {model!r}: metadata request failed ({status}): {_error_text(body)}")
        return ModelInfo(_tensors(body.get("inputs", [])), _tensors(body.get("outputs", [])))

    def model_config(self, model: str, version: str = "") -> model_config_pb2.ModelConfig | None:
        status, body = self._get(self._version_path(model, version) + "/config")
        if status != 200 or not isinstance(body, dict):
            return None
        return config_from_json(body)

    def statistics(self, model: str, version: str = "") -> StatsSnapshot | None:
        status, body = self._get(self._version_path(model, version) + "/stats")
        if status != 200 or not isinstance(body, dict) or "model_stats" not in body:
            return None
        return _snapshot_from_json(body)

    def load_model(self, model: str, config: model_config_pb2.ModelConfig | None = None) -> None:
        import httpx

        payload: dict[str, Any] = {}
        if config is not None:
            payload["parameters"] = {"config": config_to_override_json(config)}
        try:
            response = self._client.post(f"/v2/repository/models/{model}/load", json=payload)
        except httpx.HTTPError as exc:
            raise PerfError(f"cannot reach the server at {self._client.base_url}: {exc}") from exc
        if response.status_code == 200:
            return
        try:
            detail = _error_text(response.json())
        except ValueError:
            detail = response.text[:300] or f"HTTP {response.status_code}"
        if response.status_code in (403, 404, 405, 501) or "not allowed" in detail or "explicit" in detail:
            raise ModelControlRefused(_refused_message(model, detail))
        raise PerfError(f"loading {model!r} failed ({response.status_code}): {detail}")

    def close(self) -> None:
        self._client.close()


class GrpcControlClient:
    """Control calls over Triton's gRPC service (tritonclient's generated stubs)."""

    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        import grpc
        from tritonclient.grpc import service_pb2_grpc

        self._url = url
        self._timeout = timeout_s
        self._channel = grpc.insecure_channel(url)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def _call(self, method: str, request: Any) -> Any:
        return getattr(self._stub, method)(request, timeout=self._timeout)

    def model_info(self, model: str, version: str = "") -> ModelInfo:
        import grpc
        from tritonclient.grpc import service_pb2

        try:
            reply = self._call("ModelMetadata", service_pb2.ModelMetadataRequest(name=model, version=version))
        except grpc.RpcError as exc:
            raise PerfError(f"model {model!r}: metadata request failed: {_grpc_text(exc)}") from exc
        return ModelInfo(
            [TensorInfo(t.name, t.datatype, list(t.shape)) for t in reply.inputs],
            [TensorInfo(t.name, t.datatype, list(t.shape)) for t in reply.outputs],
        )

    def model_config(self, model: str, version: str = "") -> model_config_pb2.ModelConfig | None:
        import grpc
        from tritonclient.grpc import service_pb2

        try:
            reply = self._call("ModelConfig", service_pb2.ModelConfigRequest(name=model, version=version))
        except grpc.RpcError:
            return None
        config: model_config_pb2.ModelConfig = reply.config
        return config

    def statistics(self, model: str, version: str = "") -> StatsSnapshot | None:
        import grpc
        from google.protobuf import json_format
        from tritonclient.grpc import service_pb2

        try:
            reply = self._call(
                "ModelStatistics", service_pb2.ModelStatisticsRequest(name=model, version=version)
            )
        except grpc.RpcError:
            return None
        return _snapshot_from_json(json_format.MessageToDict(reply, preserving_proto_field_name=True))

    def load_model(self, model: str, config: model_config_pb2.ModelConfig | None = None) -> None:
        import grpc
        from tritonclient.grpc import service_pb2

        request = service_pb2.RepositoryModelLoadRequest(model_name=model)
        if config is not None:
            request.parameters["config"].string_param = config_to_override_json(config)
        try:
            self._call("RepositoryModelLoad", request)
        except grpc.RpcError as exc:
            detail = _grpc_text(exc)
            code = exc.code() if hasattr(exc, "code") else None
            refused = code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED)
            if refused or "not allowed" in detail or "explicit" in detail:
                raise ModelControlRefused(_refused_message(model, detail)) from exc
            raise PerfError(f"loading {model!r} failed: {detail}") from exc

    def close(self) -> None:
        self._channel.close()


def _tensors(items: list[dict[str, Any]]) -> list[TensorInfo]:
    return [
        TensorInfo(str(t.get("name", "")), str(t.get("datatype", "")), [int(d) for d in t.get("shape", [])])
        for t in items
    ]


def _error_text(body: Any) -> str:
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return json.dumps(body)[:300]


def _grpc_text(exc: Any) -> str:
    details = exc.details() if hasattr(exc, "details") else None
    return str(details or exc)


def connect(protocol: WireProtocol, url: str) -> ControlClient:
    return GrpcControlClient(url) if protocol == "grpc" else HttpControlClient(url)
