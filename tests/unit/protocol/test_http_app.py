"""HttpApp routes, views (views.py) and compression through `HttpApp.handle`, on real in-process models."""

from __future__ import annotations

import base64
import gzip
import zlib
from typing import Any

import orjson
import pytest

from server.core.dataplane import DataPlane
from server.protocol.http.routes import HttpApp, HttpRequest, HttpResponse, InferCall
from server.vocabulary.restrictions import parse_restrictions
from tests.unit.protocol.http_harness import (
    INFER,
    MAX_INPUT_SIZE,
    Http,
    error_of,
    fp32_input,
    gzipped,
    infer_body,
    json_of,
)


def other_app(http: Http, dataplane: DataPlane) -> Http:
    return Http(http.loop, dataplane, HttpApp(dataplane, MAX_INPUT_SIZE), http.repo)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 404),
        ("GET", "/v1/models", 404),
        ("GET", "/v2/nothing", 404),
        ("POST", "/v2", 405),
        ("POST", "/v2/health/live", 405),
        ("GET", "/v2/health/sleepy", 404),
        ("GET", "/v2/models", 404),
        ("POST", "/v2/models/stats", 405),
        ("GET", "/v2/models/identity/versions/one", 404),
        ("GET", "/v2/models/identity/infer", 405),
        ("POST", "/v2/models/identity", 405),
        ("POST", "/v2/models/identity/config", 405),
        ("GET", "/v2/models/identity/nothing", 404),
        ("GET", "/v2/repository/index", 405),
        ("POST", "/v2/repository/models/spare/reload", 404),
        ("POST", "/v2/repository/nothing", 404),
    ],
)
def test_unknown_routes_are_404_and_wrong_methods_405(
    http: Http, method: str, path: str, status: int
) -> None:
    response = http.call(method, path)
    assert response.status == status
    assert response.content_type == "text/plain"
    assert error_of(response) == ("Not Found" if status == 404 else "Method Not Allowed")


@pytest.mark.parametrize(
    "path",
    ["/v2/trace/setting"],
)
def test_extensions_this_server_lacks_are_501(http: Http, path: str) -> None:
    response = http.get(path)
    assert response.status == 501 and "is not supported by this server" in error_of(response)
    assert http.get("/v2/models/identity/trace/setting").status == 501


def test_health_follows_the_dataplane(http: Http) -> None:
    live, ready = http.get("/v2/health/live"), http.get("/v2/health/ready")
    assert (live.status, live.body, live.content_type) == (200, b"", "text/plain")
    assert (ready.status, ready.body) == (400, b"")  # strict readiness: 'broken' failed to load
    lenient = DataPlane(http.dataplane.registry, strict_readiness=False)
    lenient.mark_started()
    assert other_app(http, lenient).get("/v2/health/ready").status == 200
    starting = other_app(http, DataPlane(http.dataplane.registry, strict_readiness=False))  # not started
    assert starting.get("/v2/health/live").status == 200
    assert starting.get("/v2/health/ready").status == 400
    starting.dataplane.mark_exiting()
    assert starting.get("/v2/health/live").status == 400


def test_server_metadata(http: Http) -> None:
    metadata = json_of(http.get("/v2"))
    assert metadata["name"] == "triton"
    assert {"binary_tensor_data", "classification", "statistics"} <= set(metadata["extensions"])
    assert "cuda_shared_memory" not in metadata["extensions"]  # no GPU seen: Triton's CPU build's list
    with_gpus = other_app(http, DataPlane(http.dataplane.registry, sees_gpus=True))
    assert "cuda_shared_memory" in json_of(with_gpus.get("/v2"))["extensions"]


def test_model_metadata_batched_and_not(http: Http) -> None:
    assert json_of(http.get("/v2/models/identity")) == {
        "name": "identity",
        "versions": ["1"],
        "platform": "python",
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 4]}],
    }
    flat = json_of(http.get("/v2/models/flat/versions/1"))
    assert flat["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [4]}]
    missing = http.get("/v2/models/ghost")
    assert missing.status == 404 and error_of(missing) == "Request for unknown model: 'ghost' is not found"


def test_model_readiness(http: Http) -> None:
    assert http.get("/v2/models/identity/ready").status == 200
    assert http.get("/v2/models/identity/versions/1/ready").status == 200
    for path in ("/v2/models/spare/ready", "/v2/models/broken/ready", "/v2/models/ghost/ready"):
        response = http.get(path)
        assert response.status == 400 and error_of(response) == "Model version not ready", path


def test_config_is_the_proto_in_declaration_order_with_numbers_and_enum_names(http: Http) -> None:
    config = json_of(http.get("/v2/models/identity/config"))
    declared = [field.name for field in http.dataplane.model_config("identity").DESCRIPTOR.fields]
    assert list(config) == [name for name in declared if name in config]
    assert config["name"] == "identity" and config["backend"] == "python"
    assert config["max_batch_size"] == 8  # a number, not a string
    assert config["input"][0]["data_type"] == "TYPE_FP32" and config["input"][0]["dims"] == [4]
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    assert config["parameters"]["TRITONCTL_INSTANCE_MODE"] == {"string_value": "inline"}  # a map
    assert "dynamic_batching" not in config  # an unset sub-message is left out
    assert config["version_policy"] == {"latest": {"num_versions": 1}}  # a oneof member that is set


def test_statistics_list_every_field_with_response_stats_after_inference_stats(http: Http) -> None:
    inputs = fp32_input([1, 2, 3, 4]), fp32_input([2, 2, 2, 2], name="INPUT1")
    assert http.post("/v2/models/add_sub/infer", infer_body(*inputs)).status == 200
    for path in ("/v2/models/add_sub/stats", "/v2/models/add_sub/versions/1/stats"):
        [stats] = json_of(http.get(path))["model_stats"]
        keys = list(stats)
        assert keys[keys.index("inference_stats") + 1] == "response_stats"
        assert (stats["name"], stats["version"]) == ("add_sub", "1")
        assert stats["execution_count"] == 1 and stats["inference_count"] == 1
        assert stats["inference_stats"]["success"]["count"] == 1
        assert stats["inference_stats"]["cache_hit"] == {"count": 0, "ns": 0}  # unset, still written
    every = {entry["name"] for entry in json_of(http.get("/v2/models/stats"))["model_stats"]}
    assert every == {"identity", "flat", "strings", "half", "add_sub"}
    unknown = http.get("/v2/models/ghost/stats")
    assert unknown.status == 400 and error_of(unknown) == "requested model 'ghost' is not available"


def test_repository_index_omits_empty_fields(http: Http) -> None:
    index = {entry["name"]: entry for entry in json_of(http.post("/v2/repository/index"))}
    assert index["spare"] == {"name": "spare"}  # never loaded
    assert index["identity"] == {"name": "identity", "version": "1", "state": "READY"}
    assert index["broken"]["state"] == "UNAVAILABLE"
    assert "initialize failed on purpose" in index["broken"]["reason"]
    ready = json_of(http.post("/v2/repository/index", {"ready": True}))
    assert {entry["name"] for entry in ready} == {"identity", "flat", "strings", "half", "add_sub"}
    compressed = http.post("/v2/repository/index", gzipped({"ready": True}), content_encoding="gzip")
    assert json_of(compressed) == ready


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v2/repository/index", b"{nope", "failed to parse the request JSON buffer"),
        ("/v2/repository/index", b"[]", "failed to parse the request JSON buffer: expected a JSON object"),
        ("/v2/repository/models/spare/load", b'{"parameters": [1]}', "Unable to parse 'parameters'"),
        ("/v2/repository/models/spare/load", b'{"parameters": {"file:1/model.py": 7}}', "must be a base64"),
        (
            "/v2/repository/models/spare/load",
            b'{"parameters": {"file:1/model.py": "!!"}}',
            "is not valid base64",
        ),
    ],
)
def test_malformed_repository_requests_are_400(http: Http, path: str, body: bytes, message: str) -> None:
    response = http.post(path, body)
    assert response.status == 400 and message in error_of(response)


def test_load_and_unload_in_explicit_mode(http: Http) -> None:
    loaded = http.post("/v2/repository/models/spare/load")
    assert (loaded.status, loaded.body) == (200, b"")
    assert http.get("/v2/models/spare/ready").status == 200
    answer = json_of(http.post("/v2/models/spare/infer", infer_body(fp32_input([5, 6, 7, 8]))))
    assert answer["outputs"][0]["data"] == [5.0, 6.0, 7.0, 8.0]
    unloaded = http.post("/v2/repository/models/spare/unload", {"parameters": {"unload_dependents": True}})
    assert unloaded.status == 200
    assert http.get("/v2/models/spare/ready").status == 400


def test_load_with_a_config_object_and_files(http: Http) -> None:
    config = orjson.loads(http.get("/v2/models/identity/config").body)
    config.update(name="spare", max_batch_size=2)
    source = (http.repo / "identity" / "1" / "model.py").read_bytes()
    files = {"file:1/model.py": base64.b64encode(source).decode()}
    response = http.post("/v2/repository/models/spare/load", {"parameters": {"config": config, **files}})
    assert response.status == 200, response.body
    try:
        assert json_of(http.get("/v2/models/spare/config"))["max_batch_size"] == 2
    finally:
        assert http.post("/v2/repository/models/spare/unload").status == 200


def test_load_and_unload_are_refused_outside_explicit_mode(http: Http) -> None:
    polling = other_app(http, DataPlane(http.dataplane.registry))
    for action in ("load", "unload"):
        response = polling.post(f"/v2/repository/models/spare/{action}")
        assert response.status == 503
        assert error_of(response) == "explicit model load / unload is not allowed if polling is enabled"


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_request_bodies(http: Http, encoding: str, compress: Any) -> None:
    body = compress(orjson.dumps(infer_body(fp32_input([9, 8, 7, 6]))))
    response = http.post(INFER, body, content_encoding=encoding)
    assert json_of(response)["outputs"][0]["data"] == [9.0, 8.0, 7.0, 6.0]


def test_bad_request_encodings(http: Http) -> None:
    plain = orjson.dumps(infer_body(fp32_input([1, 2, 3, 4])))
    assert http.post(INFER, plain, content_encoding="identity").status == 200
    unknown = http.post(INFER, plain, content_encoding="br")
    assert unknown.status == 501
    assert error_of(unknown) == "unsupported Content-Encoding 'br' (gzip and deflate are supported)"
    corrupt = http.post(INFER, b"\x1f\x8bnot gzip at all", content_encoding="gzip")
    assert corrupt.status == 400 and "failed to decompress the gzip request body" in error_of(corrupt)
    bomb = http.post(INFER, gzip.compress(b" " * (MAX_INPUT_SIZE + 1)), content_encoding="gzip")
    assert bomb.status == 400
    assert error_of(bomb) == (
        f"decompressed request body exceeds the maximum of {MAX_INPUT_SIZE} bytes (--http-max-input-size)"
    )


def test_answers_are_compressed_when_asked_and_successful(http: Http) -> None:
    body = infer_body(fp32_input([1, 2, 3, 4]))
    plain = http.post(INFER, body)
    zipped = http.post(INFER, body, accept_encoding="deflate;q=0.5, gzip")
    assert ("Content-Encoding", "gzip") in zipped.headers
    assert gzip.decompress(zipped.body) == plain.body
    deflated = http.post(INFER, body, accept_encoding="deflate")
    assert ("Content-Encoding", "deflate") in deflated.headers
    assert zlib.decompress(deflated.body) == plain.body
    assert http.post(INFER, body, accept_encoding="br").body == plain.body  # nothing we offer
    error = http.post(INFER, b"{", accept_encoding="gzip")
    assert error.status == 400 and error.headers == []  # errors stay readable
    empty = http.get("/v2/health/live", accept_encoding="gzip")
    assert empty.headers == [] and empty.body == b""
    metadata = http.get("/v2", accept_encoding="gzip")  # like Triton: only inference answers
    assert metadata.headers == [] and json_of(metadata)["name"] == "triton"


def test_a_compressed_binary_answer_carries_its_tensors_inside(http: Http) -> None:
    body = infer_body(fp32_input([1, 2, 3, 4]), parameters={"binary_data_output": True})
    plain = http.post(INFER, body)
    zipped = http.post(INFER, body, accept_encoding="gzip")
    assert zipped.tail == [] and zipped.content_type == "application/octet-stream"
    assert ("Inference-Header-Content-Length", str(len(plain.body))) in zipped.headers
    assert gzip.decompress(zipped.body) == plain.body + b"".join(bytes(part) for part in plain.tail)


def test_restricted_groups_need_their_header(http: Http) -> None:
    restrictions = parse_restrictions(["inference,statistics:admin-key=s3cret"], flag="--http-restricted-api")
    guarded = http.with_restrictions(restrictions)
    body = infer_body(fp32_input([1, 2, 3, 4]))
    denied = guarded.post(INFER, body)
    assert denied.status == 403 and error_of(denied) == "This API is restricted, expecting header 'admin-key'"
    assert guarded.post(INFER, body, admin_key="wrong").status == 403
    assert guarded.post(INFER, body, admin_key="s3cret").status == 200
    assert guarded.get("/v2/models/identity/stats").status == 403
    assert guarded.get("/v2/models/identity").status == 200  # metadata is not restricted
    # The socket layer's hot path checks the header too.
    refused = guarded.start_infer(HttpRequest("POST", INFER, {}, orjson.dumps(body)))
    assert isinstance(refused, HttpResponse) and refused.status == 403
    call = guarded.start_infer(HttpRequest("POST", INFER, {"admin-key": "s3cret"}, orjson.dumps(body)))
    assert isinstance(call, InferCall) and guarded.finish_infer(call).status == 200


class _Broken(DataPlane):
    def server_metadata(self) -> dict[str, Any]:
        raise RuntimeError("boom")


def test_a_bug_is_a_500_and_the_app_keeps_serving(http: Http) -> None:
    broken = other_app(http, _Broken(http.dataplane.registry))
    response = broken.get("/v2")
    assert response.status == 500 and error_of(response) == "internal error: RuntimeError: boom"
    assert broken.get("/v2/health/live").status == 200
