"""`stagewise stage validate`: every finding with file, line, key and fix; all at once."""

from __future__ import annotations

import json
from pathlib import Path

from stagewise.release import open_release
from stagewise.release.validation import validate_file, validate_release


def findings(repo: Path) -> list[tuple[str, str | None, str]]:
    return [(p.severity, p.key, p.message) for p in validate_release(open_release(repo)).problems]


def edit_json(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=4))


def test_a_new_repo_is_clean(repo: Path) -> None:
    report = validate_release(open_release(repo))
    assert report.problems == []
    assert len(report.files) == 9


def test_the_seed_examples_have_only_the_expected_findings(seed_repo: Path) -> None:
    report = validate_release(open_release(seed_repo))
    # The seed names stage files it does not show: those are the only errors.
    assert {p.message for p in report.errors} == {
        "config_file 'stages/evaluation.json' does not exist",
        "config_file 'stages/online_learning.json' does not exist",
        "config_file 'stages/ab_testing/variant_a.json' does not exist",
        "config_file 'stages/ab_testing/variant_b.json' does not exist",
    }
    messages = [p.message for p in report.warnings]
    assert any("'parking' matches no enabled dataset" in m for m in messages)
    assert all(p.file and p.line for p in report.problems)


def test_several_problems_in_several_files_are_reported_together(repo: Path) -> None:
    def break_finetuning(data):  # type: ignore[no-untyped-def]
        data["dataset_index"][1]["name"] = data["dataset_index"][0]["name"]
        data["dataset_index"][2]["path"] = "data/missing.jsonl"
        data["dataset_index"][0]["stage_weght"] = 0.6

    edit_json(repo / "stages" / "finetuning.json", break_finetuning)
    config = repo / "stage_config.yaml"
    config.write_text(
        config.read_text()
        .replace('default_stage: "pretraining"', 'default_stage: "pretrain"')
        .replace('condition: "training_complete"', 'condition: "loss <"')
    )
    found = findings(repo)
    errors = [(key, message) for severity, key, message in found if severity == "error"]
    assert ("default_stage", "stage 'pretrain' is not defined under 'stages'") in errors
    assert any(
        key == "stages.evaluation.auto_switch_conditions[0].condition" and "ends too early" in m
        for key, m in errors
    )
    assert any(key == "dataset_index[1].name" and "used more than once" in m for key, m in errors)
    assert any(key == "dataset_index[2].path" and "does not exist" in m for key, m in errors)
    warnings = [(key, message) for severity, key, message in found if severity == "warning"]
    assert ("dataset_index[0].stage_weght", "unknown key 'stage_weght' (kept as is)") in warnings


def test_weight_findings(repo: Path) -> None:
    def zero(data):  # type: ignore[no-untyped-def]
        for entry in data["dataset_index"]:
            entry["stage_weight"] = 0

    edit_json(repo / "stages" / "pretraining.json", zero)
    assert ("error", "dataset_index", "every stage_weight is 0") in findings(repo)

    def unnormalised(data):  # type: ignore[no-untyped-def]
        for entry in data["dataset_index"]:
            entry["stage_weight"] = 1

    edit_json(repo / "stages" / "pretraining.json", unnormalised)
    assert any(
        s == "warning" and "sum to 4; they are normalised" in m for s, _, m in findings(repo)
    )


def test_epochs_off_the_check_interval_and_shared_priorities_warn(repo: Path) -> None:
    config = repo / "stage_config.yaml"
    config.write_text(
        config.read_text().replace("epoch: 50", "epoch: 55").replace("priority: 3", "priority: 2")
    )
    warnings = [m for s, _, m in findings(repo) if s == "warning"]
    assert any("switch happens at epoch 60" in m for m in warnings)
    assert any("priority 2 is shared" in m for m in warnings)


def test_a_mistyped_condition_name_is_caught(repo: Path) -> None:
    config = repo / "stage_config.yaml"
    config.write_text(
        config.read_text()
        + 'conditions:\n  pretraining_complete: "loss < 0.1"\n'.replace(
            "pretraining_complete", "pretraining_completed"
        )
    )
    assert any(
        "did you mean" not in m and "'pretraining_complete' is not a defined condition" in m
        for _, _, m in findings(repo)
    )


def test_unreferenced_stage_files_warn(repo: Path) -> None:
    (repo / "stages" / "old_experiment.json").write_text(
        (repo / "stages" / "evaluation.json").read_text()
    )
    assert ("warning", None, "no stage in stage_config.yaml uses this file") in findings(repo)


def test_validate_one_file(repo: Path) -> None:
    report = validate_file(open_release(repo), str(repo / "stages" / "finetuning.json"))
    assert report.problems == [] and report.files == [str(repo / "stages" / "finetuning.json")]
    (repo / "active_stage.yaml").write_text("current_stage: nowhere\n")
    report = validate_file(open_release(repo), str(repo / "active_stage.yaml"))
    assert [(p.key, p.line) for p in report.errors] == [("current_stage", 1)]


def test_a_label_without_an_epoch_and_an_ab_stage_without_a_variant_warn(repo: Path) -> None:
    config = repo / "stage_config.yaml"
    config.write_text(
        config.read_text().replace("      - epoch: 100\n        condition:", "      - condition:")
    )
    active = repo / "active_stage.yaml"
    active.write_text(
        active.read_text().replace("current_stage: pretraining", "current_stage: ab_testing")
    )
    warnings = [m for s, _, m in findings(repo) if s == "warning"]
    assert any("'training_complete' is a label with no epoch" in m for m in warnings)
    assert any("has A/B variants but no current_variant" in m for m in warnings)
