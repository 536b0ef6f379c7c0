"""The docstring data is the same in every process, whatever else was imported."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from stagewise.select.docstrings import CORRUPTIONS, clean_and_corrupted, corrupt, documented


def test_the_records_do_not_depend_on_what_was_imported() -> None:
    # This process has imported torch and transformers, which patch the standard library.
    import transformers  # noqa: F401

    code = "import json; from stagewise.select.docstrings import documented; print(json.dumps(documented()))"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(fresh.stdout) == [list(item) for item in documented()]


def test_clean_and_corrupted_records() -> None:
    clean, bad = clean_and_corrupted(8, seed=3)
    assert [r["id"] for r in clean] == [f"docs_clean_{i}" for i in range(8)]
    assert [r["id"].split("_", 1)[1].rsplit("_", 1)[0] for r in bad] == [*CORRUPTIONS, *CORRUPTIONS]
    assert {r["messages"][1]["content"] for r in clean}.isdisjoint(
        r["messages"][1]["content"] for r in bad
    )
    assert clean_and_corrupted(8, seed=3) == (clean, bad)


def test_each_corruption() -> None:
    text = "The quick brown fox jumps over the lazy dog and runs far away from here."
    rng = random.Random(0)
    assert sorted(corrupt(text, "shuffled", rng).split()) == sorted(text.split())
    assert len(corrupt(text, "random_characters", rng)) == len(text)
    repeated = corrupt(text, "repeated", rng)
    assert len(set(repeated.split())) <= 4 and len(repeated.split()) >= 8
    assert text.startswith(corrupt(text, "truncated", rng))
