"""The order in which a mixture's samples are seen: a pure function of (seed, epoch, plan).

A :class:`MixturePlan` lists each source's ``size`` (samples it holds) and ``count``
(samples it contributes to one epoch, from :func:`stagewise.data.mixture.allocate`). The
epoch has ``E = sum(count)`` positions. :class:`MixtureSampler` maps a position to a
``(dataset, sample)`` pair on demand, so nothing of size ``E`` is ever built.

Layout (before shuffling). Sources are laid out as blocks in plan order. Source ``i``'s
block holds ``count_i // size_i`` full passes over ``0 .. size_i - 1`` followed by a
*partial pass* of ``r_i = count_i % size_i`` distinct samples, so no sample occurs more
than ``ceil(count_i / size_i)`` times in an epoch. The partial pass is:

- ``shuffle=True``: the first ``r_i`` values of ``Permutation(size_i, key("draw", i))``, a
  uniform-looking draw without replacement that changes with the seed and the epoch;
- ``shuffle=False``: the systematic sample ``(k * size_i + o_i) // r_i`` for
  ``k = 0 .. r_i - 1``, with ``o_i = key("draw", i) % size_i``: in index order, spread
  evenly over the source, and a different subset each epoch.

Order. With ``shuffle=True`` position ``k`` of the epoch is layout position
``Permutation(E, key("order"))(k)``. Because that permutation already scatters every
block, full passes need no order of their own. With ``shuffle=False`` the epoch is the
layout itself: blocks in plan order, samples in index order.

Keys. ``key(*what)`` is the first 8 bytes (little endian) of the SHA-256 of
``"stagewise.order/1", seed, epoch, plan fingerprint, *what`` joined by NUL bytes: the same
in every process, platform and Python version (``hash()`` is never used).

:class:`Permutation` (in :mod:`stagewise.data.permutation`) is a keyed bijection on
``[0, n)``, evaluated on whole numpy arrays at once.

Sharding and resumption. Rank ``r`` of ``W`` reads the epoch positions
``offset + r, offset + r + W, ...``: every position goes to exactly one rank and ranks differ
by at most one sample. ``offset`` is 0 at the start of an epoch and ``sample_in_epoch``
after :meth:`MixtureSampler.load_state_dict`. The saved ``sample_in_epoch`` is
``offset + position * W`` (capped at ``E``): the global number of samples consumed when
every rank has consumed ``position`` samples. A resumed run, with any ``W``, therefore
continues with exactly the positions an uninterrupted run had not yet seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from stagewise.data.mixture import MixtureEntry, MixturePlan, loading_statistics

# Permutation is re-exported: `from stagewise.data.order import Permutation` keeps working.
from stagewise.data.permutation import _ROUNDS, Permutation, _permute, _radices, _round_keys
from stagewise.errors import DataError

# The plan and the statistics live with the counts; they are re-exported here so that one
# import gives everything a training loop needs.
__all__ = [
    "MixtureEntry",
    "MixturePlan",
    "MixtureSampler",
    "Permutation",
    "loading_statistics",
]

_CHUNK = 4096  # positions looked up per numpy call: amortises the per-call overhead
_KEY_DOMAIN = "stagewise.order/1"  # bump when the order changes on purpose


def _key(seed: int, epoch: int, fingerprint: str, *what: object) -> int:
    parts = [_KEY_DOMAIN, str(seed), str(epoch), fingerprint, *map(str, what)]
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "little")


class MixtureSampler:
    """One rank's view of a mixture epoch: ``(dataset index, sample index)`` pairs."""

    def __init__(
        self, plan: MixturePlan, seed: int, epoch: int = 0, *, rank: int = 0, world_size: int = 1
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of world size {world_size}: need 0 <= rank < size")
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.plan, self.seed = plan, int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self._total = plan.total
        counts = np.array([e.count for e in plan.entries], dtype=np.int64)
        self._ends = np.cumsum(counts)
        self._starts = self._ends - counts
        self._sizes = np.array([max(e.size, 1) for e in plan.entries], dtype=np.int64)
        self._full = counts // self._sizes * self._sizes  # positions in full passes
        self._partial = counts % self._sizes
        radices = np.array([_radices(int(n)) for n in self._sizes], dtype=np.uint64)
        self._hi, self._lo = radices[:, 0].copy(), radices[:, 1].copy()
        self._epoch, self._offset, self._position = -1, 0, 0
        self.set_epoch(epoch)

    # -- position --------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def position(self) -> int:
        """Rank-local samples consumed since the epoch started (or since the resume)."""
        return self._position

    @property
    def consumed(self) -> int:
        """Rank-local samples consumed since the epoch started, a resume point included."""
        return self._offset // self.world_size + self._position

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning. Setting the epoch the sampler is already in,
        with nothing consumed since, keeps a resume point from :meth:`load_state_dict`."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch == self._epoch and self._position == 0:
            return
        self._epoch, self._offset, self._position = int(epoch), 0, 0
        self._rekey()

    def _rekey(self) -> None:
        key = self.plan.fingerprint
        self._order = Permutation(self._total, _key(self.seed, self._epoch, key, "order"))
        draws = [_key(self.seed, self._epoch, key, "draw", i) for i in range(len(self._sizes))]
        self._draw_keys = np.array([_round_keys(k) for k in draws], dtype=np.uint64).reshape(
            -1, _ROUNDS
        )
        self._draw_offsets = np.array(
            [k % int(n) for k, n in zip(draws, self._sizes, strict=True)], dtype=np.int64
        )

    def __len__(self) -> int:
        """Samples this rank sees in the epoch (from the resume point, after a resume)."""
        left = self._total - self._offset - self.rank
        return max(0, -(-left // self.world_size))

    def advance(self, n: int) -> None:
        """Mark ``n`` more rank-local samples consumed (for loaders that track progress
        outside :meth:`__iter__`, such as DataLoader workers)."""
        if n < 0:
            raise ValueError(f"cannot advance by {n}")
        self._position = min(self._position + int(n), len(self))

    def state_dict(self) -> dict[str, Any]:
        consumed = self._offset + self._position * self.world_size
        return {
            "seed": self.seed,
            "epoch": self._epoch,
            "fingerprint": self.plan.fingerprint,
            "sample_in_epoch": min(consumed, self._total),
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at ``state["sample_in_epoch"]``, for this sampler's rank and world size."""
        missing = [k for k in ("seed", "epoch", "fingerprint", "sample_in_epoch") if k not in state]
        if missing:
            raise DataError(
                f"the sampler state has no {', '.join(missing)}",
                hint="load the dict that MixtureSampler.state_dict() returned",
            )
        if state["fingerprint"] != self.plan.fingerprint:
            raise DataError(
                "the saved sampler state is for a different mixture "
                f"(saved {str(state['fingerprint'])[:12]}, now {self.plan.fingerprint[:12]})",
                hint="resume with the data config and sources the state was saved with, or "
                "start the epoch afresh without loading the sampler state",
            )
        if int(state["seed"]) != self.seed:
            raise DataError(
                f"the saved sampler state has seed {state['seed']}, this sampler {self.seed}",
                hint="resume with the seed the run started with",
            )
        epoch, consumed = int(state["epoch"]), int(state["sample_in_epoch"])
        if epoch < 0 or not 0 <= consumed <= self._total:
            raise DataError(
                f"the saved sampler state is out of range (epoch {epoch}, "
                f"sample_in_epoch {consumed} of {self._total})",
                hint="load the dict that MixtureSampler.state_dict() returned",
            )
        if epoch != self._epoch:
            self._epoch = epoch
            self._rekey()
        self._offset, self._position = consumed, 0

    # -- lookup ----------------------------------------------------------------------

    def indices(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Dataset and sample indices (int64) of rank-local positions ``[start, stop)``;
        ``stop`` is capped at ``len(self)``."""
        if start < 0 or stop < 0:
            raise ValueError(f"positions must be >= 0, got [{start}, {stop})")
        stop = min(stop, len(self))
        return self._at(np.arange(start, max(start, stop), dtype=np.int64))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """From the current position; a sample counts as consumed once handed out."""
        while self._position < len(self):
            start = self._position
            datasets, samples = self.indices(start, start + _CHUNK)
            pairs = zip(datasets.tolist(), samples.tolist(), strict=True)
            for i, (dataset, sample) in enumerate(pairs):
                if self._position != start + i:
                    break  # moved from outside (advance, a resume): go on from there
                self._position += 1
                yield dataset, sample

    def batches(
        self, batch_size: int, *, worker: int = 0, num_workers: int = 1, drop_last: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Worker ``worker``'s share of this rank's batches from the current position:
        batches ``worker, worker + num_workers, ...``, the order in which torch's DataLoader
        collects them, so its output is the same for any ``num_workers``. ``drop_last``
        keeps only the batches that every rank has in full (equal steps on every rank).
        The position does not move: the consumer calls :meth:`advance`."""
        if batch_size < 1 or num_workers < 1 or not 0 <= worker < num_workers:
            raise ValueError(
                f"batch_size {batch_size}, worker {worker} of {num_workers}: need "
                "batch_size >= 1 and 0 <= worker < num_workers"
            )
        start = self._position
        if drop_last:
            shortest = (self._total - self._offset) // self.world_size
            end = start + max(0, shortest - start) // batch_size * batch_size
        else:
            end = max(start, len(self))
        count = -(-(end - start) // batch_size)
        return self._batches(start, end, batch_size, range(worker, count, num_workers))

    def _batches(
        self, start: int, end: int, size: int, mine: range
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        per_chunk = max(1, _CHUNK // size)
        for first in range(0, len(mine), per_chunk):
            numbers = np.array(mine[first : first + per_chunk], dtype=np.int64)
            begins = start + numbers * size
            lengths = np.minimum(size, end - begins)
            bounds = np.concatenate(([0], np.cumsum(lengths)))
            # positions of all the chunk's batches in one array: one lookup for them all
            positions = np.repeat(begins - bounds[:-1], lengths) + np.arange(bounds[-1])
            datasets, samples = self._at(positions)
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                yield datasets[a:b], samples[a:b]

    def _at(self, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dataset, sample) of rank-local positions, which must be < len(self)."""
        position = self._offset + self.rank + local * self.world_size
        if self.plan.shuffle:
            position = self._order._apply(position)
        datasets = np.searchsorted(self._ends, position, side="right").astype(np.int64)
        within = position - self._starts[datasets]
        samples = within % self._sizes[datasets]
        partial = np.flatnonzero(within >= self._full[datasets])
        if partial.size:
            which = datasets[partial]
            samples[partial] = self._draw(within[partial] - self._full[which], which)
        return datasets, samples

    def _draw(self, k: np.ndarray, which: np.ndarray) -> np.ndarray:
        """Sample ``k`` of the partial passes of datasets ``which`` (see module docstring)."""
        sizes = self._sizes[which]
        if self.plan.shuffle:
            keys = self._draw_keys[which]
            drawn = _permute(
                k.astype(np.uint64),
                sizes.astype(np.uint64),
                self._hi[which],
                self._lo[which],
                [keys[:, i] for i in range(_ROUNDS)],
            )
            return drawn.astype(np.int64)
        r, offsets = self._partial[which], self._draw_offsets[which]
        if int(r.max()) < 1 << 31:
            # (k * n + o) // r without overflow: n = q * r + s and o = oq * r + os
            return (k * (sizes // r) + offsets // r + (k * (sizes % r) + offsets % r) // r).astype(
                np.int64
            )
        exact = [  # sources of 2**31 samples or more: Python's exact integers
            (ki * ni + oi) // ri
            for ki, ni, oi, ri in zip(
                k.tolist(), sizes.tolist(), offsets.tolist(), r.tolist(), strict=True
            )
        ]
        return np.array(exact, dtype=np.int64)
