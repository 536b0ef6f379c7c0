"""The warmup's loss on tensors small enough to compute by hand."""

from __future__ import annotations

import math

import pytest
import torch

from stagewise.select.losses import gate_statistics, quality_loss, shifted_cross_entropy

# Two samples, two layers, three tokens; sample 1's last token is padding.
GATES = torch.tensor(
    [
        [[0.2, 0.4, 0.6], [1.0, 0.0, 0.5]],
        [[0.9, 0.1, 0.7], [0.3, 0.3, 0.8]],
    ]
)
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_sample_wise_quality_loss_is_the_mean_of_per_sample_mean_gates() -> None:
    # g_bar: sample 0 -> layer 0: 0.4, layer 1: 0.5; sample 1 -> 0.5, 0.3
    assert float(quality_loss(GATES, MASK)) == pytest.approx((0.4 + 0.5 + 0.5 + 0.3) / 4)


def test_token_wise_quality_loss_pools_the_tokens_of_a_layer() -> None:
    layer0 = (0.2 + 0.4 + 0.6 + 0.9 + 0.1) / 5
    layer1 = (1.0 + 0.0 + 0.5 + 0.3 + 0.3) / 5
    value = quality_loss(GATES, MASK, sample_wise=False)
    assert float(value) == pytest.approx((layer0 + layer1) / 2)


def test_the_balanced_form_pushes_target_gates_up_and_the_rest_down() -> None:
    target = torch.tensor([0.0, 1.0])
    beta = 0.2
    # sample 0 (y=0): beta * g_bar; sample 1 (y=1): (2 - beta) * (1 - g_bar)
    expected = (beta * 0.4 + beta * 0.5 + (2 - beta) * 0.5 + (2 - beta) * 0.7) / 4
    assert float(quality_loss(GATES, MASK, target, balance=beta)) == pytest.approx(expected)
    # beta = 1 without target records is the plain mean gate
    assert float(quality_loss(GATES, MASK, torch.zeros(2), balance=1.0)) == pytest.approx(0.425)


def test_token_wise_balanced_loss() -> None:
    target = torch.tensor([1.0, 0.0])
    beta = 0.5
    layer0 = (1.5 * (0.8 + 0.6 + 0.4) + 0.5 * (0.9 + 0.1)) / 5
    layer1 = (1.5 * (0.0 + 1.0 + 0.5) + 0.5 * (0.3 + 0.3)) / 5
    value = quality_loss(GATES, MASK, target, balance=beta, sample_wise=False)
    assert float(value) == pytest.approx((layer0 + layer1) / 2)


def test_the_quality_loss_reaches_the_gates() -> None:
    gates = GATES.clone().requires_grad_(True)
    quality_loss(gates, MASK).backward()
    assert gates.grad is not None
    assert float(gates.grad[1, 0, 2]) == 0.0  # padding takes no part
    assert float(gates.grad[0, 0, 0]) == pytest.approx(1 / 3 / 4)


def test_cross_entropy_is_shifted_and_ignores_minus_100() -> None:
    logits = torch.zeros(1, 3, 4)
    logits[0, 0] = torch.tensor([0.0, math.log(3.0), 0.0, 0.0])  # predicts token 1 with p = 1/2
    logits[0, 1] = torch.tensor([5.0, 0.0, 0.0, 0.0])
    labels = torch.tensor([[-100, 1, -100]])  # only position 0 -> token 1 counts
    assert float(shifted_cross_entropy(logits, labels)) == pytest.approx(math.log(2.0))
    nothing = shifted_cross_entropy(logits.requires_grad_(True), torch.full((1, 3), -100))
    assert float(nothing.detach()) == 0.0 and nothing.requires_grad


def test_gate_statistics_per_layer_on_real_tokens() -> None:
    stats = gate_statistics(GATES, MASK)
    assert [s["layer"] for s in stats] == [0, 1]
    assert stats[0]["min"] == pytest.approx(0.1) and stats[0]["max"] == pytest.approx(0.9)
    assert stats[1]["mean"] == pytest.approx(2.1 / 5)
