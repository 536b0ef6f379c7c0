"""The three stages on the tiny model: what each writes, resume, and bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from stagewise.config.selection import FinetuneConfig, ScoreConfig, WarmupConfig, load_stage_config
from stagewise.errors import ConfigError
from stagewise.select.finetune import finetune
from stagewise.select.router import score
from stagewise.select.warmup import warmup

QUIET: Callable[[str], None] = lambda _: None  # noqa: E731


def config(model: Any, tmp_path: Path, data: dict[str, Any], *overrides: str) -> Any:
    path = tmp_path / f"{model.__name__}-{len(list(tmp_path.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    loaded, warnings = load_stage_config(model, path, list(overrides))
    assert warnings == []
    return loaded


def warmup_config(
    tmp_path: Path, selector: Path, data: Path, out: Path, *overrides: str
) -> WarmupConfig:
    settings = {
        "stage": "warmup",
        "selector_model": {"path": str(selector)},
        "dataset": {"data_path": [str(data)], "max_seq_len": 48},
        "training": {
            "learning_rate": 0.05,
            "batch_size": 4,
            "epochs": 1,
            "save_steps": 2,
            "log_every": 1,
        },
        "output_dir": str(out),
    }
    return config(WarmupConfig, tmp_path, settings, *overrides)


def score_config(
    tmp_path: Path, selector: Path, data: Path, out: Path, *overrides: str
) -> ScoreConfig:
    settings = {
        "stage": "selection",
        "selector_model": {"path": str(selector)},
        "dataset": {
            "data_path": [str(data)],
            "max_seq_len": 48,
            "sort_by_length": True,
            "shuffle": False,
        },
        "data_process": {"batch_size": 3},
        "output_dir": str(out),
    }
    return config(ScoreConfig, tmp_path, settings, *overrides)


def gate_file(folder: Path) -> dict[str, torch.Tensor]:
    saved = torch.load(folder / "full_rank_weights.pt", weights_only=True)
    return saved["model_state_dict"]


class Stop(Exception):
    pass


def stop_at_step_5(line: str) -> None:
    """An echo that stops a training stage once step 5 is done, before its checkpoint."""
    if line.startswith("step 5/"):
        raise Stop


def stop_after_two(number: int) -> None:
    """An on_batch that stops the selection stage after its second batch is saved."""
    if number == 1:
        raise Stop


def test_warmup_trains_the_gates_and_saves_them_alone(
    tmp_path: Path, selector_model: Path, chats
) -> None:
    data = chats(6)
    result = warmup(warmup_config(tmp_path, selector_model, data, tmp_path / "w"), echo=QUIET)
    saved = torch.load(result.weights, weights_only=True)
    assert set(saved) == {"model_state_dict", "tokenizer_name"}
    assert sorted(saved["model_state_dict"]) == [
        f"model.layers.{i}.quality_gate.gate.weight" for i in range(2)
    ]
    initial = load_file(selector_model / "quality_gate.safetensors")
    assert not torch.equal(
        saved["model_state_dict"]["model.layers.0.quality_gate.gate.weight"],
        initial["model.layers.0.quality_gate.gate.weight"],
    )
    assert result.last["step"] == 3  # 12 records, batch 4, 1 epoch
    assert {"loss", "ce", "quality_loss", "lr"} <= set(result.last)
    logged = [
        json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [row["step"] for row in logged] == [1, 2, 3]
    assert (
        yaml.safe_load((tmp_path / "w" / "config.yaml").read_text())["training"]["batch_size"] == 4
    )


def test_a_stopped_warmup_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, selector_model: Path, chats
) -> None:
    data = chats(6)
    extra = ("training.epochs=2",)  # 6 steps, checkpoints at 2, 4, 6
    whole = warmup(
        warmup_config(tmp_path, selector_model, data, tmp_path / "whole", *extra), echo=QUIET
    )

    interrupted = warmup_config(tmp_path, selector_model, data, tmp_path / "again", *extra)
    with pytest.raises(Stop):
        warmup(interrupted, echo=stop_at_step_5)
    assert sorted(p.name for p in (tmp_path / "again").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    lines: list[str] = []
    resumed = warmup(interrupted, echo=lines.append)
    assert any("resuming from" in line and "checkpoint-4" in line for line in lines)
    assert resumed.last == whole.last
    for name, value in gate_file(tmp_path / "whole").items():
        assert torch.equal(value, gate_file(tmp_path / "again")[name]), name


def test_a_warmup_folder_of_another_run_is_not_resumed(
    tmp_path: Path, selector_model: Path, chats
) -> None:
    data = chats(6)
    warmup(warmup_config(tmp_path, selector_model, data, tmp_path / "w"), echo=QUIET)
    with pytest.raises(ConfigError, match="checkpoints of a different run"):
        warmup(
            warmup_config(
                tmp_path, selector_model, data, tmp_path / "w", "training.learning_rate=0.01"
            ),
            echo=QUIET,
        )


def test_warmup_with_lora_on_the_gates_feeds_the_selection(
    tmp_path: Path, selector_model: Path, chats
) -> None:
    data = chats(4)
    result = warmup(
        warmup_config(tmp_path, selector_model, data, tmp_path / "w", "training.peft_mode=lora"),
        echo=QUIET,
    )
    adapter = json.loads((result.weights / "adapter_config.json").read_text())
    assert adapter["target_modules"] == ["quality_gate.gate"] and adapter["r"] == 16
    assert adapter["lora_alpha"] == 64
    done = score(
        score_config(
            tmp_path,
            selector_model,
            data,
            tmp_path / "s",
            f"model_checkpoint_path={tmp_path / 'w'}",
        ),
        echo=QUIET,
    )
    assert [f.name for f in done.files] == ["docs_router_data.pt"]


def test_target_records_and_debug_statistics(tmp_path: Path, selector_model: Path, chats) -> None:
    data = chats(4)
    target = chats(2, dataset="target", seed=1)
    lines: list[str] = []
    warmup(
        warmup_config(
            tmp_path,
            selector_model,
            data,
            tmp_path / "w",
            f"dataset.target_path=[{target}]",
            "training.quality_loss_debug=true",
            "training.quality_loss_balance=0.2",
        ),
        echo=lines.append,
    )
    assert "warmup: 12 records (4 of the target task), gates in scale_ffn mode" in lines
    assert any(line.startswith("  gates layer 1: mean") for line in lines)


def test_the_selection_writes_the_seeds_router_data(
    tmp_path: Path, selector_model: Path, chats
) -> None:
    chats(4, dataset="alpaca")
    chats(3, dataset="dolly")
    data = tmp_path / "data" / "*.jsonl"
    result = score(score_config(tmp_path, selector_model, data, tmp_path / "s"), echo=QUIET)
    assert [f.name for f in result.files] == ["alpaca_router_data.pt", "dolly_router_data.pt"]
    alpaca = torch.load(result.files[0], weights_only=True)
    assert {
        "quality_gates",
        "perplexities",
        "sample_ids",
        "dataset_name",
        "num_samples",
        "max_seq_len",
        "metadata",
    } <= set(alpaca)
    n, layers, width = alpaca["quality_gates"].shape
    assert (n, layers) == (8, 2) and alpaca["num_samples"] == 8 and alpaca["max_seq_len"] == width
    assert alpaca["perplexities"].shape == (8, width)
    assert alpaca["sample_ids"][0] == "alpaca_clean_0"
    real = alpaca["perplexities"] > 0
    assert (alpaca["perplexities"][:, 0] == 1).all()
    assert ((alpaca["quality_gates"][:, 0] > 0) == real).all()  # gates are 0 on padding only
    assert (
        alpaca["metadata"]["run_id"]
        == torch.load(result.files[1], weights_only=True)["metadata"]["run_id"]
    )
    assert not (tmp_path / "s" / ".router_progress").exists()


def test_length_sorted_batches_give_the_same_numbers(
    tmp_path: Path, selector_model: Path, chats
) -> None:
    data = chats(5)
    a = score(score_config(tmp_path, selector_model, data, tmp_path / "a"), echo=QUIET)
    b = score(
        score_config(
            tmp_path, selector_model, data, tmp_path / "b", "dataset.sort_by_length=false"
        ),
        echo=QUIET,
    )
    left, right = (torch.load(r.files[0], weights_only=True) for r in (a, b))
    assert left["sample_ids"] == right["sample_ids"]
    torch.testing.assert_close(left["quality_gates"], right["quality_gates"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(left["perplexities"], right["perplexities"], atol=1e-4, rtol=1e-4)


def test_a_stopped_selection_skips_its_finished_batches(
    tmp_path: Path, selector_model: Path, chats
) -> None:
    data = chats(6)  # 12 records, batches of 3: 4 batches
    whole = score(score_config(tmp_path, selector_model, data, tmp_path / "whole"), echo=QUIET)
    interrupted = score_config(tmp_path, selector_model, data, tmp_path / "again")

    with pytest.raises(Stop):
        score(interrupted, echo=QUIET, on_batch=stop_after_two)
    assert len(list((tmp_path / "again" / ".router_progress").glob("batch-*.pt"))) == 2
    assert not (tmp_path / "again" / "router_data").exists()
    seen: list[int] = []
    resumed = score(interrupted, echo=QUIET, on_batch=seen.append)
    assert seen == [2, 3] and resumed.batches_run == 2
    left, right = (torch.load(r.files[0], weights_only=True) for r in (whole, resumed))
    assert left["sample_ids"] == right["sample_ids"]
    assert torch.equal(left["quality_gates"], right["quality_gates"])
    assert torch.equal(left["perplexities"], right["perplexities"])
    with pytest.raises(Stop):
        score(
            score_config(tmp_path, selector_model, data, tmp_path / "third"),
            echo=QUIET,
            on_batch=stop_after_two,
        )
    with pytest.raises(ConfigError, match="unfinished selection of other inputs"):
        score(
            score_config(
                tmp_path, selector_model, data, tmp_path / "third", "data_process.batch_size=4"
            ),
            echo=QUIET,
        )


def test_warmup_weights_of_another_model_are_refused(
    tmp_path: Path, selector_model: Path, chats
) -> None:
    data = chats(2)
    foreign = tmp_path / "w" / "full_rank_weights.pt"
    foreign.parent.mkdir()
    torch.save(
        {
            "model_state_dict": {"model.layers.0.quality_gate.gate.weight": torch.zeros(1, 99)},
            "tokenizer_name": "x",
        },
        foreign,
    )
    with pytest.raises(ConfigError, match="do not match the model") as caught:
        score(
            score_config(
                tmp_path,
                selector_model,
                data,
                tmp_path / "s",
                f"model_checkpoint_path={foreign.parent}",
            ),
            echo=QUIET,
        )
    assert caught.value.location == str(foreign)
    foreign.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="cannot read the warmup checkpoint"):
        score(
            score_config(
                tmp_path, selector_model, data, tmp_path / "s2", f"model_checkpoint_path={foreign}"
            ),
            echo=QUIET,
        )
    with pytest.raises(ConfigError, match="no warmup weights here"):
        score(
            score_config(
                tmp_path, selector_model, data, tmp_path / "s3", f"model_checkpoint_path={tmp_path}"
            ),
            echo=QUIET,
        )


def finetune_config(tmp_path: Path, base: Path, data: Path, *overrides: str) -> FinetuneConfig:
    settings = {
        "stage": "finetune",
        "training": {
            "model": {"name": str(base)},
            "lora": {"r": 4, "lora_alpha": 8},
            "batch_size": 4,
            "epochs": 1,
            "learning_rate": 1e-3,
        },
        "dataset": {"data_path": [str(data)], "max_seq_len": 48},
        "output_dir": str(tmp_path / "f"),
    }
    return config(FinetuneConfig, tmp_path, settings, *overrides)


def test_finetune_trains_and_saves_lora_adapters_only(
    tmp_path: Path, base_model: Path, chats
) -> None:
    data = chats(4)
    before = load_file(base_model / "model.safetensors")
    result = finetune(finetune_config(tmp_path, base_model, data), echo=QUIET)
    adapter = json.loads((result.final / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    weights = load_file(result.final / "adapter_model.safetensors")
    assert weights and all("lora_" in name for name in weights)
    assert any(
        float(w.abs().sum()) > 0 for n, w in weights.items() if "lora_B" in n
    )  # B starts at 0
    assert (tmp_path / "f" / "checkpoint-2" / "adapter_config.json").is_file()
    assert result.records == 8 and result.last["step"] == 2
    after = load_file(base_model / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_finetune_refuses_what_it_cannot_train(tmp_path: Path, base_model: Path, chats) -> None:
    data = chats(2)
    with pytest.raises(ConfigError, match=r"no local model folder 'Qwen/Qwen2\.5-1\.5B'") as caught:
        finetune(
            finetune_config(tmp_path, base_model, data, "training.model.name=Qwen/Qwen2.5-1.5B"),
            echo=QUIET,
        )
    assert "huggingface-cli download" in (caught.value.hint or "")
    with pytest.raises(ConfigError, match=r"no module\(s\) named c_attn"):
        finetune(
            finetune_config(
                tmp_path, base_model, data, "training.lora.target_modules=[q_proj,c_attn]"
            ),
            echo=QUIET,
        )
    with pytest.raises(ConfigError, match="not a multiple"):
        finetune(
            finetune_config(tmp_path, base_model, data, "training.per_device_batch_size=3"),
            echo=QUIET,
        )


def test_finetune_in_full_mode_trains_every_weight(tmp_path: Path, base_model: Path, chats) -> None:
    result = finetune(
        finetune_config(
            tmp_path, base_model, chats(2), "training.peft_mode=full", "dataset.mode=full"
        ),
        echo=QUIET,
    )
    assert (result.final / "model.safetensors").is_file() and not (
        result.final / "adapter_config.json"
    ).exists()


def test_without_output_dir_a_stage_writes_to_the_seeds_timestamped_folder(
    tmp_path: Path, base_model: Path, chats, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = chats(2)
    monkeypatch.chdir(tmp_path)
    settings = finetune_config(tmp_path, base_model, data, "~output_dir")
    result = finetune(settings, ["training.epochs=1"], echo=QUIET)
    folder = result.output_dir
    assert folder.parents[1] == tmp_path / "outputs" / "stage_3_finetune"
    assert folder.name.endswith("-training.epochs=1") and len(folder.parent.name) == 10
    assert yaml.safe_load((folder / "config.yaml").read_text())["training"]["lora"]["r"] == 4


def finetune_on_two_processes(
    tmp_path: Path, base_model: Path, data: Path, **extra: Any
) -> subprocess.CompletedProcess[str]:
    """``stagewise select finetune`` under torchrun: two CPU processes, DDP over gloo."""
    path = tmp_path / "stage_3_finetune.yaml"
    settings = {
        "stage": "finetune",
        "training": {
            "model": {"name": str(base_model)},
            "lora": {"r": 4, "lora_alpha": 8},
            "batch_size": 4,
            "epochs": 1,
            "log_every": 1,
        },
        "dataset": {"data_path": [str(data)], "max_seq_len": 48},
        **extra,
    }
    path.write_text(yaml.safe_dump(settings))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*torchrun, "-m", "stagewise", "select", "finetune", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
        cwd=tmp_path,
    )


def test_finetune_on_two_gloo_processes(tmp_path: Path, base_model: Path, chats) -> None:
    """One output folder; rank 0 alone speaks and writes."""
    done = finetune_on_two_processes(tmp_path, base_model, chats(4))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (folder,) = (tmp_path / "outputs" / "stage_3_finetune").glob("*/*")  # one run folder
    assert (folder / "checkpoint-final" / "adapter_model.safetensors").is_file()
    assert "1 x 2 per process, 2 process(es)" in done.stdout
    assert done.stdout.count("finetune done") == 1
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("architecture", ["qwen3", "llama"])
def test_each_supported_family_runs_the_stages(tmp_path: Path, architecture: str, chats) -> None:
    """The code a real Qwen3-1.7B or Llama folder meets: convert, warmup, score, finetune."""
    from stagewise.select.gate import convert
    from stagewise.select.tiny import build_tiny_base

    base = build_tiny_base(
        tmp_path / architecture,
        architecture=architecture,
        hidden_size=32,
        layers=2,
        steps=2,
        echo=QUIET,
    )
    assert json.loads((base / "config.json").read_text())["model_type"] == architecture
    selector = convert(base, tmp_path / f"qg-{architecture}")
    data = chats(2)
    warmup(warmup_config(tmp_path, selector, data, tmp_path / "w"), echo=QUIET)
    scored = score(
        score_config(
            tmp_path, selector, data, tmp_path / "s", f"model_checkpoint_path={tmp_path / 'w'}"
        ),
        echo=QUIET,
    )
    assert torch.load(scored.files[0], weights_only=True)["quality_gates"].shape[:2] == (4, 2)
    tuned = finetune(finetune_config(tmp_path, base, data), echo=QUIET)
    assert (tuned.final / "adapter_model.safetensors").is_file()
