"""Requests serialized once, before the load starts: the hot loop only writes prebuilt bytes.

gRPC payloads are `ModelInferRequest` messages (tensor bytes in `raw_input_contents`). HTTP payloads
are whole HTTP/1.1 requests: by default Triton's binary tensor extension (JSON header, then raw
bytes, outputs asked back in binary), or plain KServe v2 JSON for servers without that extension.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import orjson

from tritonctl.perf.inputs import Array, InputSpec


def tensor_bytes(datatype: str, array: Array) -> bytes:
    if datatype == "BYTES":
        from server.vocabulary.dtypes import serialize_bytes

        return serialize_bytes(array)
    return np.ascontiguousarray(array).tobytes()


def grpc_payload(model: str, version: str, specs: list[InputSpec], step: dict[str, Array]) -> bytes:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for spec in specs:
        array = step[spec.name]
        tensor = request.inputs.add()
        tensor.name = spec.name
        tensor.datatype = spec.datatype
        tensor.shape.extend(int(d) for d in array.shape)
        request.raw_input_contents.append(tensor_bytes(spec.datatype, array))
    payload: bytes = request.SerializeToString()
    return payload


def _json_data(datatype: str, array: Array) -> list[Any]:
    flat = array.ravel()
    if datatype == "BYTES":
        return [item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item) for item in flat]
    if datatype == "BF16":  # carried as raw uint16 words; JSON needs the float value
        return [float(v) for v in (flat.astype(np.uint32) << 16).view(np.float32)]
    values: list[Any] = flat.tolist()
    return values


def http_infer_path(model: str, version: str) -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"


def http_payload(
    host: str,
    *,
    model: str,
    version: str,
    specs: list[InputSpec],
    step: dict[str, Array],
    encoding: Literal["binary", "json"] = "binary",
) -> bytes:
    """A complete HTTP/1.1 keep-alive request, ready to write to a socket."""
    extra_headers = ""
    if encoding == "binary":
        raw = [tensor_bytes(spec.datatype, step[spec.name]) for spec in specs]
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": spec.name,
                        "datatype": spec.datatype,
                        "shape": list(step[spec.name].shape),
                        "parameters": {"binary_data_size": len(data)},
                    }
                    for spec, data in zip(specs, raw, strict=True)
                ],
                "parameters": {"binary_data_output": True},
            }
        )
        body = header + b"".join(raw)
        content_type = "application/octet-stream"
        extra_headers = f"Inference-Header-Content-Length: {len(header)}\r\n"
    else:
        body = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": spec.name,
                        "datatype": spec.datatype,
                        "shape": list(step[spec.name].shape),
                        "data": _json_data(spec.datatype, step[spec.name]),
                    }
                    for spec in specs
                ]
            }
        )
        content_type = "application/json"
    head = (
        f"POST {http_infer_path(model, version)} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"{extra_headers}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body
