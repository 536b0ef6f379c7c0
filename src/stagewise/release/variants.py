"""A/B variants: the one named by ``AB_VARIANT``, or a deterministic pick from the run id."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from stagewise.config.base import suggest
from stagewise.config.stage import Variant
from stagewise.errors import ConfigError, StageError


def choose_variant(stage: str, variants: Mapping[str, Variant], run_id: str) -> str:
    """Pick a variant by weight from a hash of (stage, run id): the same run always gets the
    same variant, and over many runs each variant gets its share of the weight."""
    total = float(sum(v.weight for v in variants.values()))
    if total <= 0:
        raise ConfigError(
            f"the variants of stage {stage!r} all have weight 0",
            location=f"stages.{stage}.variants",
            hint="give at least one variant a weight above 0",
        )
    digest = hashlib.sha256(f"{stage}\0{run_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * total
    cumulative = 0.0
    for name, variant in variants.items():
        cumulative += float(variant.weight)
        if point < cumulative:
            return name
    return next(name for name, v in reversed(variants.items()) if v.weight > 0)


def check_variant(stage: str, variants: Mapping[str, Variant] | None, variant: str) -> str:
    if not variants:
        raise StageError(
            f"stage {stage!r} has no A/B variants, but variant {variant!r} was asked for",
            hint="leave out the variant (unset AB_VARIANT) for this stage",
        )
    if variant not in variants:
        guess = suggest(variant, list(variants))
        raise StageError(
            f"stage {stage!r} has no variant {variant!r}",
            hint=(f"did you mean {guess!r}? " if guess else "")
            + f"known variants: {', '.join(variants)}",
        )
    return variant
