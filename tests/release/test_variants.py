"""A/B variants: deterministic per run id, distributed by weight."""

from __future__ import annotations

import pytest

from stagewise.config import Variant
from stagewise.errors import ConfigError
from stagewise.release.variants import choose_variant


def share_of_a(weights: tuple[float, float], runs: int = 4000) -> float:
    variants = {
        "variant_a": Variant(config_file="a.json", weight=weights[0]),
        "variant_b": Variant(config_file="b.json", weight=weights[1]),
    }
    picks = [choose_variant("ab_testing", variants, f"run-{i}") for i in range(runs)]
    return picks.count("variant_a") / runs


def test_the_same_run_always_gets_the_same_variant() -> None:
    variants = {"a": Variant(config_file="a.json"), "b": Variant(config_file="b.json")}
    assert len({choose_variant("s", variants, "run-42") for _ in range(10)}) == 1


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.8, 0.2), (1, 3)])
def test_variants_are_chosen_in_proportion_to_their_weights(weights: tuple[float, float]) -> None:
    assert share_of_a(weights) == pytest.approx(weights[0] / sum(weights), abs=0.03)


def test_a_zero_weight_variant_is_never_chosen_and_all_zero_is_an_error() -> None:
    assert share_of_a((0, 1), runs=500) == 0
    assert share_of_a((1, 0), runs=500) == 1
    with pytest.raises(ConfigError, match="all have weight 0"):
        share_of_a((0, 0), runs=1)
