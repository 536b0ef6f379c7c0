"""Every command of seed 000, translated to `stagewise ...`, run as a user would."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.conftest import CliRunner


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_stage_manager_commands_on_the_seed_examples(seed_repo: Path, cli: CliRunner) -> None:
    repo = ["--repo", str(seed_repo)]
    # python scripts/stage_manager.py status
    status = json.loads(ok(cli("stage", "status", *repo, "--json")))
    assert status["active"]["current_stage"] == "pretraining"
    assert status["resolution"]["rule"] == "active_stage"
    assert "active stage: pretraining" in ok(cli("stage", "status", *repo))
    # list-stages
    listed = json.loads(ok(cli("stage", "list-stages", *repo, "--json")))
    assert [s["stage"] for s in listed["stages"]] == [
        "pretraining",
        "finetuning",
        "evaluation",
        "online_learning",
        "ab_testing",
    ]
    assert "finetuning" in ok(cli("stage", "list", *repo))
    # switch-stage finetuning
    assert "switched pretraining -> finetuning" in ok(
        cli("stage", "switch-stage", "finetuning", *repo)
    )
    # activate finetuning --reason "manual_switch"
    ok(cli("stage", "activate", "finetuning", "--reason", "manual_switch", *repo))
    active = yaml.safe_load((seed_repo / "active_stage.yaml").read_text())
    assert active["current_stage"] == "finetuning" and active["switch_reason"] == "manual_switch"
    assert [h["stage"] for h in active["history"]] == ["pretraining", "finetuning", "finetuning"]
    # preview finetuning
    preview = json.loads(ok(cli("stage", "preview", "finetuning", *repo, "--json")))
    assert [d["name"] for d in preview["datasets"]] == [
        "toll_station_scenarios_refined",
        "intersection_complex_cases",
    ]
    assert [round(d["share"], 4) for d in preview["datasets"]] == [
        0.6667,
        0.3333,
    ]  # 0.6 and 0.3, normalised
    # validate-config stages/finetuning.json
    assert "valid" in ok(
        cli("stage", "validate-config", "stages/finetuning.json", *repo, cwd=seed_repo)
    )
    # report --output stage_report.md
    ok(cli("stage", "report", "--output", "stage_report.md", *repo, cwd=seed_repo))
    report = (seed_repo / "stage_report.md").read_text()
    assert "## History" in report and "manual_switch" in report and "## Next stage" in report
    # scenario 4: switch-stage online_learning; the seed does not show its file, and a switch
    # to a stage whose config is missing is refused, so create it from the template first
    refused = cli("stage", "switch-stage", "online_learning", *repo)
    assert refused.returncode == 2 and "stages/online_learning.json" in refused.stderr
    ok(
        cli(
            "release",
            "generate",
            "--template",
            "online_learning",
            "--stage",
            "online_learning",
            *repo,
        )
    )
    ok(cli("stage", "switch-stage", "online_learning", *repo))
    # history, rollback
    history = json.loads(ok(cli("stage", "history", *repo, "--json")))
    assert [h["stage"] for h in history][-1] == "online_learning"
    assert "rolled back online_learning -> finetuning" in ok(cli("stage", "rollback", *repo))
    events = [
        json.loads(line) for line in (seed_repo / "stage_events.jsonl").read_text().splitlines()
    ]
    assert [e["trigger"] for e in events] == ["manual", "manual", "manual", "rollback"]


def test_environment_variable_scenarios(repo: Path, cli: CliRunner) -> None:
    def resolve(**env: str) -> dict[str, object]:
        return json.loads(ok(cli("release", "resolve", "--json", env=env, cwd=repo)))

    # development: STAGE_CONFIG_PATH=./stage_config.yaml, TRAINING_STAGE=finetuning
    got = resolve(STAGE_CONFIG_PATH="./stage_config.yaml", TRAINING_STAGE="finetuning")
    assert (got["rule"], got["stage"]) == ("TRAINING_STAGE", "finetuning")
    # scenario 1: TRAINING_STAGE=auto follows the active stage
    assert resolve(TRAINING_STAGE="auto")["stage"] == "pretraining"
    # scenario 2: A/B testing
    got = resolve(TRAINING_STAGE="ab_testing", AB_VARIANT="variant_a")
    assert (got["variant"], got["config_file"]) == ("variant_a", "stages/ab_testing/variant_a.json")
    # scenario 3: one stage, forced config file
    got = resolve(TRAINING_STAGE="finetuning", FORCE_DATASET_CONFIG="stages/finetuning.json")
    assert (got["rule"], got["stage"]) == ("FORCE_DATASET_CONFIG", "finetuning")


def test_generate_stage_config_commands(repo: Path, cli: CliRunner) -> None:
    # generate_stage_config.py --base-config training_dataset.json --stage pretraining --ratio ...
    (repo / "stages" / "pretraining.json").unlink()
    out = ok(
        cli(
            "release",
            "generate",
            "--base-config",
            "training_dataset.json",
            "--stage",
            "pretraining",
            "--ratio",
            "highway:0.4,urban:0.3,parking:0.3",
            cwd=repo,
        )
    )
    assert "category 'parking' matches no dataset" in out
    generated = json.loads((repo / "stages" / "pretraining.json").read_text())
    assert generated["meta"]["stage_config"]["data_ratio"] == {
        "highway": 0.4,
        "urban": 0.3,
        "parking": 0.3,
    }
    # generate_stage_config.py --template finetuning --stage custom_experiment --output stages/custom_experiment.json
    out = ok(
        cli(
            "release",
            "generate",
            "--template",
            "finetuning",
            "--stage",
            "custom_experiment",
            "--output",
            "stages/custom_experiment.json",
            cwd=repo,
        )
    )
    assert "add to" in out and "custom_experiment:" in out
    custom = json.loads((repo / "stages" / "custom_experiment.json").read_text())
    assert custom["meta"]["stage"] == "custom_experiment"
    # the output is not overwritten without --force
    again = cli(
        "release",
        "generate",
        "--template",
        "finetuning",
        "--stage",
        "custom_experiment",
        "--output",
        "stages/custom_experiment.json",
        cwd=repo,
    )
    assert again.returncode == 2 and "exists already" in again.stderr


def test_stage_tag_is_the_seed_git_tag(repo: Path, cli: CliRunner) -> None:
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "release"], check=True)
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    ok(
        cli(
            "release",
            "tag",
            "pretraining",
            "v1.2.0",
            "-m",
            "pretraining config v1.2.0",
            "--repo",
            str(repo),
            env=env,
        )
    )
    tags = subprocess.run(
        [*git, "tag", "-l"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert tags == ["stage/pretraining/v1.2.0"]
    at_tag = json.loads(
        ok(
            cli(
                "stage",
                "status",
                "--repo",
                str(repo),
                "--ref",
                "stage/pretraining/v1.2.0",
                "--json",
            )
        )
    )
    assert at_tag["active"]["current_stage"] == "pretraining"


def test_help_teaches_every_verb(cli: CliRunner) -> None:
    text = ok(cli("stage", "--help"))
    for verb in [
        "status",
        "list",
        "list-stages",
        "switch",
        "switch-stage",
        "activate",
        "preview",
        "validate",
        "validate-config",
        "report",
        "history",
        "rollback",
    ]:
        assert verb in text
    assert "init" in ok(cli("release", "--help")) and "generate" in ok(cli("release", "--help"))
    assert "--reason" in ok(cli("stage", "switch", "--help"))


def test_events_report_json_and_init_keep_existing(
    repo: Path, cli: CliRunner, tmp_path: Path
) -> None:
    where = ["--repo", str(repo)]
    ok(cli("stage", "switch", "finetuning", "--reason", "one", *where))
    ok(cli("stage", "switch", "evaluation", "--reason", "two", *where))
    with (repo / "stage_events.jsonl").open("a") as log:
        log.write('{"event": "stage_sw')  # what a killed writer leaves
    events = json.loads(ok(cli("stage", "events", "--json", *where)))
    assert [e["to_stage"] for e in events] == ["finetuning", "evaluation"]
    assert (
        json.loads(ok(cli("stage", "events", "--last", "1", "--json", *where)))[0]["reason"]
        == "two"
    )
    assert "line skipped" in ok(cli("stage", "events", *where))
    report = json.loads(ok(cli("stage", "report", "--json", *where)))
    assert report["current"]["stage"] == "evaluation"
    assert [h["stage"] for h in report["history"]] == ["pretraining", "finetuning", "evaluation"]
    assert {d["stage"] for d in report["datasets"]} >= {"pretraining", "ab_testing"}
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "training_dataset.json").write_text((repo / "training_dataset.json").read_text())
    refused = cli("release", "init", str(plain))
    assert refused.returncode == 2 and "would be overwritten" in refused.stderr
    ok(cli("release", "init", str(plain), "--keep-existing"))
    assert (plain / "stage_config.yaml").is_file()


def test_unforeseen_bad_arguments_are_one_line_errors(repo: Path, cli: CliRunner) -> None:
    for args in (
        ["stage", "status", "--repo", "a" * 5000],
        ["stage", "report", "--output", "/", "--repo", str(repo)],
    ):
        result = cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    config = repo / "stage_config.yaml"
    config.write_text(
        config.read_text().replace("stages/evaluation.json", "stages/eval\\0uation.json")
    )
    result = cli("stage", "preview", "evaluation", "--repo", str(repo))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
