"""Per-token perplexity and the quality score, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from stagewise.select.scoring import quality_scores, token_perplexity, weighted_gates


def test_token_perplexity_is_one_first_then_exp_ce_and_zero_on_padding() -> None:
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = math.log(3.0)  # p(token 2) = 3/6 = 1/2 -> ppl 2
    ids = torch.tensor([[0, 2, 1]])
    ppl = token_perplexity(logits, ids, torch.tensor([[1, 1, 0]]))
    torch.testing.assert_close(ppl, torch.tensor([[1.0, 2.0, 0.0]]))


# Three samples, two layers, two tokens (sample 2 has one real token).
GATES = torch.tensor(
    [
        [[0.5, 1.0], [0.2, 0.2]],
        [[0.1, 0.3], [0.6, 0.0]],
        [[0.8, 0.0], [0.4, 0.0]],
    ]
)
PPL = torch.tensor([[1.0, 3.0], [1.0, 1.0], [2.0, 0.0]])


def test_weighted_gates_weigh_tokens_by_perplexity() -> None:
    eps = 1e-8
    expected = torch.tensor(
        [
            [(1 * 0.5 + 3 * 1.0) / (4 + eps), (1 * 0.2 + 3 * 0.2) / (4 + eps)],
            [(0.1 + 0.3) / (2 + eps), (0.6 + 0.0) / (2 + eps)],
            [2 * 0.8 / (2 + eps), 2 * 0.4 / (2 + eps)],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(weighted_gates(GATES, PPL), expected)
    # alpha 0: every real token weighs the same
    flat = weighted_gates(GATES, PPL, alpha=0.0)
    assert float(flat[0, 0]) == pytest.approx(0.75)
    assert float(flat[2, 0]) == pytest.approx(0.8)


def test_quality_score_by_hand() -> None:
    s = torch.tensor([[0.875, 0.2], [0.2, 0.3], [0.8, 0.4]], dtype=torch.float64)
    # layer 0: min 0.2, range 0.675, mean 0.625; layer 1: min 0.2, range 0.2, mean 0.3
    r0 = [(v - 0.2) / (0.675 * 0.625) for v in (0.875, 0.2, 0.8)]
    r1 = [(v - 0.2) / (0.2 * 0.3) for v in (0.2, 0.3, 0.4)]
    expected = [(a + b) / 2 for a, b in zip(r0, r1, strict=True)]
    assert quality_scores(s).tolist() == pytest.approx(expected)
    assert expected[2] > expected[1] > expected[0]


def test_a_layer_with_no_spread_adds_nothing() -> None:
    s = torch.tensor([[0.5, 0.1], [0.5, 0.9]], dtype=torch.float64)
    scores = quality_scores(s)
    assert scores.tolist() == pytest.approx([0.0, (0.8 / (0.8 * 0.5)) / 2])
