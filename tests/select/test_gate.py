"""The quality gate: where it sits, what each mode does, conversion and loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stagewise.errors import ConfigError
from stagewise.select.gate import (
    GATE_CONFIG,
    GATE_WEIGHTS,
    QualityGateForCausalLM,
    convert,
    load_gate_weights,
    load_selector,
)
from stagewise.select.warmup import _make_trainable
from tests.select.conftest import tiny_lm

IDS = torch.tensor([[5, 9, 3, 17, 2, 40], [7, 1, 1, 30, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3", "llama"])
def test_every_decoder_layer_gets_one_gate_on_the_normed_hidden_state(model_type: str) -> None:
    model = QualityGateForCausalLM(tiny_lm(model_type, num_hidden_layers=3))
    names = {n: p.shape for n, p in model.lm.named_parameters() if "quality_gate" in n}
    assert names == {f"model.layers.{i}.quality_gate.gate.weight": (1, 16) for i in range(3)}
    layer = model.lm.model.layers[1]
    assert layer.quality_gate.gate.bias is None
    # The gate reads exactly the MLP's input: post_attention_layernorm(h').
    seen: dict[str, torch.Tensor] = {}
    layer.post_attention_layernorm.register_forward_hook(lambda m, a, o: seen.update(u=o))
    out = model(IDS, MASK)
    expected = torch.sigmoid(layer.quality_gate.gate(seen["u"])).squeeze(-1)
    torch.testing.assert_close(out.gates[:, 1], expected)
    assert out.gates.shape == (2, 3, 6)


def test_probe_leaves_the_logits_of_the_base_model_unchanged() -> None:
    base = tiny_lm()
    with torch.no_grad():
        reference = base(input_ids=IDS, attention_mask=MASK).logits.clone()
        gated = QualityGateForCausalLM(base, mode="probe")(IDS, MASK)
    assert torch.allclose(gated.logits, reference, atol=1e-6)
    assert ((gated.gates > 0) & (gated.gates < 1)).all()


def test_scale_ffn_multiplies_each_mlp_output_by_its_gate() -> None:
    model = QualityGateForCausalLM(tiny_lm(), mode="scale_ffn")
    with torch.no_grad():
        for layer in model.lm.model.layers:
            layer.quality_gate.gate.weight.normal_(0, 1.0)
        gated = model(IDS, MASK).logits
    # The same weights, with h'' = h' + sigmoid(w . u) * MLP(u) written out by hand.
    reference = tiny_lm()
    for layer, source in zip(reference.model.layers, model.lm.model.layers, strict=True):
        weight = source.quality_gate.gate.weight.detach()
        mlp_forward = layer.mlp.forward
        layer.mlp.forward = lambda u, f=mlp_forward, w=weight: f(u) * torch.sigmoid(u @ w.T)
    with torch.no_grad():
        expected = reference(input_ids=IDS, attention_mask=MASK).logits
        plain = tiny_lm()(input_ids=IDS, attention_mask=MASK).logits
    torch.testing.assert_close(gated, expected)
    assert not torch.allclose(gated, plain, atol=1e-3)


def test_full_rank_passes_gradients_to_the_gates_only() -> None:
    model = QualityGateForCausalLM(tiny_lm(), mode="scale_ffn")
    _make_trainable(model, "full_rank", 16, 64)
    out = model(IDS, MASK)
    loss = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, 64), IDS[:, 1:].reshape(-1)
    )
    loss.backward()
    for name, parameter in model.lm.named_parameters():
        if "quality_gate" in name:
            assert parameter.requires_grad and parameter.grad is not None
            assert parameter.grad.abs().sum() > 0, name  # CE reaches the gates in scale_ffn
        else:
            assert not parameter.requires_grad and parameter.grad is None, name


def test_in_probe_mode_the_language_loss_gives_the_gates_no_gradient() -> None:
    model = QualityGateForCausalLM(tiny_lm(), mode="probe")
    _make_trainable(model, "full_rank", 16, 64)
    out = model(IDS, MASK)
    loss = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, 64), IDS[:, 1:].reshape(-1)
    )
    assert not loss.requires_grad  # nothing trainable lies on the logits' path


def test_lora_mode_trains_adapters_on_the_gates_only() -> None:
    model = QualityGateForCausalLM(tiny_lm(), mode="scale_ffn")
    _make_trainable(model, "lora", 4, 16)
    trainable = [n for n, p in model.lm.named_parameters() if p.requires_grad]
    assert trainable and all("quality_gate.gate.lora_" in n for n in trainable)
    assert len(trainable) == 2 * 2  # lora_A and lora_B in each of the 2 layers
    model(IDS, MASK).gates.mean().backward()  # the hooks still reach the wrapped gates


def test_convert_writes_the_base_model_and_the_gates(base_model: Path, tmp_path: Path) -> None:
    out = convert(base_model, tmp_path / "qg", mode="probe", init_std=0.5, seed=3)
    settings = json.loads((out / GATE_CONFIG).read_text())
    assert settings["mode"] == "probe" and settings["num_layers"] == 2
    gates = load_file(out / GATE_WEIGHTS)
    assert sorted(gates) == [f"model.layers.{i}.quality_gate.gate.weight" for i in range(2)]
    std = torch.cat([g.flatten() for g in gates.values()]).std()
    assert 0.3 < float(std) < 0.7  # N(0, init_std)
    model, tokenizer = load_selector(out)
    assert model.mode == "probe" and tokenizer.eos_token == "<|endoftext|>"
    torch.testing.assert_close(model.gate_weights(), gates)
    assert load_selector(out, mode="scale_ffn")[0].mode == "scale_ffn"


def test_a_base_model_of_another_architecture_is_refused(base_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError) as caught:
        convert(folder, tmp_path / "out")
    assert "unsupported architecture 'gpt2'" in caught.value.headline
    assert caught.value.location == f"{folder / 'config.json'} (model_type)"
    assert "Qwen2, Qwen3 or Llama" in (caught.value.hint or "")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"no config\.json"):
        convert(tmp_path / "nothing", tmp_path / "out")


def test_convert_does_not_overwrite_a_folder(base_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        convert(base_model, out)
    assert (out / "keep.txt").read_text() == "mine"


def test_a_plain_model_folder_is_not_a_selector(base_model: Path) -> None:
    with pytest.raises(ConfigError, match="not a converted Quality-Gate model") as caught:
        load_selector(base_model)
    assert "stagewise select convert" in (caught.value.hint or "")


def test_gate_weights_of_another_model_are_refused() -> None:
    model = QualityGateForCausalLM(tiny_lm())
    other = QualityGateForCausalLM(
        tiny_lm(num_hidden_layers=3, hidden_size=24, num_attention_heads=2)
    )
    with pytest.raises(ConfigError) as caught:
        load_gate_weights(model, other.gate_weights(), "w.pt")
    assert caught.value.location == "w.pt"
    assert "3 gate(s) of shape [(1, 24)]" in caught.value.headline
    assert "2 of shape [1, 16]" in caught.value.headline
