"""Chat records: the seed's shape, OpenHermes conversations, and located errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagewise.errors import DataError
from stagewise.select.records import convert_openhermes, read_records, subset
from tests.select.conftest import write_jsonl

CHAT = {
    "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
    "dataset": "openhermes",
    "id": "openhermes_12345",
}


def test_the_seeds_record_is_read_as_written(tmp_path: Path) -> None:
    (record,) = read_records([str(write_jsonl(tmp_path / "a.jsonl", [CHAT]))])
    assert (record.dataset, record.id, record.is_target_task) == (
        "openhermes",
        "openhermes_12345",
        False,
    )
    assert record.to_json() == CHAT
    assert record.length == len("user") + 1 + len("assistant") + 1


def test_openhermes_conversations_become_messages(tmp_path: Path) -> None:
    line = {
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "human", "value": "Q"},
            {"from": "gpt", "value": "A"},
        ]
    }
    (record,) = read_records([str(write_jsonl(tmp_path / "hermes.jsonl", [line]))])
    assert [m["role"] for m in record.messages] == ["system", "user", "assistant"]
    assert record.dataset == "hermes" and record.id == "hermes_1"  # file name, line number
    assert convert_openhermes(line)["messages"][1] == {"role": "user", "content": "Q"}


def test_target_files_mark_their_records(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [CHAT, CHAT | {"id": "x", "is_target_task": True}])
    assert [r.is_target_task for r in read_records([str(path)])] == [False, True]
    assert all(r.is_target_task for r in read_records([str(path)], target=True))


def test_every_bad_record_is_named_with_its_line(tmp_path: Path) -> None:
    no_answer = CHAT | {"messages": [{"role": "user", "content": "Q"}], "id": "b"}
    empty_answer = CHAT | {
        "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": " "}],
        "id": "c",
    }
    bad_role = CHAT | {"messages": [{"role": "bot", "content": "A"}], "id": "d"}
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps(CHAT)
        + "\n"
        + json.dumps(no_answer)
        + "\n{oops\n"
        + json.dumps(empty_answer)
        + "\n"
        + json.dumps(bad_role)
        + "\n"
        + json.dumps({"text": "x"})
        + "\n"
    )
    with pytest.raises(DataError) as caught:
        read_records([str(path)])
    found = {(p.line, p.message.split(";")[0]) for p in caught.value.problems}
    assert (2, "the messages have no assistant turn with text") in found
    assert any(line == 3 and "not JSON" in message for line, message in found)
    assert (4, "the messages have no assistant turn with text") in found
    assert any(line == 5 and "role is 'bot'" in message for line, message in found)
    assert any(line == 6 and "no 'messages'" in message for line, message in found)
    assert all(p.file == str(path) for p in caught.value.problems)
    assert "assistant turn" in (caught.value.hint or "")


def test_an_empty_file_and_a_missing_file_are_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError) as caught:
        read_records([str(empty)])
    assert caught.value.problems[0].message == "the file holds no records"
    with pytest.raises(DataError, match="no such data file") as missing:
        read_records([str(tmp_path / "absent.jsonl")])
    assert missing.value.location == "dataset.data_path"
    with pytest.raises(DataError, match="no such data file"):
        read_records([str(tmp_path / "*.none")])


def test_a_repeated_id_within_a_dataset_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "dup.jsonl", [CHAT, CHAT])
    with pytest.raises(DataError, match="appears twice") as caught:
        read_records([str(path)])
    assert caught.value.location == f"{path}:2" and f"{path}:1" in (caught.value.hint or "")


def test_globs_expand_in_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "b.jsonl", [CHAT | {"dataset": "b"}])
    write_jsonl(tmp_path / "a.jsonl", [CHAT | {"dataset": "a"}])
    assert [r.dataset for r in read_records([str(tmp_path / "*.jsonl")])] == ["a", "b"]


def test_subset_is_seeded_per_dataset_and_keeps_target_records(tmp_path: Path) -> None:
    records = [CHAT | {"id": str(i), "dataset": "a" if i < 40 else "b"} for i in range(60)]
    records += [CHAT | {"id": f"t{i}", "is_target_task": True} for i in range(5)]
    loaded = read_records([str(write_jsonl(tmp_path / "x.jsonl", records))])
    picked = subset(loaded, 0.25, seed=7)
    counts = {
        name: sum(r.dataset == name and not r.is_target_task for r in picked) for name in "ab"
    }
    assert counts == {"a": 10, "b": 5}
    assert sum(r.is_target_task for r in picked) == 5
    assert [r.id for r in picked] == [r.id for r in subset(loaded, 0.25, seed=7)]
    assert [r.id for r in picked] != [r.id for r in subset(loaded, 0.25, seed=8)]
    assert subset(loaded, 1.0, seed=0) == loaded


@pytest.mark.parametrize("name", ["../escape", "", ".hidden", "a/b", 3])
def test_a_dataset_name_must_be_safe_as_a_file_name(tmp_path: Path, name: object) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [CHAT | {"dataset": name}])
    with pytest.raises(DataError) as caught:
        read_records([str(path)])
    assert "'dataset' must be a name" in caught.value.problems[0].message
