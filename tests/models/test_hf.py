"""hf:<AutoModel class>: tiny transformers models from configs (random weights) and from
local folders; nothing is downloaded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from stagewise.errors import ConfigError, DataError
from stagewise.models import Batch, DatasetSpec, Group, build_model

TEXT = "hf:AutoModelForSequenceClassification"
TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 300,
}
CONFIGS = {
    "bert": {"model_type": "bert", **TINY},
    "qwen2": {"model_type": "qwen2", "num_key_value_heads": 2, **TINY},
    "llama": {"model_type": "llama", "num_key_value_heads": 2, **TINY},
}
SPECS = [
    DatasetSpec("short", 3, {"input_ids": (5,), "attention_mask": (5,)}),
    DatasetSpec("long", 3, {"input_ids": (9,)}),
]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No hub access, and one thread for tiny models."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(*parts: tuple[int, list[int], dict[str, torch.Tensor]]) -> Batch:
    size = sum(len(rows) for _, rows, _ in parts)
    dataset = torch.empty(size, dtype=torch.int64)
    groups = []
    for number, rows, inputs in parts:
        dataset[rows] = number
        groups.append(Group(number, torch.tensor(rows), inputs))
    return Batch(size, groups, dataset, torch.zeros(size, dtype=torch.int64))


def _text(rows: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(1, 300, (rows, length), generator=generator)}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_a_tiny_model_takes_two_groups_in_batch_order(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(TEXT, datasets=SPECS, num_labels=3, options=CONFIGS[kind]).eval()
    assert model.task == "classification"
    assert model.model.config.pad_token_id is not None
    short = _text(2, 5, 1)
    short["attention_mask"] = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    short["input_ids"][0, 3:] = 0  # padding
    long = _text(3, 9, 2)
    with torch.no_grad():
        mixed = model(_batch((0, [3, 0], short), (1, [1, 4, 2], long)))
        alone_short = model(_batch((0, [0, 1], short)))
        alone_long = model(_batch((1, [0, 1, 2], long)))
        unpadded = model(_batch((1, [0], {"input_ids": short["input_ids"][:1, :3]})))
    assert mixed.shape == (5, 3)
    torch.testing.assert_close(mixed[[3, 0]], alone_short)
    torch.testing.assert_close(mixed[[1, 4, 2]], alone_long)
    # Padding changes nothing: the classifier reads the last real token (decoders) or
    # attends to the real tokens only (encoders).
    torch.testing.assert_close(alone_short[:1], unpadded, atol=1e-5, rtol=1e-4)


def test_a_saved_model_loads_back_from_its_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(TEXT, datasets=SPECS, num_labels=3, options=CONFIGS["qwen2"]).eval()
    model.model.save_pretrained(tmp_path / "tiny")
    batch = _batch((1, [0, 1], _text(2, 9, 3)))
    loaded = build_model(
        TEXT, datasets=SPECS, num_labels=3, options={}, pretrained=str(tmp_path / "tiny")
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model(batch))
    # Another label count gets a new head; the body is the saved one.
    relabelled = build_model(
        TEXT, datasets=SPECS, num_labels=5, pretrained=str(tmp_path / "tiny")
    ).eval()
    with torch.no_grad():
        assert relabelled(batch).shape == (2, 5)
    body = "model.embed_tokens.weight"
    torch.testing.assert_close(relabelled.model.state_dict()[body], model.model.state_dict()[body])


def test_options_override_a_saved_config_and_are_checked(tmp_path: Path) -> None:
    model = build_model(TEXT, datasets=SPECS, num_labels=3, options=CONFIGS["bert"])
    model.model.save_pretrained(tmp_path / "tiny")
    folder = str(tmp_path / "tiny")
    loaded = build_model(
        TEXT, datasets=SPECS, num_labels=3, options={"hidden_dropout_prob": 0.3}, pretrained=folder
    )
    assert loaded.model.config.hidden_dropout_prob == 0.3
    with pytest.raises(ConfigError, match="BertConfig has no setting") as caught:
        build_model(TEXT, datasets=SPECS, num_labels=3, options={"bogus": 1}, pretrained=folder)
    assert caught.value.location == "model.options"
    with pytest.raises(ConfigError, match="is a bert, not a llama"):
        build_model(
            TEXT, datasets=SPECS, num_labels=3, options={"model_type": "llama"}, pretrained=folder
        )
    image = "hf:AutoModelForImageClassification"
    pictures = [DatasetSpec("pictures", 3, {"pixel_values": (3, 8, 8)})]
    with pytest.raises(ConfigError, match="cannot take the model in") as caught:
        build_model(image, datasets=pictures, num_labels=3, options={}, pretrained=folder)
    assert caught.value.location == "model.pretrained_name"
    (tmp_path / "tiny" / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="cannot be built from the model in"):
        build_model(TEXT, datasets=SPECS, num_labels=3, options={}, pretrained=folder)


def test_an_image_classifier_from_a_config() -> None:
    torch.manual_seed(0)
    options = {"model_type": "vit", "image_size": 16, "patch_size": 4, **TINY}
    del options["vocab_size"]
    spec = DatasetSpec("pictures", 4, {"pixel_values": (3, 16, 16)})
    model = build_model(
        "hf:AutoModelForImageClassification", datasets=[spec], num_labels=4, options=options
    ).eval()
    with torch.no_grad():
        logits = model(_batch((0, [1, 0], {"pixel_values": torch.rand(2, 3, 16, 16)})))
    assert logits.shape == (2, 4)


@pytest.mark.parametrize(
    ("name", "options", "pretrained", "match", "location"),
    [
        (TEXT, CONFIGS["bert"], "/no/such/folder", "no saved model", "model.pretrained_name"),
        (TEXT, CONFIGS["bert"], "bert-base-uncased", "no saved model", "model.pretrained_name"),
        ("hf:AutoModelForCausalLM", CONFIGS["bert"], None, "not a supported", "model.name"),
        ("hf:AutoNonsense", CONFIGS["bert"], None, "not a supported", "model.name"),
        (TEXT, {"hidden_size": 32}, None, "needs model.options.model_type", "model.options"),
        (TEXT, {"model_type": "bret"}, None, "no model_type 'bret'", "model.options.model_type"),
        (TEXT, {**CONFIGS["bert"], "hidden_layers": 2}, None, "hidden_layers", "model.options"),
        (TEXT, {**CONFIGS["bert"], "num_labels": 2}, None, "set by the run", "model.options"),
        (
            TEXT,
            {**CONFIGS["bert"], "num_attention_heads": 3},
            None,
            "cannot be built",
            "model.options",
        ),
        ("hf:AutoModelForImageClassification", CONFIGS["bert"], None, "pixel_values", "model"),
        (TEXT, {"model_type": "vit"}, None, "cannot take a vit config", "model.options"),
    ],
)
def test_bad_models_are_config_errors(
    name: str, options: dict[str, Any], pretrained: str | None, match: str, location: str
) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        build_model(name, datasets=SPECS, num_labels=3, options=options, pretrained=pretrained)
    assert (caught.value.location or "").startswith(location)


def test_unknown_class_names_list_the_supported_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        build_model("hf:AutoModelForCausalLM", datasets=SPECS, num_labels=3, options={})
    assert "hf:AutoModelForSequenceClassification" in (caught.value.hint or "")
    assert "hf:AutoModelForImageClassification" in (caught.value.hint or "")


def test_token_ids_outside_the_vocabulary_are_data_errors() -> None:
    model = build_model(TEXT, datasets=SPECS, num_labels=3, options=CONFIGS["bert"])
    with pytest.raises(DataError, match="outside the model's vocabulary of 300"):
        model(_batch((1, [0], {"input_ids": torch.full((1, 9), 300)})))
