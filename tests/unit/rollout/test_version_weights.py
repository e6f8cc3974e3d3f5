"""The `version_weights` parameter: parsing, the validate rule, and the server's weighted router."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from server.core.routing import WeightedVersionRouter
from server.repository import check_model_config
from server.repository.version_weights import (
    VersionWeightsError,
    format_version_weights,
    parse_version_weights,
    version_weights_problem,
)


def test_parse_and_format_round_trip() -> None:
    assert parse_version_weights("1:90, 2:10") == {1: 90, 2: 10}
    assert parse_version_weights("3:1") == {3: 1}
    assert format_version_weights({2: 10, 1: 90}) == "1:90,2:10"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "version_weights is empty"),
        ("1", "must be VERSION:WEIGHT"),
        ("1:2.5", "must be VERSION:WEIGHT"),
        ("1:-1", "must be VERSION:WEIGHT"),
        ("x:1", "must be VERSION:WEIGHT"),
        ("0:5", "versions start at 1"),
        ("1:5,1:6", "names version 1 twice"),
        ("1:0,2:0", "at least one version a weight above 0"),
    ],
)
def test_parse_refuses_bad_text(text: str, message: str) -> None:
    with pytest.raises(VersionWeightsError, match=message):
        parse_version_weights(text)


def weighted_config(weights: str, versions: list[int] | None = None) -> mc.ModelConfig:
    config = mc.ModelConfig(name="m", backend="python")
    config.parameters["version_weights"].string_value = weights
    if versions is not None:
        config.version_policy.specific.versions.extend(versions)
    return config


def test_weighted_versions_must_be_loaded_by_the_policy() -> None:
    assert version_weights_problem(weighted_config("1:90,2:10"), [1, 2]) is None
    assert version_weights_problem(weighted_config("1:90,2:10"), None) is None  # not known: text only
    problem = version_weights_problem(weighted_config("1:90,4:10"), [1, 2])
    assert problem == (
        "version_weights names version(s) 4, which the version_policy does not load (it loads: 1, 2)"
    )
    assert version_weights_problem(mc.ModelConfig(name="m"), [1]) is None  # no parameter, no problem


def test_validate_rule_uses_the_policy_and_the_version_folders(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    for version in (1, 2, 3):
        (model_dir / str(version)).mkdir(parents=True)
        (model_dir / str(version) / "model.py").write_text(
            "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
        )

    def codes(config: mc.ModelConfig, check_files: bool = True) -> list[str]:
        found = check_model_config(config, model_dir if check_files else None, check_files=check_files)
        return [d.code for d in found if d.severity == "error"]

    # Default policy latest{1} loads only 3 of the folders 1, 2, 3.
    assert codes(weighted_config("3:100")) == []
    assert codes(weighted_config("2:50,3:50")) == ["E345-bad-version-weights"]
    assert codes(weighted_config("2:50,3:50", versions=[2, 3])) == []
    # Without the folders, a specific policy is enough to judge; a bad text is always judged.
    assert codes(weighted_config("1:1,5:1", versions=[1]), check_files=False) == ["E345-bad-version-weights"]
    assert codes(weighted_config("1:zero"), check_files=False) == ["E345-bad-version-weights"]


def test_router_gives_exact_interleaved_shares() -> None:
    router = WeightedVersionRouter({1: 90, 2: 10})
    picks = [router.pick([1, 2]) for _ in range(100)]
    assert Counter(picks) == {1: 90, 2: 10}
    # Spread out: the ten picks of version 2 are never adjacent.
    assert all(not (a == b == 2) for a, b in itertools.pairwise(picks))
    again = WeightedVersionRouter({1: 90, 2: 10})
    assert [again.pick([1, 2]) for _ in range(100)] == picks  # deterministic


def test_router_skips_versions_that_are_not_ready_or_weigh_nothing() -> None:
    router = WeightedVersionRouter({1: 0, 2: 3, 3: 1})
    assert {router.pick([1, 2]) for _ in range(10)} == {2}  # 3 not ready, 1 weighs 0
    assert router.pick([1]) is None  # nothing weighted is ready: the caller falls back
    picks = Counter(router.pick([1, 2, 3]) for _ in range(40))
    assert picks == {2: 30, 3: 10}
