"""StageController: automatic switching as a training loop reports epochs and metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from stagewise.release import StageController, open_release


def edit_stage_config(repo: Path, change: Any) -> None:
    path = repo / "stage_config.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def run_epochs(
    controller: StageController, epochs: range, metrics: Any = None
) -> list[tuple[int, str, str]]:
    switches = []
    for epoch in epochs:
        values = metrics(epoch) if metrics else {"loss": 1.0 / epoch}
        decision = controller.observe(epoch=epoch, metrics=values)
        if decision.switched:
            switches.append((epoch, decision.from_stage, decision.to_stage))
    return switches


def events(repo: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (repo / "stage_events.jsonl").read_text().splitlines()]


def test_the_seed_schedule_switches_at_epochs_50_and_100(repo: Path) -> None:
    controller = StageController(open_release(repo), run_id="r")
    assert controller.start() == "pretraining"
    switches = run_epochs(
        controller, range(1, 121), lambda e: {"loss": round(1 / e, 4), "accuracy": 0.9}
    )
    assert switches == [(50, "pretraining", "finetuning"), (100, "finetuning", "evaluation")]
    first, second = events(repo)
    assert first["trigger"] == "auto" and first["condition"] == "epoch >= 50 (pretraining_complete)"
    assert first["metadata"] == {"epoch": 50, "loss": 0.02, "accuracy": 0.9}
    assert second["metadata"]["epoch"] == 100


def test_conditions_are_checked_only_every_check_interval(repo: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["stages"]["finetuning"]["auto_switch_conditions"] = [{"epoch": 55}]

    edit_stage_config(repo, change)
    switches = run_epochs(StageController(open_release(repo)), range(1, 70))
    assert switches == [(60, "pretraining", "finetuning")]


def test_named_conditions_test_metrics(repo: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["conditions"] = {"pretraining_complete": "loss < 0.1"}
        data["switch_strategy"]["check_interval"] = 1

    edit_stage_config(repo, change)
    controller = StageController(open_release(repo))
    switches = run_epochs(controller, range(1, 80), lambda e: {"loss": 0.5 if e < 64 else 0.05})
    assert switches == [(64, "pretraining", "finetuning")]


def test_expression_conditions_and_metrics_not_yet_seen(repo: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["stages"]["finetuning"]["auto_switch_conditions"] = [
            {"condition": "loss < 0.1 and overall_accuracy > 0.8"}
        ]
        data["switch_strategy"]["check_interval"] = 1

    edit_stage_config(repo, change)
    controller = StageController(open_release(repo))
    # overall_accuracy is not reported until epoch 5: the comparison is false until then
    switches = run_epochs(
        controller,
        range(1, 8),
        lambda e: {"loss": 0.05} | ({"overall_accuracy": 0.9} if e >= 5 else {}),
    )
    assert switches == [(5, "pretraining", "finetuning")]
    assert events(repo)[-1]["condition"] == "loss < 0.1 and overall_accuracy > 0.8"


def test_manual_mode_never_switches(repo: Path) -> None:
    edit_stage_config(repo, lambda d: d["switch_strategy"].update(mode="manual"))
    assert run_epochs(StageController(open_release(repo)), range(1, 121)) == []


def test_hybrid_mode_skips_stages_marked_manual(repo: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["switch_strategy"]["mode"] = "hybrid"
        data["stages"]["evaluation"]["trigger_mode"] = "manual"

    edit_stage_config(repo, change)
    switches = run_epochs(StageController(open_release(repo)), range(1, 121))
    assert switches == [(50, "pretraining", "finetuning")]
    edit_stage_config(repo, lambda d: d["switch_strategy"].update(mode="auto"))
    (repo / "active_stage.yaml").unlink()
    switches = run_epochs(StageController(open_release(repo)), range(1, 121))
    assert switches[-1] == (100, "finetuning", "evaluation")


def test_a_late_first_check_jumps_to_the_furthest_stage_whose_conditions_hold(repo: Path) -> None:
    controller = StageController(open_release(repo))
    decision = controller.observe(epoch=100, metrics={"loss": 0.01})
    assert (decision.from_stage, decision.to_stage) == ("pretraining", "evaluation")


def test_start_activates_the_default_stage_when_none_is_active(repo: Path) -> None:
    (repo / "active_stage.yaml").unlink()
    release = open_release(repo)
    assert StageController(release).start() == "pretraining"
    active = release.read_active()
    assert (
        active is not None
        and active.switch_reason == "training_start"
        and active.activated_by == "system"
    )
    (event,) = events(repo)
    assert (
        event["from_stage"] is None
        and event["to_stage"] == "pretraining"
        and event["condition"] == "start"
    )


def test_next_stage_gets_an_estimated_time_from_the_epoch_pace(repo: Path) -> None:
    release = open_release(repo)
    controller = StageController(release)
    controller.observe(epoch=1, metrics={"loss": 1.0})
    active = release.read_active()
    assert active is not None and active.next_stage is not None
    assert active.next_stage.predicted_stage == "finetuning"
    assert active.next_stage.estimated_switch_time is None  # one epoch says nothing about pace
    controller.observe(epoch=2, metrics={"loss": 0.9})
    next_stage = release.read_active().next_stage  # type: ignore[union-attr]
    assert next_stage is not None and next_stage.estimated_switch_time is not None
    assert next_stage.conditions == ["epoch >= 50 (pretraining_complete)"]


def test_a_stage_with_variants_gets_the_run_ids_variant(repo: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["stages"]["ab_testing"]["priority"] = 2
        data["stages"]["ab_testing"]["auto_switch_conditions"] = [{"epoch": 10}]

    edit_stage_config(repo, change)
    release = open_release(repo)
    decision = StageController(release, run_id="run-7").observe(epoch=10)
    assert decision.to_stage == "ab_testing"
    expected = release.choose_variant("ab_testing", env={}, run_id="run-7")
    assert decision.variant == expected and release.read_active().current_variant == expected  # type: ignore[union-attr]
    assert release.resolve({"TRAINING_STAGE": "auto"}).variant == expected


def test_ab_variant_applies_only_to_stages_with_variants(repo: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def change(data: dict[str, Any]) -> None:
        data["stages"]["ab_testing"]["priority"] = 3
        data["stages"]["ab_testing"]["auto_switch_conditions"] = [{"epoch": 100}]
        data["switch_strategy"]["check_interval"] = 50

    edit_stage_config(repo, change)
    monkeypatch.setenv("AB_VARIANT", "variant_b")
    release = open_release(repo)
    switches = run_epochs(StageController(release, run_id="r"), range(1, 101))
    assert switches == [(50, "pretraining", "finetuning"), (100, "finetuning", "ab_testing")]
    assert release.read_active().current_variant == "variant_b"  # type: ignore[union-attr]


def test_a_label_without_an_epoch_never_switches_on_its_own(repo: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["stages"]["evaluation"]["auto_switch_conditions"] = [
            {"condition": "training_complete"}
        ]

    edit_stage_config(repo, change)
    controller = StageController(open_release(repo))
    assert controller.observe(epoch=10, metrics={"loss": 0.9}).to_stage == "pretraining"
    decision = controller.observe(epoch=20, metrics={"training_complete": True})
    assert decision.to_stage == "evaluation"  # a reported flag of that name does switch


def test_alternatives_read_as_alternatives_in_next_stage(repo: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["stages"]["finetuning"]["auto_switch_conditions"] = [
            {"epoch": 50},
            {"condition": "loss < 0.1"},
        ]

    edit_stage_config(repo, change)
    release = open_release(repo)
    StageController(release).observe(epoch=1, metrics={"loss": 0.5})
    assert release.read_active().next_stage.conditions == ["epoch >= 50", "loss < 0.1"]  # type: ignore[union-attr]
