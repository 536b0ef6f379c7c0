"""The warmup's loss: the language-model loss plus the quality loss on the gates.

    loss = CE + quality_loss_weight * L_q

CE is the shifted next-token cross-entropy (labels -100 ignored). With gates g [B, L, T],
the non-pad mask m [B, T] and y_i = is_target_task of sample i, the per-sample mean gate
is ``g_bar[i, l] = sum_t m g / sum_t m`` and::

    l(g_bar, y) = beta (1 - y) g_bar + (2 - beta) y (1 - g_bar)
    L_q = mean over layers l and samples i of l(g_bar[i, l], y_i)     (sample-wise)

Candidates (y = 0) are pushed to close their gates, target-task samples (y = 1) to open
them; beta = ``quality_loss_balance`` trades the two (with beta = 1 and no target records
L_q is the mean gate). ``sample_wise=False`` averages over all non-pad tokens of a layer
instead of per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stagewise.select.encoding import IGNORE


def shifted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: position t predicts labels[t + 1]; -100 is ignored."""
    predicted = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    wanted = labels[:, 1:].reshape(-1)
    if not bool((wanted != IGNORE).any()):
        return predicted.sum() * 0.0  # nothing to learn in this batch; keeps the graph
    return F.cross_entropy(predicted, wanted, ignore_index=IGNORE)


def quality_loss(
    gates: torch.Tensor,
    mask: torch.Tensor,
    is_target: torch.Tensor | None = None,
    *,
    balance: float = 1.0,
    sample_wise: bool = True,
) -> torch.Tensor:
    """L_q for gates [B, L, T], mask [B, T] (1 = real token), is_target [B] (0/1)."""
    m = mask.to(gates.dtype).unsqueeze(1)  # [B, 1, T]
    y = torch.zeros(gates.size(0), dtype=gates.dtype, device=gates.device)
    if is_target is not None:
        y = is_target.to(gates.dtype)
    y = y.view(-1, 1, 1)
    if sample_wise:
        g_bar = (gates * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp_min(1)
        return _balanced(g_bar, y, balance).mean()
    per_token = _balanced(gates, y, balance) * m  # [B, L, T]
    per_layer = per_token.sum(dim=(0, 2)) / m.sum(dim=(0, 2)).clamp_min(1)
    return per_layer.mean()


def _balanced(g: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    return beta * (1 - y) * g + (2 - beta) * y * (1 - g)


def gate_statistics(gates: torch.Tensor, mask: torch.Tensor) -> list[dict[str, float]]:
    """Per layer: mean, std, min and max of the gates on real tokens (quality_loss_debug)."""
    real = mask.bool()
    stats = []
    for layer in range(gates.size(1)):
        values = gates[:, layer][real].float()
        stats.append(
            {
                "layer": layer,
                "mean": float(values.mean()),
                "std": float(values.std()) if values.numel() > 1 else 0.0,
                "min": float(values.min()),
                "max": float(values.max()),
            }
        )
    return stats
