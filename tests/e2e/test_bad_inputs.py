"""Broken release repos through the real CLI: one clear error, exit 2, no traceback, and
not one byte of the repo changed.

Each case breaks a fresh repo (made by `release init`) in one way, then runs the commands
that read the broken file, a read command and a write command among them. Every run must
exit 2 with a single error that names the file (and line, where there is one) and says how
to fix it; `stage validate` must report the same problem and exit 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import CliRunner

Command = tuple[tuple[str, ...], dict[str, str]]

STATUS: Command = (("stage", "status"), {})
STATUS_FINETUNING: Command = (("stage", "status"), {"TRAINING_STAGE": "finetuning"})
SWITCH: Command = (("stage", "switch", "finetuning", "--reason", "x"), {})
LIST: Command = (("stage", "list"), {})
HISTORY: Command = (("stage", "history"), {})
PREVIEW: Command = (("stage", "preview", "finetuning"), {})
# Files a failed command may leave behind: the (git-ignored) lock file of the state files.
MAY_APPEAR = {".stagewise.lock"}


def line_of(path: Path, fragment: str) -> int:
    """The 1-based line of the first line of ``path`` that contains ``fragment``."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if fragment in line:
            return number
    raise AssertionError(f"{fragment!r} is not in {path}")


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def edit_json(path: Path, change: Callable[[dict], None]) -> None:  # type: ignore[type-arg]
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_unchanged(root: Path, before: dict[str, bytes]) -> None:
    after = snapshot(root)
    changed = sorted(name for name in before if after.get(name) != before[name])
    assert not changed, f"files changed or removed: {changed}"
    added = set(after) - set(before) - MAY_APPEAR
    assert not added, f"files created: {sorted(added)}"
    for name in set(after) & MAY_APPEAR - set(before):
        assert after[name] == b""


def flat(text: str) -> str:
    """Whitespace-normalised, so that a wrapped line still matches."""
    return " ".join(text.split())


# ------------------------------------------------------------------ the broken states


@dataclass
class Case:
    id: str
    breaks: Callable[[Path], None]
    commands: list[Command]
    # strings stderr must contain, computed from the broken repo (file:line, key, hint text)
    expect: Callable[[Path], list[str]]
    # regular expressions stderr must match, where a line is decided by the YAML parser
    patterns: list[str] = field(default_factory=list)
    # strings `stage validate` must print; None: the repo itself is fine
    validate: Callable[[Path], list[str]] | None = None


def malformed_stage_config(repo: Path) -> None:
    replace(repo / "stage_config.yaml", "  finetuning:\n", "  finetuning: [oops\n")


def wrong_type_in_stage_json(repo: Path) -> None:
    def change(data: dict) -> None:  # type: ignore[type-arg]
        data["dataset_index"][0]["duplicate"] = "ten"
        data["dataset_index"][0]["enabled"] = "yes"

    edit_json(repo / "stages" / "finetuning.json", change)


def wrong_type_expect(repo: Path) -> list[str]:
    path = repo / "stages" / "finetuning.json"
    duplicate = line_of(path, '"duplicate": "ten"')
    enabled = line_of(path, '"enabled": "yes"')
    return [
        f"stages/finetuning.json:{duplicate} (dataset_index[0].duplicate)",
        f"stages/finetuning.json:{enabled} (dataset_index[0].enabled)",
        "expected a number, found 'ten'",
    ]


def unknown_default_stage(repo: Path) -> None:
    replace(
        repo / "stage_config.yaml", 'default_stage: "pretraining"', 'default_stage: "pretrainin"'
    )


def unknown_default_expect(repo: Path) -> list[str]:
    line = line_of(repo / "stage_config.yaml", "default_stage:")
    return [f"stage_config.yaml:{line} (default_stage)", "did you mean 'pretraining'?"]


def missing_config_file(repo: Path) -> None:
    (repo / "stages" / "finetuning.json").unlink()


def missing_config_validate(repo: Path) -> list[str]:
    line = line_of(repo / "stage_config.yaml", 'config_file: "stages/finetuning.json"')
    return [
        f"stage_config.yaml:{line} (stages.finetuning.config_file)",
        "'stages/finetuning.json' does not exist",
    ]


def bad_condition(repo: Path) -> None:
    replace(
        repo / "stage_config.yaml",
        'condition: "pretraining_complete"',
        'condition: "loss = 0.1"',
    )


def bad_condition_expect(repo: Path) -> list[str]:
    line = line_of(repo / "stage_config.yaml", 'condition: "loss = 0.1"')
    return [
        f"stage_config.yaml:{line} (stages.finetuning.auto_switch_conditions[0].condition)",
        "column 6",
        "use '==' to compare",
    ]


def conditions_in_a_cycle(repo: Path) -> None:
    path = repo / "stage_config.yaml"
    path.write_text(
        path.read_text(encoding="utf-8")
        + "conditions:\n"
        + '  pretraining_complete: "converged and epoch >= 50"\n'
        + '  converged: "loss < 0.1 or pretraining_complete"\n',
        encoding="utf-8",
    )


def cycle_expect(repo: Path) -> list[str]:
    line = line_of(repo / "stage_config.yaml", '  pretraining_complete: "converged')
    return [
        f"stage_config.yaml:{line} (conditions.pretraining_complete)",
        "cycle: pretraining_complete -> converged -> pretraining_complete",
    ]


def all_zero_weights(repo: Path) -> None:
    def change(data: dict) -> None:  # type: ignore[type-arg]
        for entry in data["dataset_index"]:
            entry["stage_weight"] = 0

    edit_json(repo / "stages" / "finetuning.json", change)


def zero_expect(repo: Path) -> list[str]:
    line = line_of(repo / "stages" / "finetuning.json", '"dataset_index"')
    return [f"stages/finetuning.json:{line} (dataset_index)", "every stage_weight is 0"]


def ratio_matching_nothing(repo: Path) -> None:
    def change(data: dict) -> None:  # type: ignore[type-arg]
        data["meta"]["stage_config"]["data_ratio"] = {"highway": 1.0}
        for entry in data["dataset_index"]:
            del entry["stage_weight"]

    edit_json(repo / "stages" / "finetuning.json", change)


def ratio_expect(repo: Path) -> list[str]:
    line = line_of(repo / "stages" / "finetuning.json", '"data_ratio"')
    return [f"stages/finetuning.json:{line} (meta.stage_config.data_ratio)", "weight 0"]


def truncated_active_stage(repo: Path) -> None:
    path = repo / "active_stage.yaml"
    text = path.read_text(encoding="utf-8")
    start = text.index("activated_at: '")
    path.write_text(text[: start + len("activated_at: '2026-1")], encoding="utf-8")


def active_names_unknown_stage(repo: Path) -> None:
    replace(repo / "active_stage.yaml", "current_stage: pretraining", "current_stage: pretrainng")


def unknown_active_expect(repo: Path) -> list[str]:
    line = line_of(repo / "active_stage.yaml", "current_stage:")
    return [f"active_stage.yaml:{line}", "'pretrainng'", "did you mean 'pretraining'?"]


def python_tag_in_stage_config(repo: Path) -> None:
    replace(
        repo / "stage_config.yaml",
        'default_stage: "pretraining"',
        'default_stage: !!python/object/apply:os.system ["touch CANARY"]',
    )


def tag_expect(repo: Path) -> list[str]:
    line = line_of(repo / "stage_config.yaml", "default_stage:")
    return [f"stage_config.yaml:{line}", "is not allowed"]


def invalid_utf8_in_stage_config(repo: Path) -> None:
    path = repo / "stage_config.yaml"
    raw = path.read_bytes()
    assert b'name: "Finetuning"' in raw
    path.write_bytes(raw.replace(b'name: "Finetuning"', b'name: "Fin\xe9tuning"', 1))


def utf8_expect(repo: Path) -> list[str]:
    number = 1 + next(
        i
        for i, line in enumerate((repo / "stage_config.yaml").read_bytes().splitlines())
        if b"\xe9" in line
    )
    return [f"stage_config.yaml:{number}", "UTF-8"]


def deeply_nested_active_stage(repo: Path) -> None:
    (repo / "active_stage.yaml").write_text(
        "current_stage: pretraining\nhistory: " + "[" * 100_000 + "]" * 100_000 + "\n",
        encoding="utf-8",
    )


def duplicate_key_in_stage_json(repo: Path) -> None:
    replace(
        repo / "stages" / "finetuning.json",
        '"duplicate": 3,',
        '"duplicate": 3,\n            "duplicate": 4,',
    )


def duplicate_expect(repo: Path) -> list[str]:
    line = line_of(repo / "stages" / "finetuning.json", '"duplicate": 4')
    return [f"stages/finetuning.json:{line}", "'duplicate' appears twice"]


def nan_in_stage_json(repo: Path) -> None:
    replace(repo / "stages" / "finetuning.json", '"stage_weight": 0.3', '"stage_weight": NaN')


def nan_expect(repo: Path) -> list[str]:
    line = line_of(repo / "stages" / "finetuning.json", '"stage_weight": NaN')
    return [f"stages/finetuning.json:{line}", "NaN"]


def unchanged_repo(repo: Path) -> None:
    pass


CASES = [
    Case(
        "malformed stage_config.yaml",
        malformed_stage_config,
        [STATUS, SWITCH, LIST, PREVIEW],
        lambda repo: ["does not parse"],
        patterns=[r"stage_config\.yaml:\d+"],
        validate=lambda repo: ["stage_config.yaml:", "does not parse"],
    ),
    Case(
        "wrong type in a stage json",
        wrong_type_in_stage_json,
        [STATUS_FINETUNING, SWITCH, PREVIEW],
        wrong_type_expect,
        validate=wrong_type_expect,
    ),
    Case(
        "unknown default_stage",
        unknown_default_stage,
        [STATUS, SWITCH, LIST],
        unknown_default_expect,
        validate=unknown_default_expect,
    ),
    Case(
        "missing config_file",
        missing_config_file,
        [STATUS_FINETUNING, SWITCH, PREVIEW],
        lambda repo: ["stages/finetuning.json", "does not exist"],
        validate=missing_config_validate,
    ),
    Case(
        "condition that does not parse",
        bad_condition,
        [STATUS, SWITCH, LIST],
        bad_condition_expect,
        validate=bad_condition_expect,
    ),
    Case(
        "named conditions in a cycle",
        conditions_in_a_cycle,
        [STATUS, SWITCH, LIST],
        cycle_expect,
        validate=cycle_expect,
    ),
    Case(
        "all-zero weights",
        all_zero_weights,
        [STATUS_FINETUNING, SWITCH, PREVIEW],
        zero_expect,
        validate=zero_expect,
    ),
    Case(
        "data_ratio that matches no dataset",
        ratio_matching_nothing,
        [STATUS_FINETUNING, SWITCH, PREVIEW],
        ratio_expect,
        validate=ratio_expect,
    ),
    Case(
        "truncated active_stage.yaml",
        truncated_active_stage,
        [STATUS, SWITCH, HISTORY],
        lambda repo: ["does not parse"],
        patterns=[r"active_stage\.yaml:\d+"],
        validate=lambda repo: ["active_stage.yaml:", "does not parse"],
    ),
    Case(
        "active_stage.yaml names an unknown stage",
        active_names_unknown_stage,
        [STATUS],  # a switch away from the unknown stage is the fix, so it must work
        unknown_active_expect,
        validate=unknown_active_expect,
    ),
    Case(
        "python tag in stage_config.yaml",
        python_tag_in_stage_config,
        [STATUS, SWITCH, LIST],
        tag_expect,
        validate=tag_expect,
    ),
    Case(
        "invalid UTF-8 in stage_config.yaml",
        invalid_utf8_in_stage_config,
        [STATUS, SWITCH],
        utf8_expect,
        validate=utf8_expect,
    ),
    Case(
        "deeply nested active_stage.yaml",
        deeply_nested_active_stage,
        [STATUS, SWITCH],
        lambda repo: ["active_stage.yaml:2", "nested more than"],
        validate=lambda repo: ["active_stage.yaml:2", "nested more than"],
    ),
    Case(
        "duplicate key in a stage json",
        duplicate_key_in_stage_json,
        [STATUS_FINETUNING, SWITCH, PREVIEW],
        duplicate_expect,
        validate=duplicate_expect,
    ),
    Case(
        "NaN in a stage json",
        nan_in_stage_json,
        [STATUS_FINETUNING, SWITCH, PREVIEW],
        nan_expect,
        validate=nan_expect,
    ),
    Case(
        "switch to an unknown stage",
        unchanged_repo,
        [(("stage", "switch", "nosuchstage", "--reason", "x"), {})],
        lambda repo: [
            "stage_config.yaml",
            "'nosuchstage' is not defined",
            "known stages: pretraining",
        ],
    ),
    Case(
        "switch to a near miss",
        unchanged_repo,
        [
            (("stage", "switch", "finetunin", "--reason", "x"), {}),
            (("stage", "activate", "finetunin", "--reason", "x"), {}),
        ],
        lambda repo: [
            "stage_config.yaml",
            "'finetunin' is not defined",
            "did you mean 'finetuning'?",
        ],
    ),
    Case(
        "preview of an unknown stage",
        unchanged_repo,
        [(("stage", "preview", "nosuchstage"), {}), (("stage", "preview", "finetunin"), {})],
        lambda repo: ["stage_config.yaml", "is not defined in stage_config.yaml", "known stages"],
    ),
    Case(
        "FORCE_DATASET_CONFIG names a missing file",
        unchanged_repo,
        [(("stage", "status"), {"FORCE_DATASET_CONFIG": "stages/missing.json"})],
        lambda repo: ["stages/missing.json", "FORCE_DATASET_CONFIG", "does not exist"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_is_one_clear_error_and_changes_nothing(
    case: Case, repo: Path, cli: CliRunner, tmp_path: Path
) -> None:
    case.breaks(repo)
    expected = [flat(s) for s in case.expect(repo)]
    before = snapshot(repo)
    for args, env in case.commands:
        result = cli(*args, "--repo", str(repo), env=env)
        shown = f"$ stagewise {' '.join(args)} {env}\n{result.stdout}{result.stderr}"
        assert result.returncode == 2, shown
        assert "Traceback" not in result.stderr + result.stdout, shown
        stderr = flat(result.stderr)
        assert stderr.count("error:") == 1, shown  # one error, not a cascade
        for text in expected:
            assert text in stderr, f"{text!r} missing from:\n{shown}"
        for pattern in case.patterns:
            assert re.search(pattern, stderr), f"{pattern!r} does not match:\n{shown}"
        assert "fix:" in stderr, shown  # and how to fix it
        assert_unchanged(repo, before)
    for where in (tmp_path, repo, Path.cwd()):
        assert not (where / "CANARY").exists()


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.validate], ids=[c.id for c in CASES if c.validate]
)
def test_validate_names_the_file_and_exits_1(case: Case, repo: Path, cli: CliRunner) -> None:
    case.breaks(repo)
    assert case.validate is not None
    expected = [flat(s) for s in case.validate(repo)]
    before = snapshot(repo)
    result = cli("stage", "validate", "--repo", str(repo))
    shown = result.stdout + result.stderr
    assert result.returncode == 1, shown
    assert "Traceback" not in shown
    stdout = flat(result.stdout)
    for text in expected:
        assert text in stdout, f"{text!r} missing from:\n{shown}"
    assert "invalid:" in stdout
    report = cli("stage", "validate", "--json", "--repo", str(repo))
    assert report.returncode == 1, report.stdout + report.stderr
    data = json.loads(report.stdout)
    assert data["ok"] is False and data["errors"] >= 1
    for problem in data["problems"]:
        assert problem["file"], problem
        if problem["severity"] == "error":
            assert problem["line"] or problem["key"], problem
    assert_unchanged(repo, before)
    assert not (repo / ".stagewise.lock").exists()  # validate takes no lock


def test_a_fresh_repo_validates_and_reads_cleanly(repo: Path, cli: CliRunner) -> None:
    before = snapshot(repo)
    result = cli("stage", "validate", "--repo", str(repo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid:" in result.stdout and "0 error(s)" in result.stdout
    for args, env in [STATUS, STATUS_FINETUNING, LIST, HISTORY, PREVIEW]:
        result = cli(*args, "--repo", str(repo), env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stderr == ""
    assert snapshot(repo) == before  # reading changes nothing


def test_the_write_command_works_once_the_repo_is_fixed(repo: Path, cli: CliRunner) -> None:
    original = (repo / "stage_config.yaml").read_bytes()
    bad_condition(repo)
    assert cli("stage", "switch", "finetuning", "--repo", str(repo)).returncode == 2
    (repo / "stage_config.yaml").write_bytes(original)
    result = cli("stage", "switch", "finetuning", "--reason", "x", "--repo", str(repo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "current_stage: finetuning" in (repo / "active_stage.yaml").read_text()


def test_debug_shows_the_traceback(repo: Path, cli: CliRunner) -> None:
    bad_condition(repo)
    result = cli("--debug", "stage", "status", "--repo", str(repo))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr
