"""``stagewise data verify``: every file of a version against the checksums and sizes that
metadata.json recorded when it was written."""

from __future__ import annotations

from stagewise.data.samples.store import SampleStore
from stagewise.errors import Problem


def verify_store(store: SampleStore) -> list[Problem]:
    """Problems found (empty when every shard and array matches its checksum)."""
    problems: list[Problem] = []
    entries = [(s.file, s.bytes, s.sha256) for s in store.metadata.shards]
    entries += [(a.file, a.bytes, a.sha256) for a in store.metadata.arrays.values()]
    for relative, size, digest in entries:
        try:
            actual_size, actual_digest = store._files.digest(relative)
        except OSError as exc:
            problems.append(Problem(f"missing or unreadable: {exc.strerror or exc}", file=relative))
            continue
        if actual_size != size:
            problems.append(
                Problem(f"size is {actual_size} bytes, metadata says {size}", file=relative)
            )
            continue
        if actual_digest != digest:
            problems.append(
                Problem(
                    "checksum does not match metadata.json: the file was changed or damaged",
                    file=relative,
                    hint="rebuild with 'stagewise data preprocess --force'",
                )
            )
    return problems
