"""Restricted API groups: parsing Triton's flag syntax and mapping routes and RPCs to groups."""

from __future__ import annotations

import pytest
from tritonclient.grpc import service_pb2

from server.errors import ConfigError
from server.protocol.restricted import GRPC_CATEGORIES, http_category, http_denial
from server.vocabulary.restrictions import CATEGORIES, GRPC_HEADER_PREFIX, Restriction, parse_restrictions


def test_groups_share_one_key_value() -> None:
    parsed = parse_restrictions(["model-repository, statistics:Admin-Key=s3:cr=t"], flag="--x")
    assert parsed == {
        "model-repository": Restriction("Admin-Key", "s3:cr=t"),
        "statistics": Restriction("Admin-Key", "s3:cr=t"),
    }
    assert parsed["statistics"].key == "admin-key"


def test_grpc_keys_get_triton_prefix() -> None:
    parsed = parse_restrictions(["inference:k=v"], flag="--x", header_prefix=GRPC_HEADER_PREFIX)
    assert parsed["inference"].header == "triton-grpc-protocol-k"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["health"], "must look like"),
        (["health:key"], "must look like"),
        ([":k=v"], "must look like"),
        (["health:=v"], "must look like"),
        (["healthz:k=v"], "unknown restricted api 'healthz'"),
        (["health:k=v", "health,metadata:k2=v"], "can not be specified in multiple config groups"),
        (["health,health:k=v"], "multiple config groups"),
    ],
)
def test_bad_entries_are_config_errors(entries: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_restrictions(entries, flag="--http-restricted-api")


@pytest.mark.parametrize(
    ("path", "category"),
    [
        ("/v2", "metadata"),
        ("/v2/", "metadata"),
        ("/v2/health/live", "health"),
        ("/v2/health/ready", "health"),
        ("/v2/models/m/ready", "health"),
        ("/v2/models/m/versions/2/ready", "health"),
        ("/v2/models/m", "metadata"),
        ("/v2/models/m/versions/3", "metadata"),
        ("/v2/models/m/config", "model-config"),
        ("/v2/models/m/stats", "statistics"),
        ("/v2/models/stats", "statistics"),
        ("/v2/models/m/infer", "inference"),
        ("/v2/models/m/versions/1/infer", "inference"),
        ("/v2/models/m/generate", "inference"),
        ("/v2/repository/index", "model-repository"),
        ("/v2/repository/models/m/load", "model-repository"),
        ("/v2/systemsharedmemory/status", "shared-memory"),
        ("/v2/cudasharedmemory/region/r/register", "shared-memory"),
        ("/v2/trace/setting", "trace"),
        ("/v2/models/m/trace/setting", "trace"),
        ("/v2/logging", "logging"),
        ("/metrics", None),
        ("/v2/models/m/unknown", None),
    ],
)
def test_http_routes_belong_to_triton_groups(path: str, category: str | None) -> None:
    assert http_category(path) == category


def test_http_denial_needs_the_exact_value() -> None:
    restrictions = {"inference": Restriction("Api-Key", "abc")}
    path = "/v2/models/m/infer"
    assert http_denial(restrictions, path, {}) == "This API is restricted, expecting header 'Api-Key'"
    assert http_denial(restrictions, path, {"api-key": "abd"}) is not None
    assert http_denial(restrictions, path, {"api-key": "abc"}) is None
    assert http_denial(restrictions, "/v2/health/live", {}) is None


def test_every_rpc_of_the_service_has_a_group() -> None:
    methods = set(service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name)
    assert methods == set(GRPC_CATEGORIES)
    assert set(GRPC_CATEGORIES.values()) == set(CATEGORIES)
