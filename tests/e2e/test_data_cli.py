"""`stagewise data ...` through the real command: JSON output, the YAML config, and every
user error printed as headline, location and fix, without a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    from stagewise.data.synth import synth_traffic

    folder = tmp_path_factory.mktemp("raw")
    synth_traffic(folder, nodes=16, steps=300, seed=5)
    return folder


def _clean_error(result, *needles: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_flags_and_yaml_config_build_the_same_store(cli, raw, tmp_path):
    flags = cli(
        "data", "preprocess", "--source", str(raw / "records.parquet"), "--meta",
        str(raw / "nodes.csv"), "--output", "by_flags", "--input_len", "6", "--output_len",
        "3", "--json",
    )  # fmt: skip
    assert flags.returncode == 0, flags.stderr
    built = json.loads(flags.stdout)
    assert built["cached"] is False and built["splits"] == {"train": 172, "val": 52, "test": 52}
    (tmp_path / "prep.yaml").write_text(
        f"source: {raw / 'records.parquet'}\noutput: by_yaml\n"
        f"timeseries:\n  meta: {raw / 'nodes.csv'}\n  input_len: 6\n  output_len: 3\n"
    )
    from_yaml = cli("data", "preprocess", "prep.yaml", "--json")
    assert json.loads(from_yaml.stdout)["splits"] == built["splits"]
    again = cli("data", "preprocess", "prep.yaml")
    assert again.returncode == 0 and "cache hit" in again.stdout
    overridden = cli("data", "preprocess", "prep.yaml", "--input_len", "12", "--json")
    assert json.loads(overridden.stdout)["splits"]["train"] == 172 - 6

    inspected = json.loads(cli("data", "inspect", "by_flags", "--json", "-n", "1").stdout)
    assert inspected["kind"] == "windows" and inspected["samples"] == 276
    assert inspected["arrays"]["series"]["shape"] == [300, 16, 1]
    assert inspected["first_samples"][0]["start"] == 0
    verified = cli("data", "verify", "by_flags", "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True


def test_verify_exits_1_and_names_a_damaged_file(cli, raw, tmp_path):
    cli("data", "preprocess", "--source", str(raw / "records.parquet"), "--output", "s")
    series = next(tmp_path.glob("s/v-*/arrays/series.npy"))
    data = bytearray(series.read_bytes())
    data[-1] ^= 0xFF
    series.write_bytes(bytes(data))
    result = cli("data", "verify", "s")
    assert result.returncode == 1
    assert "arrays/series.npy" in result.stdout and "checksum" in result.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["data", "inspect", "nowhere"], ["nowhere", "no sample store here", "fix:"]),
        (
            ["data", "preprocess", "--source", "missing.parquet", "--output", "o"],
            ["missing.parquet", "fix:"],
        ),
        (
            ["data", "preprocess", "--source", "RAW", "--output", "o", "--train_ratio", "0.7"],
            ["train_ratio + val_ratio + test_ratio must be 1, found 1.1"],
        ),
        (
            ["data", "preprocess", "--source", "RAW", "--output", "o", "--start_date", "2025"],
            ["timeseries.start_date", "expected YYYYMMDD"],
        ),
        (
            ["data", "preprocess", "--source", "RAW", "--output", "o", "--input_len", "999"],
            ["the train split has", "fewer than one window", "fix:"],
        ),
        (
            ["data", "preprocess", "--source", "RAW", "--output", "o", "--transform", "x:y"],
            ["cannot import module 'x'", "transform"],
        ),
        (["data", "preprocess", "--output", "o"], ["source", "a required key is missing"]),
        (["data", "plan", "--repo", "no_repo"], ["no_repo"]),
    ],
)
def test_user_errors_are_one_clean_message(cli, raw, args, needles):
    args = [str(raw / "records.parquet") if a == "RAW" else a for a in args]
    _clean_error(cli(*args), *needles)


def test_a_timeseries_setting_that_is_not_a_mapping(cli, raw, tmp_path):
    (tmp_path / "bad.yaml").write_text(
        f"source: {raw / 'records.parquet'}\noutput: o\ntimeseries: 5\n"
    )
    _clean_error(cli("data", "preprocess", "bad.yaml"), "bad.yaml:3", "must be a mapping")


def test_unknown_yaml_keys_are_errors(cli, raw, tmp_path):
    (tmp_path / "bad.yaml").write_text(
        f"source: {raw / 'records.parquet'}\noutput: o\ntimeseries:\n  inputlen: 6\n"
    )
    _clean_error(cli("data", "preprocess", "bad.yaml"), "unknown setting", "timeseries.inputlen")


def test_a_newer_store_format_is_refused(cli, raw, tmp_path):
    cli("data", "preprocess", "--source", str(raw / "records.parquet"), "--output", "s")
    metadata = next(tmp_path.glob("s/v-*/metadata.json"))
    data = json.loads(metadata.read_text())
    data["format_version"] = 7
    metadata.write_text(json.dumps(data))
    _clean_error(cli("data", "inspect", "s"), "format version 7", "upgrade stagewise")


def test_synth_traffic_and_its_bad_input(cli, tmp_path):
    result = cli(
        "data", "synth", "traffic", "out", "--nodes", "3", "--steps", "4", "--format", "csv"
    )
    assert result.returncode == 0 and (tmp_path / "out" / "records.csv").is_file()
    _clean_error(cli("data", "synth", "traffic", "out", "--format", "xml"), "parquet, csv or jsonl")


def test_a_seed_003_jsonl_list_prints_per_dataset_counts(cli, tmp_path):
    for name, rows in (("food101", 3), ("food2k", 5)):
        (tmp_path / name).mkdir()
        lines = [json.dumps({"image_path": f"{name}/{i}.jpg", "label": i}) for i in range(rows)]
        (tmp_path / name / "train.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "prep.yaml").write_text(
        "source: [food101/train.jsonl, food2k/train.jsonl, imagenet/train.jsonl]\n"
        "transform: none\noutput: store\n"
    )
    result = cli("data", "preprocess", "prep.yaml")
    assert result.returncode == 0, result.stderr
    assert "📊 多数据集加载统计 (训练模式):" in result.stdout
    assert "• food101: 3 samples (37.5%)" in result.stdout
    assert "📊 总计: 8 samples" in result.stdout
    assert "imagenet/train.jsonl" in result.stderr  # skipped with a warning, as in the seed
    strict = tmp_path / "strict.yaml"
    strict.write_text((tmp_path / "prep.yaml").read_text() + "missing_files: error\n")
    _clean_error(cli("data", "preprocess", "strict.yaml"), "imagenet/train.jsonl")
