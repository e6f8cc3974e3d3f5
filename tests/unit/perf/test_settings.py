"""Flag parsing for perf/tune: ranges, shapes, datatypes, URLs."""

from __future__ import annotations

import pytest

from tritonctl.perf.errors import PerfUsageError
from tritonctl.perf.settings import LoadLevel, normalize_url, parse_datatype, parse_range, parse_shape


@pytest.mark.parametrize(
    ("text", "values"),
    [("1", [1]), ("1:4", [1, 2, 3, 4]), ("2:8:3", [2, 5, 8]), ("1:6:2", [1, 3, 5])],
)
def test_concurrency_range(text: str, values: list[int]) -> None:
    levels = parse_range(text, "concurrency")
    assert [level.value for level in levels] == values
    assert all(level.mode == "concurrency" for level in levels)


def test_request_rate_range_takes_fractions() -> None:
    levels = parse_range("50:125:37.5", "request_rate")
    assert [level.value for level in levels] == [50.0, 87.5, 125.0]
    assert levels[0].label == "50 req/s"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "START:END"),
        ("1:2:3:4", "START:END"),
        ("a:2", "not a number"),
        ("0:4", "greater than 0"),
        ("4:1", "END must not be smaller"),
        ("1:4:0", "greater than 0"),
        ("1.5:3", "whole numbers"),
        ("1:100000", "too many"),
    ],
)
def test_bad_concurrency_ranges_say_why(text: str, message: str) -> None:
    with pytest.raises(PerfUsageError, match=message):
        parse_range(text, "concurrency")


def test_bad_rate_names_its_flag() -> None:
    with pytest.raises(PerfUsageError, match="--request-rate-range"):
        parse_range("nan", "request_rate")


def test_shape_and_datatype() -> None:
    assert parse_shape("INPUT0:3,224,224") == ("INPUT0", [3, 224, 224])
    assert parse_shape("a:b:4") == ("a:b", [4])  # the last colon separates the dims
    assert parse_datatype("x:fp32") == ("x", "FP32")
    assert parse_datatype("x:TYPE_STRING") == ("x", "BYTES")
    for bad in ("INPUT0", "INPUT0:3,x", "INPUT0:-1"):
        with pytest.raises(PerfUsageError, match="--shape"):
            parse_shape(bad)
    with pytest.raises(PerfUsageError, match="unknown datatype"):
        parse_datatype("x:FLOAT")


def test_urls() -> None:
    assert normalize_url(None, "grpc") == "127.0.0.1:8001"
    assert normalize_url(None, "http") == "127.0.0.1:8000"
    assert normalize_url("http://host:9000/", "http") == "host:9000"
    assert normalize_url("host", "grpc") == "host:8001"
    with pytest.raises(PerfUsageError, match="TLS"):
        normalize_url("https://host:1", "http")
    with pytest.raises(PerfUsageError, match="no path"):
        normalize_url("host:1/v2", "http")


def test_level_labels() -> None:
    assert LoadLevel("concurrency", 4).label == "concurrency 4"


def test_auto_workers_never_exceed_the_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    from tritonctl.perf.settings import auto_workers

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert auto_workers(parse_range("1", "concurrency")) == 1
    assert auto_workers(parse_range("1:8", "concurrency")) == 4
    assert auto_workers(parse_range("100", "request_rate")) == 4
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert auto_workers(parse_range("8", "concurrency")) == 2
