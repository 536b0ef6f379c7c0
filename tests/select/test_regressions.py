"""The review's findings on the selection stages, each pinned by a test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from stagewise.errors import ConfigError, DataError
from stagewise.select.batch_selection import pick, share
from stagewise.select.docstrings import clean_and_corrupted
from stagewise.select.finetune import finetune
from stagewise.select.router import score
from stagewise.select.warmup import warmup
from tests.select.conftest import write_jsonl
from tests.select.test_stages import (
    QUIET,
    Stop,
    finetune_config,
    finetune_on_two_processes,
    score_config,
    stop_after_two,
    stop_at_step_5,
    warmup_config,
)


def test_two_processes_do_not_hang_when_one_has_no_sample(tmp_path: Path, base_model: Path) -> None:
    clean, bad = clean_and_corrupted(5, 0)
    data = write_jsonl(tmp_path / "nine.jsonl", (clean + bad)[:9])  # the last batch of 4 holds 1
    done = finetune_on_two_processes(tmp_path, base_model, data, output_dir=str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [
        json.loads(x)["step"] for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    ] == [1, 2, 3]


def test_pick_refuses_an_unfinished_selection(tmp_path: Path, selector_model: Path, chats) -> None:
    data = chats(6)
    config = score_config(tmp_path, selector_model, data, tmp_path / "s")
    score(config, echo=QUIET)  # a finished run: router_data/ is there

    def stop(number: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        score(config, echo=QUIET, on_batch=stop)  # a second run on the same folder, stopped
    with pytest.raises(DataError, match="has not finished") as caught:
        pick(tmp_path / "s", 0.5)
    assert "run the same 'stagewise select score' command again" in (caught.value.hint or "")
    score(config, echo=QUIET)
    assert pick(tmp_path / "s", 0.5)[0].selected == 6


def test_the_selection_refuses_torchrun(
    tmp_path: Path, selector_model: Path, chats, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="runs in one process"):
        score(score_config(tmp_path, selector_model, chats(2), tmp_path / "s"), echo=QUIET)


def test_a_selector_whose_weights_do_not_fit_its_config(
    tmp_path: Path, selector_model: Path, chats
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(selector_model, broken)
    settings = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(settings | {"hidden_size": 48}))
    with pytest.raises(ConfigError, match="cannot load the selector model") as caught:
        score(score_config(tmp_path, broken, chats(2), tmp_path / "s"), echo=QUIET)
    assert caught.value.location == str(broken)


def test_adapters_that_are_not_a_gate_warmup_are_refused(
    tmp_path: Path, base_model: Path, selector_model: Path, chats
) -> None:
    data = chats(2)
    tuned = finetune(finetune_config(tmp_path, base_model, data), echo=QUIET)
    with pytest.raises(ConfigError, match="not a warmup's gate adapter") as caught:
        score(
            score_config(
                tmp_path,
                selector_model,
                data,
                tmp_path / "s",
                f"model_checkpoint_path={tuned.final}",
            ),
            echo=QUIET,
        )
    assert caught.value.location == str(tuned.final / "adapter_config.json")


def test_non_tensor_gate_weights_are_refused(tmp_path: Path, selector_model: Path, chats) -> None:
    weights = tmp_path / "full_rank_weights.pt"
    torch.save({"model_state_dict": {"model.layers.0.quality_gate.gate.weight": [1, 2]}}, weights)
    with pytest.raises(ConfigError, match="not tensors"):
        score(
            score_config(
                tmp_path,
                selector_model,
                chats(2),
                tmp_path / "s",
                f"model_checkpoint_path={weights}",
            ),
            echo=QUIET,
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_devices_are_checked(tmp_path: Path, selector_model: Path, chats) -> None:
    data = chats(2)
    with pytest.raises(ConfigError) as caught:
        score_config(tmp_path, selector_model, data, tmp_path / "s", "device=gpu")
    assert caught.value.problems[0].key == "device"
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        score(
            score_config(tmp_path, selector_model, data, tmp_path / "s", "device=cuda"), echo=QUIET
        )


def test_a_damaged_progress_file_is_recomputed(tmp_path: Path, selector_model: Path, chats) -> None:
    data = chats(6)
    config = score_config(tmp_path, selector_model, data, tmp_path / "s")
    whole = score(score_config(tmp_path, selector_model, data, tmp_path / "whole"), echo=QUIET)

    with pytest.raises(Stop):
        score(config, echo=QUIET, on_batch=stop_after_two)
    damaged = tmp_path / "s" / ".router_progress" / "batch-000001.pt"
    damaged.write_bytes(damaged.read_bytes()[:50])
    with pytest.raises(DataError, match="damaged") as caught:
        score(config, echo=QUIET)
    assert caught.value.location == str(damaged) and not damaged.exists()
    again = score(config, echo=QUIET)
    assert again.batches_run == 1
    left, right = (torch.load(r.files[0], weights_only=True) for r in (whole, again))
    assert torch.equal(left["quality_gates"], right["quality_gates"])


def test_resume_checks_what_changes_the_weights_and_only_that(
    tmp_path: Path, selector_model: Path, chats
) -> None:
    data = chats(6)
    out = tmp_path / "w"
    warmup(warmup_config(tmp_path, selector_model, data, out), echo=QUIET)
    before = (out / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="different run"):
        warmup(
            warmup_config(tmp_path, selector_model, data, out, "dataset.max_seq_len=16"), echo=QUIET
        )
    assert (out / "config.yaml").read_text() == before  # the refused run changed nothing
    lines: list[str] = []
    warmup(
        warmup_config(tmp_path, selector_model, data, out, "training.log_every=5"),
        echo=lines.append,
    )
    assert any("resuming from" in line for line in lines)


def test_the_log_has_each_step_once_after_a_resume(
    tmp_path: Path, selector_model: Path, chats
) -> None:
    data = chats(6)
    config = warmup_config(tmp_path, selector_model, data, tmp_path / "w", "training.epochs=2")

    with pytest.raises(Stop):
        warmup(config, echo=stop_at_step_5)
    warmup(config, echo=QUIET)
    logged = [
        json.loads(x)["step"] for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()
    ]
    assert logged == [1, 2, 3, 4, 5, 6]


def test_lora_warmup_adapters_start_from_the_seed(
    tmp_path: Path, selector_model: Path, chats
) -> None:
    data = chats(2)
    first = warmup(
        warmup_config(tmp_path, selector_model, data, tmp_path / "a", "training.peft_mode=lora"),
        echo=QUIET,
    )
    torch.rand(100)  # other work in the process moves the global RNG
    second = warmup(
        warmup_config(tmp_path, selector_model, data, tmp_path / "b", "training.peft_mode=lora"),
        echo=QUIET,
    )
    from safetensors.torch import load_file

    a, b = (load_file(r.weights / "adapter_model.safetensors") for r in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_share_kept_has_no_float_error() -> None:
    assert [share(p, 100) for p in (0.07, 0.14, 0.55, 0.05, 1.0)] == [7, 14, 55, 5, 100]
    assert share(0.25, 10) == 3


def test_a_finetune_with_nothing_left_to_learn_is_refused(
    tmp_path: Path, base_model: Path, chats
) -> None:
    with pytest.raises(DataError, match="keeps a token to learn") as caught:
        finetune(
            finetune_config(tmp_path, base_model, chats(2), "dataset.max_seq_len=8"), echo=QUIET
        )
    assert "max_seq_len" in (caught.value.hint or "")
