"""The built-in ``data_processing`` task: every table in the inputs, into one sample store.

A ``data_processing`` task that names no ``function`` runs :func:`prepare`. Each input is
a file, a glob or a folder of CSV, JSONL, Parquet or Arrow files, read with stagewise's
sources (:mod:`stagewise.data.sources`: a folder is read recursively, in sorted order,
one source per format it holds), or a sample store (its rows). The rows of every input,
in input order, become one sample store (:mod:`stagewise.data.samples`) written to the
task's one output.

An input named ``annotations`` (seed 002's example) is not rows but labels: a table with
an ``id`` column and a ``label`` column (the ``id_column`` and ``label_column``
parameters). It is joined onto the rows by id: a row gets its annotation's label (which
replaces a label the row already had), a row without an annotation keeps its own label,
and a row left with no label at all is dropped, since nothing can be learnt from it; the
store's ``stats.unannotated`` counts them. An id annotated twice is an error.

All inputs must have the same columns (types are cast to the first input's). A
``split_column`` parameter sends each row to the split it names (train, val, test...);
otherwise every row is in ``train``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stagewise.data.samples import StoreWriter, is_store, open_store
from stagewise.data.sources import FORMATS, ReadReport, Source, open_source
from stagewise.errors import DataError, PipelineError, SourceError, StagewiseError
from stagewise.store.artifacts import fingerprint

ANNOTATIONS = "annotations"
VERSION = 1  # bumped when prepare writes something different for the same inputs


def prepare(
    context: dict[str, Any] | None = None,
    id_column: str = "id",
    label_column: str = "label",
    split_column: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """The ``data_processing`` task: the inputs' tables into the one output's sample store.

    The runner passes every input and output by name in ``kwargs`` (their names are the
    pipeline's), so which is which comes from ``context``."""
    if context is None:
        raise PipelineError(
            "prepare() runs as a pipeline task (it needs the task's context)",
            hint="in Python, call prepare_store(inputs, output) instead",
        )
    outputs = dict(context.get("outputs") or {})
    if len(outputs) != 1:
        raise PipelineError(
            f"a data_processing task writes one output (the sample store); task "
            f"'{context.get('task')}' declares {len(outputs)}",
            hint="declare one output, or set 'function:' to your own code",
        )
    return prepare_store(
        context.get("inputs") or {},
        next(iter(outputs.values())),
        id_column=id_column,
        label_column=label_column,
        split_column=split_column,
    )


def prepare_store(
    inputs: Mapping[str, str],
    output: str,
    *,
    id_column: str = "id",
    label_column: str = "label",
    split_column: str | None = None,
) -> dict[str, Any]:
    """Write the rows of ``inputs`` (name -> path) as one sample store at ``output``."""
    rows = {name: path for name, path in inputs.items() if name != ANNOTATIONS}
    if not rows:
        raise DataError(
            "a data_processing task needs an input with rows (besides 'annotations')",
            hint="add an input whose source is a table: a CSV, JSONL or Parquet file or folder",
        )
    sources = {name: open_tables(name, path) for name, path in rows.items()}
    labels = None
    if ANNOTATIONS in inputs:
        labels = _annotations(inputs[ANNOTATIONS], id_column, label_column)
    settings = {"id_column": id_column, "label_column": label_column, "split": split_column}
    key = _key(sources, inputs.get(ANNOTATIONS), settings)
    counts: dict[str, int] = {}
    written = unannotated = 0
    schema: tuple[pa.Schema, str] | None = None
    with StoreWriter(output, key) as writer:
        for name, found in sources.items():
            counts[name] = 0
            for source in found:
                for batch in read_batches(name, source):
                    counts[name] += batch.num_rows
                    table = pa.Table.from_batches([batch])
                    if labels is not None:
                        table = _join(table, labels, id_column, label_column, source)
                        unannotated += batch.num_rows - table.num_rows
                    if schema is None:
                        schema = (table.schema, source.description)
                    table = _conform(table, schema, source.description)
                    _add(writer, table, split_column)
                    written += table.num_rows
            if counts[name] == 0:
                raise DataError(f"input '{name}' holds no rows", location=rows[name])
        if written == 0:
            raise DataError(
                f"no row has a label: none of the {sum(counts.values())} rows' "
                f"'{id_column}' values is in the annotations",
                location=inputs.get(ANNOTATIONS),
                hint="check that the annotations' ids are those of the rows (id_column)",
            )
        writer.commit(
            source={
                "inputs": {
                    n: [{"description": s.description, "fingerprint": s.fingerprint()} for s in f]
                    for n, f in sources.items()
                },
                ANNOTATIONS: inputs.get(ANNOTATIONS),
            },
            transform={"task": "data_processing", **settings},
            stats={"records": written, "read": counts, "unannotated": unannotated},
        )
    # The task's log is its stdout: one line saying what was made.
    sys.stdout.write(
        f"prepared {written} rows from {', '.join(f'{n} ({c})' for n, c in counts.items())}"
        + (f"; {unannotated} rows without a label dropped" if unannotated else "")
        + "\n"
    )
    return {"rows": written, "read": counts, "unannotated": unannotated}


def open_tables(name: str, path: str) -> list[Source]:
    """The sources of input ``name``: one, or one per format when a folder mixes them."""
    if is_store(path):  # another data_processing task's output: its rows, not its files
        return [_StoreSource(path, name)]
    try:
        return [open_source(path)]
    except SourceError as exc:
        if not exc.headline.startswith("mixed formats"):
            raise _unreadable(name, path, exc) from None
    found = []
    for format in FORMATS:
        try:
            found.append(open_source(path, format=format))
        except SourceError:
            continue  # this format is not in the folder
    return found


def read_batches(name: str, source: Source) -> Iterator[pa.RecordBatch]:
    """The source's batches; a file that cannot be read is an error naming the input."""
    try:
        yield from source.batches()
    except SourceError as exc:
        raise _unreadable(name, source.description, exc) from None


def read_table(path: str, *, name: str = "input", split: str | None = None) -> pa.Table:
    """A sample store (its ``split`` when it has one) or files, as one Arrow table. Tensor
    columns of a store are left out."""
    if is_store(path):
        store = open_store(path)
        if store.kind != "table":
            raise DataError(
                f"input '{name}' is a store of {store.kind}, not of table rows",
                location=path,
                hint="give this task a table store (made by a data_processing task)",
            )
        if split is not None and split in store.splits:
            store = store.split(split)
        columns: dict[str, Any] = {}
        for column in store.metadata.columns:
            values = store.column(column.name)
            if isinstance(values, np.ndarray):
                if values.ndim != 1:
                    continue
                values = pa.array(values)
            columns[column.name] = values
        return pa.table(columns)
    tables = []
    for source in open_tables(name, path):
        schema = source.schema()
        tables.append(pa.Table.from_batches(list(read_batches(name, source)), schema=schema))
    return pa.concat_tables(tables, promote_options="permissive")


class _StoreSource(Source):
    """A sample store read as a source: the rows of all its splits."""

    def __init__(self, path: str, name: str) -> None:
        self.path, self.name = path, name
        self.description = path
        self.on_error = "raise"
        self.report = ReadReport(files=[path])

    def fingerprint(self) -> str:
        found = fingerprint(self.path)
        return found[0] if found else "missing"

    def _read(self, chunk_rows: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        table = read_table(self.path, name=self.name)
        yield from (table if columns is None else table.select(columns)).to_batches(chunk_rows)


def _unreadable(name: str, path: str, exc: StagewiseError) -> DataError:
    return DataError(
        f"input '{name}' has no readable table: {exc.headline}",
        location=exc.location or path,
        hint=exc.hint or "give it a CSV, JSONL, Parquet or Arrow file, or a folder of them",
    )


def _annotations(path: str, id_column: str, label_column: str) -> tuple[pa.Array, pa.Array]:
    table = read_table(path, name=ANNOTATIONS)
    absent = [c for c in (id_column, label_column) if c not in table.column_names]
    if absent:
        raise DataError(
            f"the annotations have no column {', '.join(map(repr, absent))}",
            location=path,
            hint=f"their columns are {', '.join(table.column_names) or 'none'}; annotations "
            "are an id column and a label column (parameters id_column, label_column)",
        )
    ids = table.column(id_column).combine_chunks()
    if pc.count_distinct(ids).as_py() != len(ids) - ids.null_count:
        counts = pc.value_counts(ids).to_pylist()
        twice = [c["values"] for c in counts if c["counts"] > 1][:5]
        raise DataError(
            f"ids annotated more than once: {twice}",
            location=path,
            hint="keep one label per id",
        )
    return ids, table.column(label_column).combine_chunks()


def _join(
    table: pa.Table,
    labels: tuple[pa.Array, pa.Array],
    id_column: str,
    label_column: str,
    source: Source,
) -> pa.Table:
    """The rows with their annotated labels; rows left without a label are dropped."""
    if id_column not in table.column_names:
        raise DataError(
            f"the rows have no '{id_column}' column to join the annotations on",
            location=source.description,
            hint=f"their columns are {', '.join(table.column_names)}; set id_column",
        )
    ids = table.column(id_column)
    known, values = labels
    try:
        known = known.cast(ids.type)
        found = pc.take(values, pc.index_in(ids, value_set=known))
        if label_column in table.column_names:
            own = table.column(label_column)
            found = pc.coalesce(found.cast(own.type), own)
            table = table.drop_columns([label_column])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(
            f"the annotations do not match the rows' types: {exc}",
            location=source.description,
            hint=f"give '{id_column}' (and '{label_column}') the same type in both",
        ) from None
    table = table.append_column(label_column, found)
    return table.filter(pc.is_valid(table.column(label_column)))


def _add(writer: StoreWriter, table: pa.Table, split_column: str | None) -> None:
    if split_column is None:
        writer.add_batch(table)
        return
    # Imported here: preprocess brings scipy (for spatial patches), a second at start-up.
    from stagewise.data.preprocess import _add_rows

    _add_rows(writer, table, split_column)


def _conform(table: pa.Table, first: tuple[pa.Schema, str], where: str) -> pa.Table:
    schema, origin = first
    if set(table.column_names) != set(schema.names):
        raise DataError(
            f"these rows have columns ({', '.join(table.column_names)}), those of {origin} "
            f"have ({', '.join(schema.names)})",
            location=where,
            hint="give every input of a data_processing task the same columns",
        )
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(
            f"these rows do not convert to the types of {origin}'s: {exc}",
            location=where,
            hint="give every input the same column types",
        ) from None


def _key(
    sources: dict[str, list[Source]], annotations: str | None, settings: dict[str, Any]
) -> str:
    """The store version's name: what it was made from (names, sizes, times) and how."""
    material = {
        "version": VERSION,
        "inputs": {n: [s.fingerprint() for s in f] for n, f in sources.items()},
        "annotations": fingerprint(annotations) if annotations else None,
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]
