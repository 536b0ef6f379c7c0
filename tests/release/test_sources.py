"""Reading a release repo remotely (S3-compatible, served by moto on loopback) and at git refs.

Nothing of stagewise is mocked: the remote tests talk HTTP to a real ``moto_server``
process through s3fs, and the git tests run the real ``git``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from stagewise.errors import ReadOnlyReleaseError, ReleaseSourceError, StagewiseError
from stagewise.release import open_release, switch
from stagewise.release.scaffold import init_repo

BUCKET = "stagewise-releases"
REPO_URL = f"s3://{BUCKET}/repo"
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_MAX_ATTEMPTS": "1",
    "AWS_RETRY_MODE": "standard",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _moto_command(port: int) -> list[str]:
    script = Path(sys.executable).parent / "moto_server"
    if script.exists():
        return [str(script), "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 holding a release repo at ``s3://BUCKET/repo``."""
    pytest.importorskip("s3fs")
    boto3 = pytest.importorskip("boto3")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            _moto_command(port), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                pytest.fail(f"moto_server exited early:\n{log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not answer:\n{log.read_text(errors='replace')}")
                time.sleep(0.1)

        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket=BUCKET)
        local = tmp_path_factory.mktemp("remote_repo")
        init_repo(local)
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            client.put_object(
                Bucket=BUCKET,
                Key=f"repo/{path.relative_to(local).as_posix()}",
                Body=path.read_bytes(),
            )
        client.close()
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The AWS variables that point s3fs at the moto server (set in os.environ, and returned)."""
    env = {**DUMMY_AWS, "AWS_ENDPOINT_URL": moto_endpoint}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "OBS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return env


def _datasets(resolution) -> list[str]:  # type: ignore[no-untyped-def]
    return [d.name for d in resolution.config.enabled_datasets]


# ------------------------------------------------------------------ remote (S3 via moto)


def test_remote_repo_resolves_the_active_stage(aws_env: dict[str, str]) -> None:
    release = open_release(REPO_URL)
    assert release.root is None
    resolution = release.resolve({})
    assert resolution.rule == "active_stage"
    assert resolution.stage == "pretraining"
    assert resolution.config_file == f"{REPO_URL}/stages/pretraining.json"
    assert "highway_foundation_large" in _datasets(resolution)
    # a dataset's relative path is resolved against the remote repo
    first = resolution.config.enabled_datasets[0]
    assert release.dataset_location(first.path).startswith(f"{REPO_URL}/data/")


def test_remote_repo_honours_training_stage(aws_env: dict[str, str]) -> None:
    resolution = open_release(REPO_URL).resolve({"TRAINING_STAGE": "finetuning"})
    assert resolution.rule == "TRAINING_STAGE"
    assert resolution.stage == "finetuning"
    assert resolution.config_file == f"{REPO_URL}/stages/finetuning.json"
    assert resolution.config.meta is not None
    assert resolution.config.meta.stage == "finetuning"


def test_obs_url_is_read_like_s3(aws_env: dict[str, str]) -> None:
    url = f"obs://{BUCKET}/repo"
    release = open_release(url)
    resolution = release.resolve({})
    assert (resolution.rule, resolution.stage) == ("active_stage", "pretraining")
    assert resolution.config_file == f"{url}/stages/pretraining.json"
    assert _datasets(resolution) == _datasets(open_release(REPO_URL).resolve({}))
    finetuning = release.resolve({"TRAINING_STAGE": "finetuning"})
    assert finetuning.stage == "finetuning"


def test_stage_config_path_names_the_remote_repo(aws_env: dict[str, str]) -> None:
    env = {
        "STAGE_CONFIG_PATH": f"{REPO_URL}/stage_config.yaml",
        "STAGEWISE_HOME": os.environ["STAGEWISE_HOME"],
    }
    release = open_release(env=env)
    assert release.source.display == REPO_URL
    resolution = release.resolve(env)
    assert (resolution.rule, resolution.stage) == ("active_stage", "pretraining")
    resolution = release.resolve({**env, "TRAINING_STAGE": "evaluation"})
    assert resolution.stage == "evaluation"
    assert resolution.config_file == f"{REPO_URL}/stages/evaluation.json"


def test_remote_reads_are_snapshotted_under_the_home(aws_env: dict[str, str]) -> None:
    home = Path(os.environ["STAGEWISE_HOME"])
    open_release(REPO_URL).resolve({"TRAINING_STAGE": "finetuning"})
    digest = hashlib.sha256(REPO_URL.encode()).hexdigest()[:16]
    snapshot = home / "cache" / "releases" / digest
    assert snapshot.is_dir()
    for rel in ("stage_config.yaml", "stages/finetuning.json"):
        assert (snapshot / rel).is_file(), rel
    # the snapshot holds exactly the bytes the remote served
    import fsspec

    fs = fsspec.filesystem("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"])
    remote = fs.cat_file(f"{BUCKET}/repo/stages/finetuning.json")
    assert (snapshot / "stages/finetuning.json").read_bytes() == remote
    # files never read are not copied
    assert not (snapshot / "stages/online_learning.json").exists()
    assert not (snapshot / "data").exists()


def test_remote_repo_is_read_only(aws_env: dict[str, str]) -> None:
    release = open_release(REPO_URL)
    with pytest.raises(ReadOnlyReleaseError) as caught:
        switch(release, "finetuning")
    assert REPO_URL in str(caught.value)
    # nothing changed remotely
    assert open_release(REPO_URL).resolve({}).stage == "pretraining"


def test_missing_bucket_is_a_stagewise_error(aws_env: dict[str, str]) -> None:
    url = "s3://no-such-bucket-stagewise/repo"
    started = time.monotonic()
    with pytest.raises(StagewiseError) as caught:
        open_release(url).resolve({})
    assert url in str(caught.value)
    assert time.monotonic() - started < 10


def test_missing_file_in_a_remote_repo_names_the_url(aws_env: dict[str, str]) -> None:
    url = f"s3://{BUCKET}/no-repo-here"
    with pytest.raises(StagewiseError) as caught:
        open_release(url).resolve({})
    assert url in str(caught.value)


def test_unreachable_endpoint_is_a_release_source_error(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    started = time.monotonic()
    with pytest.raises(ReleaseSourceError) as caught:
        open_release(REPO_URL).resolve({})
    elapsed = time.monotonic() - started
    assert REPO_URL in str(caught.value)
    assert caught.value.__cause__ is None or isinstance(caught.value.__cause__, StagewiseError)
    assert elapsed < 10, f"took {elapsed:.1f}s to give up"


def test_cli_status_of_a_remote_repo(aws_env: dict[str, str], cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("stage", "status", "--repo", REPO_URL, "--json", env=aws_env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["repo"] == REPO_URL
    assert data["active"]["current_stage"] == "pretraining"
    assert data["resolution"]["rule"] == "active_stage"
    assert data["resolution"]["stage"] == "pretraining"
    assert data["resolution"]["config_file"] == f"{REPO_URL}/stages/pretraining.json"
    assert "highway_foundation_large" in data["resolution"]["datasets"]


def test_cli_switch_of_a_remote_repo_is_refused(aws_env: dict[str, str], cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("stage", "switch", "finetuning", "--repo", REPO_URL, env=aws_env)
    assert result.returncode == 2, result.stderr
    assert "read-only" in result.stderr
    assert "Traceback" not in result.stderr
    assert REPO_URL in result.stderr


# ------------------------------------------------------------------ git refs

GIT_ENV = {
    "GIT_AUTHOR_NAME": "stagewise tests",
    "GIT_AUTHOR_EMAIL": "tests@stagewise.invalid",
    "GIT_COMMITTER_NAME": "stagewise tests",
    "GIT_COMMITTER_EMAIL": "tests@stagewise.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(root), "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_ENV},
    )


@pytest.fixture
def git_repo(repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The conftest repo under git: v1.0.0 of pretraining tagged, then a dataset disabled."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no user git config leaks in
    for name, value in GIT_ENV.items():
        monkeypatch.setenv(name, value)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "release init")
    git(repo, "tag", "-a", "stage/pretraining/v1.0.0", "-m", "first pretraining release")
    path = repo / "stages" / "pretraining.json"
    data = json.loads(path.read_text())
    assert data["dataset_index"][0]["name"] == "highway_foundation_large"
    data["dataset_index"][0]["enabled"] = False
    path.write_text(json.dumps(data, indent=4) + "\n")
    git(repo, "commit", "-q", "-am", "pretraining: drop highway_foundation_large")
    return repo


def test_ref_reads_the_old_content(git_repo: Path) -> None:
    now = open_release(git_repo).resolve({"TRAINING_STAGE": "pretraining"})
    assert "highway_foundation_large" not in _datasets(now)

    old_release = open_release(git_repo, ref="stage/pretraining/v1.0.0")
    old = old_release.resolve({"TRAINING_STAGE": "pretraining"})
    assert "highway_foundation_large" in _datasets(old)
    assert old.config_file == "stages/pretraining.json@stage/pretraining/v1.0.0"
    assert set(_datasets(old)) == set(_datasets(now)) | {"highway_foundation_large"}
    # the same works with a commit id, and the active stage is read at the ref too
    first = git(git_repo, "rev-list", "--max-parents=0", "HEAD").stdout.strip()
    by_commit = open_release(git_repo, ref=first).resolve({})
    assert by_commit.rule == "active_stage"
    assert _datasets(by_commit) == _datasets(old)


def test_ref_ignores_uncommitted_changes(git_repo: Path) -> None:
    (git_repo / "stages" / "pretraining.json").write_text("{ not json")
    resolution = open_release(git_repo, ref="HEAD").resolve({"TRAINING_STAGE": "pretraining"})
    assert "highway_foundation_large" not in _datasets(resolution)
    assert "urban_scenarios_base" in _datasets(resolution)


def test_unknown_ref_is_a_release_source_error(git_repo: Path) -> None:
    with pytest.raises(ReleaseSourceError) as caught:
        open_release(git_repo, ref="stage/pretraining/v9.9.9")
    assert "stage/pretraining/v9.9.9" in str(caught.value)


def test_ref_of_a_directory_that_is_not_git_is_a_release_source_error(repo: Path) -> None:
    with pytest.raises(ReleaseSourceError):
        open_release(repo, ref="HEAD")


def test_ref_with_a_remote_url_is_refused() -> None:
    with pytest.raises(ReleaseSourceError):
        open_release(REPO_URL, ref="stage/pretraining/v1.0.0")


def test_ref_release_is_read_only(git_repo: Path) -> None:
    release = open_release(git_repo, ref="stage/pretraining/v1.0.0")
    before = (git_repo / "active_stage.yaml").read_bytes()
    with pytest.raises(ReadOnlyReleaseError) as caught:
        switch(release, "finetuning")
    assert "stage/pretraining/v1.0.0" in str(caught.value)
    assert (git_repo / "active_stage.yaml").read_bytes() == before
    assert not (git_repo / "stage_events.jsonl").exists()


def test_cli_tag_creates_an_annotated_stage_tag(git_repo: Path, cli) -> None:  # type: ignore[no-untyped-def]
    result = cli(
        "release", "tag", "pretraining", "v2.0.0", "-m", "drop highway", "--repo", str(git_repo)
    )
    assert result.returncode == 0, result.stderr
    tags = git(git_repo, "tag", "--list", "stage/*").stdout.split()
    assert sorted(tags) == ["stage/pretraining/v1.0.0", "stage/pretraining/v2.0.0"]
    assert git(git_repo, "cat-file", "-t", "stage/pretraining/v2.0.0").stdout.strip() == "tag"
    message = git(git_repo, "tag", "-l", "--format=%(contents)", "stage/pretraining/v2.0.0")
    assert message.stdout.strip() == "drop highway"
    tagged = git(git_repo, "rev-parse", "stage/pretraining/v2.0.0^{commit}").stdout.strip()
    assert tagged == git(git_repo, "rev-parse", "HEAD").stdout.strip()
    # and the new tag is readable as a ref
    resolution = open_release(git_repo, ref="stage/pretraining/v2.0.0").resolve(
        {"TRAINING_STAGE": "pretraining"}
    )
    assert "highway_foundation_large" not in _datasets(resolution)


def test_cli_tag_refuses_an_existing_tag(git_repo: Path, cli) -> None:  # type: ignore[no-untyped-def]
    before = git(git_repo, "rev-parse", "stage/pretraining/v1.0.0").stdout
    result = cli("release", "tag", "pretraining", "v1.0.0", "-m", "again", "--repo", str(git_repo))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "stage/pretraining/v1.0.0" in result.stderr
    assert "exists" in result.stderr
    assert "Traceback" not in result.stderr
    assert git(git_repo, "rev-parse", "stage/pretraining/v1.0.0").stdout == before


def test_cli_tag_refuses_uncommitted_stage_files(git_repo: Path, cli) -> None:  # type: ignore[no-untyped-def]
    path = git_repo / "stages" / "pretraining.json"
    data = json.loads(path.read_text())
    data["dataset_index"][1]["enabled"] = False
    path.write_text(json.dumps(data, indent=4) + "\n")
    result = cli("release", "tag", "pretraining", "v2.0.0", "-m", "dirty", "--repo", str(git_repo))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "uncommitted" in result.stderr
    assert "Traceback" not in result.stderr
    assert git(git_repo, "tag", "--list", "stage/pretraining/v2.0.0").stdout.strip() == ""


def test_force_dataset_config_is_read_at_the_ref(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(git_repo)  # the working tree has the changed file too
    release = open_release(git_repo, ref="stage/pretraining/v1.0.0")
    resolution = release.resolve({"FORCE_DATASET_CONFIG": "stages/pretraining.json"})
    assert resolution.config_file == "stages/pretraining.json@stage/pretraining/v1.0.0"
    assert "highway_foundation_large" in _datasets(resolution)


def test_a_remote_repo_cannot_read_or_overwrite_files_outside_itself(
    aws_env: dict[str, str], tmp_path: Path
) -> None:
    import boto3

    victim = tmp_path / "victim.json"
    victim.write_text("ORIGINAL")
    client = boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    stage_config = (
        "stages:\n"
        f'  evil:\n    config_file: "{victim}"\n'
        '  sneaky:\n    config_file: "../../outside.json"\n'
    )
    client.put_object(Bucket=BUCKET, Key="evil/stage_config.yaml", Body=stage_config.encode())
    client.put_object(Bucket=BUCKET, Key=str(victim).lstrip("/"), Body=b"REPLACED")
    client.close()
    release = open_release(f"s3://{BUCKET}/evil")
    for stage in ("evil", "sneaky"):
        with pytest.raises(ReleaseSourceError, match="not a path inside the repo"):
            release.resolve({"TRAINING_STAGE": stage})
    assert victim.read_text() == "ORIGINAL"
