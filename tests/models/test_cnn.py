"""The cnn model: learns digits, keeps batch order across datasets of different sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from stagewise.errors import ConfigError
from stagewise.models import Batch, DatasetSpec, Group, build_model

SPECS = [
    DatasetSpec("digits", 10, {"image": (8, 8)}),
    DatasetSpec("colour", 4, {"image": (3, 12, 10)}),
]


def _batch(groups: list[tuple[int, np.ndarray, torch.Tensor]], labels: torch.Tensor) -> Batch:
    size = sum(len(rows) for _, rows, _ in groups)
    dataset = torch.empty(size, dtype=torch.int64)
    for number, rows, _ in groups:
        dataset[torch.from_numpy(rows)] = number
    return Batch(
        size,
        [Group(n, torch.from_numpy(rows), {"image": x}) for n, rows, x in groups],
        dataset,
        labels,
    )


def test_learns_digits_on_a_held_out_split() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    images = digits.images.astype(np.float32)  # (1797, 8, 8), values 0..16
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[:1400], order[1400:]
    model = build_model("cnn", datasets=SPECS[:1], num_labels=10)
    model.fit_input_scaling("digits", "image", images[train])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for epoch in range(2):
        shuffled = np.random.default_rng(epoch).permutation(train)
        for start in range(0, len(shuffled), 64):
            rows = shuffled[start : start + 64]
            batch = _batch(
                [(0, np.arange(len(rows)), torch.from_numpy(images[rows]))],
                torch.from_numpy(labels[rows]),
            )
            loss = torch.nn.functional.cross_entropy(model(batch), batch.targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        batch = _batch(
            [(0, np.arange(len(test)), torch.from_numpy(images[test]))],
            torch.from_numpy(labels[test]),
        )
        accuracy = (model(batch).argmax(1) == batch.targets).float().mean().item()
    assert accuracy > 0.9


def test_datasets_of_different_sizes_give_outputs_in_batch_order() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", datasets=SPECS, num_labels=10, options={"channels": 8}).eval()
    gray, colour = torch.rand(3, 8, 8), torch.rand(2, 3, 12, 10)
    labels = torch.zeros(5, dtype=torch.int64)
    with torch.no_grad():
        alone = torch.cat(
            [
                model(_batch([(0, np.arange(3), gray)], labels[:3])),
                model(_batch([(1, np.arange(2), colour)], labels[:2])),
            ]
        )
        # Sample k of the mixed batch sits at row place[k]: gray images at 4, 0, 2.
        place = np.array([4, 0, 2, 3, 1])
        mixed = model(_batch([(0, place[:3], gray), (1, place[3:], colour)], labels))
    assert mixed.shape == (5, 10)
    torch.testing.assert_close(mixed[torch.from_numpy(place)], alone)


def test_images_smaller_than_the_kernel_take_a_1x1_stem() -> None:
    spec = DatasetSpec("tiny", 2, {"image": (1, 2)})
    model = build_model("cnn", datasets=[spec], num_labels=2).eval()
    batch = _batch([(0, np.arange(4), torch.rand(4, 1, 2))], torch.zeros(4, dtype=torch.int64))
    assert model(batch).shape == (4, 2)
    assert model.task == "classification"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"width": 8}, "unknown cnn option"),
        ({"channels": 0}, "expected a positive integer"),
        ({"dropout": 1.5}, r"expected a number in \[0, 1\)"),
        ({"column": "pixels"}, "under 'pixels' in every record"),
    ],
)
def test_bad_options_are_config_errors(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        build_model("cnn", datasets=SPECS, num_labels=10, options=options)
    assert caught.value.location.startswith("model.")
    if "unknown" in match:
        assert caught.value.hint == "the cnn model takes channels, column, dropout"


def test_a_dataset_without_images_and_pretrained_weights_are_refused() -> None:
    flat = DatasetSpec("iris", 3, {"features": (4,)})
    with pytest.raises(ConfigError, match=r"dataset 'iris' has \{'features': \(4,\)\}"):
        build_model("cnn", datasets=[flat], num_labels=3)
    with pytest.raises(ConfigError, match="no pretrained weights") as caught:
        build_model("cnn", datasets=SPECS, num_labels=10, pretrained="/some/folder")
    assert caught.value.location == "model.pretrained_name"
