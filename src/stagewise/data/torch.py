"""PyTorch views of stores and mixtures: the only module of ``stagewise.data`` that imports
torch.

- :class:`StoreDataset`: map-style, over a store or one split. ``ds[i]`` is a dict of
  tensors; ``ds[[i, j, ...]]`` is a whole batch gathered in one call, which is what
  :func:`store_loader` asks for (a ``BatchSampler`` as the sampler, ``batch_size=None``).
- :class:`MixtureDataset`: iterable, over a :class:`~stagewise.data.order.MixturePlan`
  and one sample source per plan entry. It yields whole batches; DataLoader worker ``w``
  of ``n`` builds batches ``w, w + n, ...`` of this rank, and the DataLoader hands them
  out in that same round-robin, so the loader's batches are the same whatever
  ``num_workers`` is. Under ``torch.distributed`` the rank and world size are read from
  the process group.
- :class:`MixtureLoader`: the DataLoader plus ``state_dict()`` / ``load_state_dict()``
  that resume mid-epoch at the next unseen sample.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    get_worker_info,
)

from stagewise.data.order import MixturePlan, MixtureSampler
from stagewise.data.samples import SampleStore
from stagewise.errors import DataError


def to_tensors(sample: Mapping[str, Any]) -> dict[str, Any]:
    """Numeric numpy values as tensors (read-only views are copied: torch needs writable
    memory); other values as they are."""
    out: dict[str, Any] = {}
    for name, value in sample.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            out[name] = torch.from_numpy(value if value.flags.writeable else value.copy())
        elif isinstance(value, np.generic):  # a 0-d tensor of the column's own dtype
            out[name] = torch.from_numpy(np.array(value))
        else:
            out[name] = value
    return out


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack a list of samples column by column (for loaders that fetch one by one)."""
    first = samples[0]
    out: dict[str, Any] = {}
    for name in first:
        values = [s[name] for s in samples]
        if isinstance(values[0], torch.Tensor):
            out[name] = torch.stack(values)
        elif isinstance(values[0], np.ndarray | np.generic | int | float):
            out[name] = torch.as_tensor(np.stack([np.asarray(v) for v in values]))
        else:
            out[name] = values
    return out


class StoreDataset(Dataset):
    """Map-style dataset over a store (or ``split`` of it)."""

    def __init__(self, store: SampleStore, split: str | None = None) -> None:
        self.store = store.split(split) if split else store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int | Sequence[int]) -> dict[str, Any]:
        if isinstance(index, int | np.integer):
            return to_tensors(self.store[int(index)])
        return to_tensors(self.store.take(np.asarray(index, dtype=np.int64)))


def store_loader(
    store: SampleStore,
    split: str | None = None,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
    **loader_options: Any,
) -> DataLoader:
    """A DataLoader that gathers each batch in one call (no per-sample collate)."""
    dataset = StoreDataset(store, split)
    generator = torch.Generator().manual_seed(seed)
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(
        dataset,
        sampler=BatchSampler(order, batch_size, drop_last),
        batch_size=None,
        num_workers=num_workers,
        **loader_options,
    )


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class MixtureDataset(IterableDataset):
    """Batches of a mixture epoch (see the module docstring).

    ``sources`` maps each plan entry's name to what holds its samples: a
    :class:`SampleStore` (or split), or anything with ``take(indices) -> dict``. Every
    source must give the same columns. Each batch also carries ``dataset`` (the entry's
    number in the plan) and ``index`` (the sample's index in its source).
    """

    def __init__(
        self,
        plan: MixturePlan,
        sources: Mapping[str, Any],
        *,
        batch_size: int,
        seed: int,
        epoch: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        missing = [e.name for e in plan.entries if e.count and e.name not in sources]
        if missing:
            raise DataError(
                f"no source given for dataset(s) {', '.join(missing)} of the plan",
                hint="pass every planned dataset in sources={name: store}",
            )
        too_small = [
            f"{e.name} ({len(sources[e.name])} < {e.size})"
            for e in plan.entries
            if e.count and hasattr(sources[e.name], "__len__") and len(sources[e.name]) < e.size
        ]
        if too_small:
            raise DataError(
                f"source(s) hold fewer samples than the plan says: {', '.join(too_small)}",
                hint="rebuild the plan from the stores you pass",
            )
        _check_columns(plan, sources)
        self.plan = plan
        self.sources = dict(sources)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        found_rank, found_world = _distributed()
        self.rank = found_rank if rank is None else rank
        self.world_size = found_world if world_size is None else world_size
        self.drop_last = drop_last
        self.start = 0  # sample_in_epoch to resume from
        self._direct_cache: dict[str, Any] | None = None

    def sampler(self) -> MixtureSampler:
        sampler = MixtureSampler(
            self.plan, self.seed, self.epoch, rank=self.rank, world_size=self.world_size
        )
        if self.start:
            state = sampler.state_dict()
            state["sample_in_epoch"] = self.start
            sampler.load_state_dict(state)
        return sampler

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        names = [e.name for e in self.plan.entries]
        for datasets, indices in self.sampler().batches(
            self.batch_size, worker=worker, num_workers=workers, drop_last=self.drop_last
        ):
            yield to_tensors(self.gather(names, datasets, indices))

    def _direct(self, name: str) -> tuple[int, list[tuple[str, np.ndarray]]] | None:
        if self._direct_cache is None:  # per process: built after a worker starts
            self._direct_cache = {
                n: getattr(source, "_one_split_rows", None) for n, source in self.sources.items()
            }
        return self._direct_cache[name]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_direct_cache"] = None
        return state

    def gather(self, names: list[str], datasets: np.ndarray, indices: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # One stable sort groups the batch by dataset; each group is then one take and one
        # integer scatter (cheaper than a boolean mask per dataset).
        order = np.argsort(datasets, kind="stable")
        bounds = np.searchsorted(datasets[order], np.arange(len(names) + 1))
        for number in range(len(names)):
            rows = order[bounds[number] : bounds[number + 1]]
            if not len(rows):
                continue
            direct = self._direct(names[number])
            if direct is not None:  # a store split of numeric columns: index the maps
                offset, arrays = direct
                local = indices[rows] + offset
                for column, values in arrays:
                    if column not in out:
                        out[column] = np.empty((len(indices), *values.shape[1:]), values.dtype)
                    out[column][rows] = values[local]
                continue
            part = self.sources[names[number]].take(indices[rows])
            if out and part.keys() != out.keys():  # else rows of out would stay unset
                raise DataError(
                    f"{names[number]} gives the columns {sorted(part)}, another dataset "
                    f"{sorted(out)}",
                    hint="mix only datasets whose samples have the same columns and shapes",
                )
            for column, values in part.items():
                if isinstance(values, np.ndarray):
                    if column not in out:
                        out[column] = np.empty((len(indices), *values.shape[1:]), values.dtype)
                    elif out[column].shape[1:] != values.shape[1:]:
                        raise DataError(
                            f"column {column!r} has shape {values.shape[1:]} in "
                            f"{names[number]} but {out[column].shape[1:]} in another dataset",
                            hint="mix only datasets whose samples have the same shapes",
                        )
                    out[column][rows] = values
                else:
                    slots = out.setdefault(column, [None] * len(indices))
                    for slot, value in zip(rows.tolist(), values, strict=True):
                        slots[slot] = value
        out["dataset"] = datasets.astype(np.int64)
        out["index"] = indices.astype(np.int64)
        return out


def _declared_columns(store: SampleStore) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Each column's type and per-sample shape, from the store's metadata alone."""
    meta = store.metadata
    if meta.windows is None:
        return {c.name: (c.type, tuple(c.shape)) for c in meta.columns}
    series = meta.arrays[meta.windows.series]
    features = meta.arrays[meta.windows.time_features]
    p, q = meta.windows.input_len, meta.windows.output_len
    return {
        "x": (series.dtype, (p, *series.shape[1:])),
        "y": (series.dtype, (q, *series.shape[1:])),
        "te_x": (features.dtype, (p, *features.shape[1:])),
        "te_y": (features.dtype, (q, *features.shape[1:])),
        "start": ("int64", ()),
    }


def _describe(declared: tuple[str, tuple[int, ...]]) -> str:
    kind, shape = declared
    return f"{kind}{list(shape)}" if shape else kind


def _check_columns(plan: MixturePlan, sources: Mapping[str, Any]) -> None:
    """Sample stores declare their columns: refuse a mix whose columns or shapes differ
    before any batch is built, whether or not two datasets would meet in one batch
    (:meth:`MixtureDataset.gather` checks the shapes of other sources as it goes)."""
    first: tuple[str, dict[str, tuple[int, ...]]] | None = None
    for e in plan.entries:
        source = sources[e.name] if e.count else None
        if not isinstance(source, SampleStore):
            continue
        shapes = _declared_columns(source)
        if first is None:
            first = (e.name, shapes)
            continue
        for column in sorted(shapes.keys() | first[1].keys()):
            here, there = shapes.get(column), first[1].get(column)
            if here == there:
                continue
            if here is None or there is None:
                has, lacks = (first[0], e.name) if here is None else (e.name, first[0])
                headline = f"column {column!r} is in {has} but not in {lacks}"
            else:
                headline = (
                    f"column {column!r} is {_describe(here)} in {e.name} but "
                    f"{_describe(there)} in {first[0]}"
                )
            raise DataError(
                headline, hint="mix only datasets whose samples have the same columns and shapes"
            )


class MixtureLoader:
    """A DataLoader over a :class:`MixtureDataset` whose progress can be saved and resumed.

    ``state_dict()`` records the global ``sample_in_epoch`` after the batches this rank
    has taken; a new loader (any ``num_workers``, any world size) given that state starts
    at the first sample the old one had not delivered.
    """

    def __init__(self, dataset: MixtureDataset, *, num_workers: int = 0, **options: Any) -> None:
        self.dataset = dataset
        self.num_workers = num_workers
        self.options = options
        self.consumed = 0  # samples this rank has taken since ``dataset.start``

    def __iter__(self) -> Iterator[dict[str, Any]]:
        loader = DataLoader(
            self.dataset, batch_size=None, num_workers=self.num_workers, **self.options
        )
        for batch in loader:
            self.consumed += len(batch["index"])
            yield batch

    def __len__(self) -> int:
        sampler = self.dataset.sampler()
        if self.dataset.drop_last:  # only the batches every rank has in full
            remaining = (self.dataset.plan.total - self.dataset.start) // sampler.world_size
            return remaining // self.dataset.batch_size
        return -(-len(sampler) // self.dataset.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning (call it before each epoch's loop). A
        resume point loaded for this same epoch, with nothing consumed since, is kept: the
        usual loop ``load_state_dict(...)`` then ``set_epoch(e)`` resumes, not restarts."""
        if epoch == self.dataset.epoch and self.consumed == 0 and self.dataset.start:
            return
        self.dataset.epoch = epoch
        self.dataset.start = 0
        self.consumed = 0

    def state_dict(self) -> dict[str, Any]:
        sampler = self.dataset.sampler()
        sampler.advance(self.consumed)
        return sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.dataset.sampler().load_state_dict(state)  # checks seed and plan
        self.dataset.epoch = int(state["epoch"])
        self.dataset.start = int(state["sample_in_epoch"])
        self.consumed = 0
