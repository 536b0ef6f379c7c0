"""Switching stages: history, events, rollback, and state that survives concurrency and kills."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from stagewise.config import ActiveStage, load_model, parse_document
from stagewise.errors import StageError, StagewiseError
from stagewise.release import StageController, open_release, rollback, switch
from stagewise.release.repo import LOCK_FILE
from stagewise.store.atomic import locked


def read_active(repo: Path) -> ActiveStage:
    path = repo / "active_stage.yaml"
    return load_model(ActiveStage, parse_document(path.read_bytes(), str(path)))


def read_events(repo: Path) -> list[dict]:  # type: ignore[type-arg]
    path = repo / "stage_events.jsonl"
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return events


def test_switch_records_history_and_a_seed_shaped_event(repo: Path) -> None:
    result = switch(open_release(repo), "finetuning", reason="manual_switch", by="user")
    assert (result.from_stage, result.to_stage) == ("pretraining", "finetuning")
    active = read_active(repo)
    assert active.current_stage == "finetuning" and active.activated_by == "user"
    assert active.switch_reason == "manual_switch"
    first, second = active.history
    assert (
        first.stage == "pretraining"
        and first.deactivated_at is not None
        and first.duration is not None
    )
    assert (
        second.stage == "finetuning" and second.deactivated_at is None and second.duration is None
    )
    assert active.next_stage is not None and active.next_stage.predicted_stage == "evaluation"
    (event,) = read_events(repo)
    assert list(event)[:7] == [
        "timestamp",
        "event",
        "from_stage",
        "to_stage",
        "trigger",
        "condition",
        "metadata",
    ]
    assert event["event"] == "stage_switch" and event["trigger"] == "manual"
    assert (event["from_stage"], event["to_stage"]) == ("pretraining", "finetuning")


def test_switch_keeps_unknown_keys_and_comments_out_of_the_way(repo: Path) -> None:
    path = repo / "active_stage.yaml"
    path.write_text(path.read_text() + "team_note: keep me\n")
    switch(open_release(repo), "evaluation", reason="x")
    assert "team_note: keep me" in path.read_text()


def test_switch_to_a_stage_with_a_broken_config_changes_nothing(repo: Path) -> None:
    (repo / "stages" / "evaluation.json").write_text("{ not json")
    before = (repo / "active_stage.yaml").read_bytes()
    with pytest.raises(StagewiseError, match="does not parse"):
        switch(open_release(repo), "evaluation")
    assert (repo / "active_stage.yaml").read_bytes() == before
    assert not (repo / "stage_events.jsonl").exists()


def test_rollback_returns_to_the_previous_stage(repo: Path) -> None:
    release = open_release(repo)
    switch(release, "finetuning", reason="a")
    switch(release, "evaluation", reason="b")
    result = rollback(release)
    assert (result.from_stage, result.to_stage) == ("evaluation", "finetuning")
    assert read_events(repo)[-1]["trigger"] == "rollback"
    assert len(read_active(repo).history) == 4


def test_rollback_with_no_history_uses_the_fallback_stage_or_refuses(repo: Path) -> None:
    (repo / "active_stage.yaml").unlink()
    release = open_release(repo)
    switch(release, "evaluation", reason="only one")
    assert rollback(release).to_stage == "pretraining"  # switch_strategy.fallback_stage
    (repo / "active_stage.yaml").unlink()
    switch(release, "pretraining", reason="only one")
    with pytest.raises(StageError, match="no earlier stage"):
        rollback(release)


def test_variant_is_recorded(repo: Path) -> None:
    result = switch(open_release(repo), "ab_testing", variant="variant_b", reason="ab")
    assert result.variant == "variant_b"
    assert read_active(repo).current_variant == "variant_b"
    assert read_events(repo)[-1]["variant"] == "variant_b"


WORKER = textwrap.dedent(
    """
    import sys
    from stagewise.release import open_release, switch
    repo, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    stages = ["pretraining", "finetuning", "evaluation"]
    release = open_release(repo)
    i = 0
    while count < 0 or i < count:
        switch(release, stages[(worker + i) % 3], reason=f"worker {worker} switch {i}", by="scheduler")
        i += 1
    """
)


def test_eight_processes_switching_concurrently_lose_nothing(repo: Path, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    initial = len(read_active(repo).history)
    workers = [
        subprocess.Popen([sys.executable, str(script), str(repo), str(w), "50"]) for w in range(8)
    ]
    assert [w.wait(timeout=600) for w in workers] == [0] * 8
    active = read_active(repo)
    assert len(active.history) == initial + 400
    assert len(read_events(repo)) == 400
    assert [h.deactivated_at is None for h in active.history].count(True) == 1
    reasons = {h.reason for h in active.history}
    assert all(f"worker {w} switch {i}" in reasons for w in range(8) for i in range(50))


def test_a_switching_process_killed_mid_write_leaves_valid_state(
    repo: Path, tmp_path: Path
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    rng = random.Random(7)
    seen = len(read_active(repo).history)
    gap = seen - 1 - len(read_events(repo))
    for _ in range(12):
        worker = subprocess.Popen([sys.executable, str(script), str(repo), "0", "-1"])
        time.sleep(0.4 + rng.random() * 0.4)  # start-up, then somewhere inside a switch
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        active = read_active(repo)  # parses and validates, or the test fails
        assert len(active.history) >= seen
        seen = len(active.history)
        assert [h.deactivated_at is None for h in active.history].count(True) == 1
        assert all(h.activated_at for h in active.history)
        # The state file leads the log: each kill may leave the log one more line short
        # (a documented limit), never more, and never ahead.
        now_gap = len(active.history) - 1 - len(read_events(repo))
        assert now_gap - gap in (0, 1)
        gap = now_gap
        start = time.monotonic()
        with locked(repo / LOCK_FILE, timeout=5):
            pass
        assert time.monotonic() - start < 5
    # The repo keeps working after the kills, and the next switch clears temp files they left.
    switch(open_release(repo), "finetuning", reason="after kills")
    assert read_active(repo).current_stage == "finetuning"
    assert list(repo.glob(".*.tmp")) == []


def test_a_switch_away_from_a_stage_no_longer_defined_repairs_the_state(repo: Path) -> None:
    path = repo / "active_stage.yaml"
    path.write_text(
        path.read_text().replace("current_stage: pretraining", "current_stage: retired")
    )
    release = open_release(repo)
    with pytest.raises(StageError, match="'retired' is not defined") as caught:
        release.resolve({})
    assert "stagewise stage switch STAGE" in (caught.value.hint or "")
    switch(release, "finetuning", reason="repair")
    assert release.resolve({}).stage == "finetuning"


def test_rollback_skips_re_activations_of_the_current_stage(repo: Path) -> None:
    release = open_release(repo)
    switch(release, "finetuning", reason="a")
    switch(release, "finetuning", reason="b")
    assert rollback(release).to_stage == "pretraining"


def test_a_conditional_switch_refuses_when_another_process_switched_first(repo: Path) -> None:
    from stagewise.errors import StageChangedError

    release = open_release(repo)
    switch(release, "evaluation", reason="manual, meanwhile")
    before = (repo / "active_stage.yaml").read_bytes()
    with pytest.raises(StageChangedError, match="changed to 'evaluation'"):
        switch(release, "finetuning", by="system", trigger="auto", if_current="pretraining")
    assert (repo / "active_stage.yaml").read_bytes() == before


def test_an_unwritable_event_log_stops_the_switch_before_any_change(repo: Path) -> None:
    (repo / "stage_events.jsonl").mkdir()  # not a file: cannot be appended to
    before = (repo / "active_stage.yaml").read_bytes()
    with pytest.raises(StagewiseError, match="cannot open the log"):
        switch(open_release(repo), "finetuning", reason="x")
    assert (repo / "active_stage.yaml").read_bytes() == before


def run_rank(repo: str, barrier: Any, results: Any) -> None:
    controller = StageController(open_release(repo), run_id="one-run")
    for epoch in range(1, 61):
        barrier.wait(timeout=60)  # ranks finish each epoch together, as in DDP
        decision = controller.observe(epoch=epoch, metrics={"loss": 1 / epoch})
        if decision.switched:
            results.put((epoch, decision.from_stage, decision.to_stage))


def test_ranks_sharing_a_repo_switch_once_and_all_see_the_switch(repo: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    ranks = [context.Process(target=run_rank, args=(str(repo), barrier, results)) for _ in range(4)]
    for rank in ranks:
        rank.start()
    for rank in ranks:
        rank.join(timeout=300)
    assert [rank.exitcode for rank in ranks] == [0] * 4
    seen = sorted(results.get(timeout=5) for _ in range(4))
    assert seen == [(50, "pretraining", "finetuning")] * 4
    assert [e["to_stage"] for e in read_events(repo)] == ["finetuning"]
