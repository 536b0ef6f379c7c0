"""Per-token perplexity, and the quality score of every sample.

Per-token perplexity (the selection stage): ``ppl[i, t] = exp(CE(z[i, t-1], x[i, t]))``
for t >= 1, ``ppl[i, 0] = 1``, and 0 on padding.

The score (seed 001's batch selection), with alpha = 1 and eps = 1e-8 by default::

    w[i, t] = ppl[i, t]^alpha / (sum_u ppl[i, u]^alpha + eps)      (0 on padding)
    S[i, l] = sum_t w[i, t] g[i, l, t]
    R[i, l] = (S[i, l] - min_i S) / (max(max_i S - min_i S, eps) * max(mean_i S, eps))
    q[i]    = mean_l R[i, l]

Tokens the model finds surprising weigh more, and layers whose gates are mostly closed
(small mean) weigh more. The min, max and mean run over the pool being selected from:
every dataset together (scope ``global``, the reference) or one dataset (``per_dataset``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8


def token_perplexity(
    logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """[B, T] per-token perplexity: 1 at t = 0, exp(CE) after, 0 on padding. One row at a
    time: a float32 copy of a whole batch's logits is tens of GB at a real vocabulary."""
    rows = [
        F.cross_entropy(logits[i, :-1].float(), input_ids[i, 1:], reduction="none")
        for i in range(logits.size(0))
    ]
    ce = torch.stack(rows) if rows else logits.new_zeros(0, max(0, logits.size(1) - 1))
    first = torch.ones_like(ce[:, :1])
    return torch.cat([first, ce.exp()], dim=1) * mask.to(ce.dtype)


def weighted_gates(
    gates: torch.Tensor, perplexities: torch.Tensor, alpha: float = 1.0, eps: float = EPS
) -> torch.Tensor:
    """S [N, L]: each layer's gates averaged over tokens with perplexity weights."""
    powered = perplexities.double().clamp_min(0) ** alpha
    powered = torch.where(perplexities > 0, powered, torch.zeros_like(powered))
    weights = powered / (powered.sum(dim=1, keepdim=True) + eps)  # [N, T]
    return torch.einsum("nlt,nt->nl", gates.double(), weights)


def quality_scores(weighted: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """q [N] from S [N, L], normalized over the N samples given."""
    low = weighted.min(dim=0).values
    spread = (weighted.max(dim=0).values - low).clamp_min(eps)
    mean = weighted.mean(dim=0).clamp_min(eps)
    return ((weighted - low) / (spread * mean)).mean(dim=1)
