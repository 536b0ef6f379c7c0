"""`stagewise select ...` as a user runs it: results, and errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.select.conftest import write_jsonl


def stagewise(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stagewise", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=300,
    )


def failed(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_help_lists_the_seeds_commands() -> None:
    result = stagewise("select", "--help")
    assert result.returncode == 0
    for verb in ("convert", "warmup", "score", "pick", "finetune", "tiny-base"):
        assert verb in result.stdout
    assert "--percentage" in stagewise("select", "pick", "--help").stdout


def test_convert_score_and_pick_through_the_cli(tmp_path: Path, base_model: Path, chats) -> None:
    selector = tmp_path / "qg"
    done = stagewise("select", "convert", str(base_model), str(selector), "--mode", "probe")
    assert done.returncode == 0, done.stderr
    assert "Quality-Gate model (probe) written" in done.stdout
    data = chats(4)
    config = tmp_path / "stage_2_selection.yaml"
    config.write_text(
        f"stage: selection\nselector_model:\n  path: {selector}\ndataset:\n  data_path: [{data}]\n"
    )
    scored = stagewise(
        "select", "score", str(config), f"output_dir={tmp_path / 's'}", "data_process.batch_size=4"
    )
    assert scored.returncode == 0, scored.stderr
    assert "selection: 8 records in 2 batches of 4" in scored.stdout
    picked = stagewise("select", "pick", str(tmp_path / "s"), "--percentage", "0.25", "--json")
    assert picked.returncode == 0, picked.stderr
    (summary,) = json.loads(picked.stdout)
    assert summary["selected"] == 2 and summary["per_dataset"] == {"docs": {"selected": 2, "of": 8}}
    table = stagewise(
        "select", "pick", str(tmp_path / "s"), "--percentage", "0.5", "--scope", "per_dataset"
    )
    assert "4 of 8 records selected" in table.stdout


def test_bad_inputs_are_one_clear_error(tmp_path: Path, base_model: Path) -> None:
    failed(
        stagewise("select", "pick", str(tmp_path), "--percentage", "1.5"),
        "outside (0, 1]",
        "0.05 keeps",
    )
    failed(stagewise("select", "pick", str(tmp_path), "--percentage", "0.1"), "no router_data")
    failed(
        stagewise("select", "warmup", str(tmp_path / "absent.yaml")),
        "cannot read the warmup config",
    )
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text('{"model_type": "gpt2"}')
    failed(
        stagewise("select", "convert", str(gpt2), str(tmp_path / "out")),
        "unsupported architecture 'gpt2'",
    )

    no_answer = {"messages": [{"role": "user", "content": "hi"}], "id": "1"}
    data = write_jsonl(tmp_path / "chats.jsonl", [no_answer])
    config = tmp_path / "w.yaml"
    config.write_text(
        f"stage: warmup\nselector_model:\n  path: {tmp_path}\ndataset:\n  data_path: [{data}]\n"
    )
    result = stagewise("select", "warmup", str(config))
    failed(result, "not a Hugging Face model folder")
    stagewise("select", "convert", str(base_model), str(tmp_path / "qg"))
    config.write_text(
        f"stage: warmup\nselector_model:\n  path: {tmp_path / 'qg'}\ndataset:\n  data_path: [{data}]\n"
    )
    failed(stagewise("select", "warmup", str(config)), f"{data}:1", "no assistant turn")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    failed(
        stagewise("select", "warmup", str(config), f"dataset.data_path=[{empty}]"),
        "the file holds no records",
    )
    failed(
        stagewise("select", "warmup", str(config), "training.batch_size=0"), "training.batch_size"
    )
