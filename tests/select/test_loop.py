"""The shared loop's weighting: accumulation steps give the gradient of one pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from stagewise.config.selection import LoopSettings
from stagewise.select import loop
from stagewise.select.encoding import Encoded, collate, label_tokens
from stagewise.select.losses import shifted_cross_entropy


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 8)
        self.head = nn.Linear(8, 20)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids))


def gradient(tmp_path: Path, per_device: int) -> torch.Tensor:
    # Records of unequal length: a mean over each micro-batch's tokens would weigh them wrong.
    lengths = [14, 3, 9, 6]
    examples = [Encoded(list(range(1, n + 1)), list(range(1, n + 1))) for n in lengths]
    model = TinyLM()
    seen: list[torch.Tensor] = []
    model.head.weight.register_hook(lambda g: seen.append(g.clone()))

    def step_loss(trained: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"ce": shifted_cross_entropy(trained(batch["input_ids"]), batch["labels"])}

    settings = LoopSettings(
        batch_size=4, per_device_batch_size=per_device, max_steps=1, learning_rate=1e-9
    )
    loop.train(
        model,
        examples,
        lambda items: collate(items, 0),
        step_loss,
        settings,
        units=lambda e: {"ce": label_tokens(e)},
        scales={"ce": 1.0},
        out=tmp_path / str(per_device),
        seed=0,
        run_fingerprint="x",
        save_files=lambda folder: None,
        shuffle=False,
        procs=loop.Processes(0, 1, torch.device("cpu")),
        echo=lambda _: None,
    )
    return torch.stack(seen).sum(0)


@pytest.mark.parametrize("per_device", [1, 2])
def test_accumulation_gives_the_gradient_of_one_pass(tmp_path: Path, per_device: int) -> None:
    (tmp_path / str(per_device)).mkdir()
    (tmp_path / "4").mkdir()
    torch.testing.assert_close(
        gradient(tmp_path, per_device), gradient(tmp_path, 4), rtol=1e-5, atol=1e-7
    )
