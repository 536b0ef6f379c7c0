"""Sources: every format streams in bounded chunks with exact values; bad rows are located
or skipped and counted; seed 003's JSONL lists and loading statistics; SQLite and
PostgreSQL in chunks."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from stagewise.data.sources import (
    ReadReport,
    format_loading_statistics,
    open_source,
    read_jsonl_list,
)
from stagewise.errors import SourceError


def make_rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": i, "name": f"row-{i}", "score": i * 0.5, "ok": i % 3 == 0}
        for i in range(start, start + count)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write(path: Path, rows: list[dict[str, Any]], format: str) -> Path:
    """Write rows in the given format; Parquet and Arrow in several row groups / batches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    if format == "jsonl":
        write_jsonl(path, rows)
    elif format == "csv":
        pcsv.write_csv(table, path)
    elif format == "parquet":
        pq.write_table(table, path, row_group_size=70)
    elif format == "arrow-file":
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=90)
    elif format == "arrow-stream":
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=90)
    return path


def read_all(source: Any, chunk_rows: int, columns: list[str] | None = None) -> list[dict]:
    batches = list(source.batches(chunk_rows=chunk_rows, columns=columns))
    assert all(0 < batch.num_rows <= chunk_rows for batch in batches)
    return pa.Table.from_batches(batches).to_pylist() if batches else []


FORMATS = [
    ("jsonl", "data.jsonl"),
    ("csv", "data.csv"),
    ("parquet", "data.parquet"),
    ("arrow-file", "data.arrow"),
    ("arrow-stream", "data.ipc"),
    ("arrow-file", "data.feather"),
]


@pytest.mark.parametrize(("format", "name"), FORMATS)
def test_each_format_round_trips_in_chunks(tmp_path: Path, format: str, name: str) -> None:
    rows = make_rows(300)
    source = open_source(write(tmp_path / name, rows, format))

    batches = list(source.batches(chunk_rows=64))

    assert [b.num_rows for b in batches] == [64, 64, 64, 64, 44] or (
        len(batches) > 4 and all(b.num_rows <= 64 for b in batches)
    )
    assert pa.Table.from_batches(batches).to_pylist() == rows
    assert source.report.rows == 300
    assert source.report.skipped == 0
    assert source.report.files == [str(tmp_path / name)]
    assert source.schema().names == ["id", "name", "score", "ok"]


@pytest.mark.parametrize(("format", "name"), FORMATS)
def test_columns_are_selected_in_the_order_asked(tmp_path: Path, format: str, name: str) -> None:
    rows = make_rows(120)
    source = open_source(write(tmp_path / name, rows, format))

    got = read_all(source, chunk_rows=50, columns=["name", "id"])

    assert got == [{"name": row["name"], "id": row["id"]} for row in rows]
    assert list(got[0]) == ["name", "id"]


@pytest.mark.parametrize(("format", "name"), FORMATS)
def test_a_column_the_source_lacks_is_an_error(tmp_path: Path, format: str, name: str) -> None:
    source = open_source(write(tmp_path / name, make_rows(10), format))

    with pytest.raises(SourceError, match="no column 'nope'"):
        list(source.batches(columns=["id", "nope"]))


def test_compressed_jsonl_is_read(tmp_path: Path) -> None:
    rows = make_rows(50)
    path = tmp_path / "data.jsonl.gz"
    with fsspec.open(str(path), "wt", compression="gzip") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in rows))

    assert read_all(open_source(path), chunk_rows=20) == rows


def test_a_glob_reads_the_matching_files_in_sorted_order(tmp_path: Path) -> None:
    for part in (2, 0, 1):
        write(tmp_path / "data" / f"part-{part}.parquet", make_rows(100, 100 * part), "parquet")
    write(tmp_path / "data" / "other.csv", make_rows(5), "csv")

    source = open_source(str(tmp_path / "data" / "*.parquet"))

    assert source.description == f"{tmp_path / 'data' / '*.parquet'} (3 files)"
    assert read_all(source, chunk_rows=64) == make_rows(300)
    assert source.report.files == [str(tmp_path / "data" / f"part-{i}.parquet") for i in range(3)]
    assert read_all(open_source(f"file://{tmp_path}/data/*.parquet"), 500) == make_rows(300)


def test_a_directory_reads_its_data_files_recursively(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write(root / "b" / "2.jsonl", make_rows(10, 20), "jsonl")
    write(root / "a.jsonl", make_rows(10, 0), "jsonl")
    write(root / "b" / "1.jsonl", make_rows(10, 10), "jsonl")
    (root / "README.txt").write_text("not data")
    (root / "_SUCCESS").write_text("")
    write(root / ".hidden" / "x.jsonl", make_rows(3, 900), "jsonl")

    source = open_source(root)

    assert source.description == f"{root} (3 files)"
    assert read_all(source, chunk_rows=7) == make_rows(30)


def test_a_memory_url_is_read_through_fsspec() -> None:
    fs = fsspec.filesystem("memory")
    prefix = f"/sources-{uuid.uuid4().hex}"
    rows = make_rows(200)
    try:
        for part in range(2):
            chunk = rows[100 * part : 100 * (part + 1)]
            text = "".join(json.dumps(r) + "\n" for r in chunk)
            fs.pipe(f"{prefix}/part-{part}.jsonl", text.encode())
        with fs.open(f"{prefix}/all.parquet", "wb") as handle:
            pq.write_table(pa.Table.from_pylist(rows), handle, row_group_size=50)

        jsonl = open_source(f"memory://{prefix}/*.jsonl")
        parquet = open_source(f"memory://{prefix}/all.parquet")

        assert read_all(jsonl, chunk_rows=30) == rows
        assert read_all(parquet, chunk_rows=30, columns=["id"]) == [{"id": r["id"]} for r in rows]
        assert jsonl.report.files[0] == f"memory://{prefix}/part-0.jsonl"
        assert parquet.fingerprint() == parquet.fingerprint()
    finally:
        if fs.exists(prefix):
            fs.rm(prefix, recursive=True)


def test_a_big_jsonl_file_streams_in_bounded_batches(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("w") as handle:
        for start in range(0, 200_000, 10_000):
            handle.write("".join(f'{{"i": {i}}}\n' for i in range(start, start + 10_000)))
    source = open_source(path)

    sizes = []
    total = 0
    for batch in source.batches(chunk_rows=1000):
        sizes.append(batch.num_rows)
        total += pa.compute.sum(batch.column("i")).as_py()

    assert len(sizes) == 200
    assert max(sizes) == 1000
    assert total == sum(range(200_000))
    assert source.report.rows == 200_000


# --- bad inputs ---------------------------------------------------------------------------


def bad_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"id": 1}\n'
        '{"id": 2}\n'
        '{"id": 3,\n'  # line 3: invalid JSON
        "\n"  # blank: skipped, still counted as a line
        "[1, 2]\n"  # line 5: not an object
        '{"id": 6}\n'
    )
    return path


def test_invalid_json_names_the_file_and_line(tmp_path: Path) -> None:
    source = open_source(bad_jsonl(tmp_path))

    with pytest.raises(SourceError) as caught:
        list(source.batches())

    assert "bad.jsonl:3" in str(caught.value)
    assert "invalid JSON" in caught.value.headline
    assert caught.value.hint


def test_skip_mode_skips_counts_and_reports_bad_lines(tmp_path: Path) -> None:
    path = bad_jsonl(tmp_path)
    source = open_source(path, on_error="skip")

    assert read_all(source, chunk_rows=2) == [{"id": 1}, {"id": 2}, {"id": 6}]
    assert source.report.rows == 3
    assert source.report.skipped == 2
    assert source.report.first_errors[0].startswith(f"{path}:3: invalid JSON")
    assert source.report.first_errors[1] == f"{path}:5: expected a JSON object, found an array"


def test_skip_mode_keeps_only_the_first_five_errors(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    path.write_text("".join("oops\n" if i % 2 else f'{{"id": {i}}}\n' for i in range(20)))
    source = open_source(path, on_error="skip")

    rows = read_all(source, chunk_rows=4)

    assert len(rows) == 10
    assert source.report.skipped == 10
    assert [e.split(": ")[0] for e in source.report.first_errors] == [
        f"{path}:{line}" for line in (2, 4, 6, 8, 10)
    ]


def test_jsonl_keeps_strings_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"when": "2020-01-01 10:00:00", "n": {"t": "2020-01-02"}}\n'
        b"\n   \n"
        b'{"when": "later", "n": null}\n'
    )

    rows = read_all(open_source(path), chunk_rows=10)

    assert rows == [
        {"when": "2020-01-01 10:00:00", "n": {"t": "2020-01-02"}},
        {"when": "later", "n": None},
    ]


def test_a_null_line_and_invalid_utf8_are_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": "ok"}\nnull\n{"a": "\xff"}\n{"a": "fine"}\n')
    source = open_source(path, on_error="skip")

    assert read_all(source, chunk_rows=10) == [{"a": "ok"}, {"a": "fine"}]
    assert [e.split(": ", 1)[1] for e in source.report.first_errors] == [
        "expected a JSON object, found null",
        "not UTF-8 text: invalid start byte",
    ]


def test_a_type_conflict_after_the_first_chunk_is_a_bad_row(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "types.jsonl",
        [{"id": 1}, {"id": 2}, {"id": 3}, {"id": "four"}, {"id": 5}, {"id": 6, "extra": 1}],
    )

    with pytest.raises(SourceError, match=r"types\.jsonl:4"):
        list(open_source(path).batches(chunk_rows=2))
    source = open_source(path, on_error="skip")
    assert read_all(source, chunk_rows=2) == [{"id": 1}, {"id": 2}, {"id": 3}, {"id": 5}]
    assert source.report.skipped == 2
    assert source.report.first_errors[1].startswith(f"{path}:6: key 'extra'")


def test_a_type_conflict_inside_the_first_chunk_is_a_bad_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "first.jsonl", [{"a": 1}, {"a": 2}, {"a": "x"}, {"a": 4.5}])

    with pytest.raises(SourceError, match=r"first\.jsonl:3: type conflict"):
        list(open_source(path).batches())
    source = open_source(path, on_error="skip")
    assert read_all(source, chunk_rows=100) == [{"a": 1.0}, {"a": 2.0}, {"a": 4.5}]
    assert source.report.skipped == 1


def test_a_csv_row_with_the_wrong_number_of_fields(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,name\n1,a\n2,b\n3,c,extra\n4,d\n")

    with pytest.raises(SourceError) as caught:
        list(open_source(path).batches())
    assert f"{path}:4" in str(caught.value)
    assert "expected 2 columns, found 3" in str(caught.value)

    source = open_source(path, on_error="skip")
    assert read_all(source, chunk_rows=2) == [
        {"id": 1, "name": "a"},
        {"id": 2, "name": "b"},
        {"id": 4, "name": "d"},
    ]
    assert source.report.skipped == 1
    assert source.report.first_errors[0].startswith(f"{path}:4: expected 2 columns")


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(("format", "name"), [("parquet", "x.parquet"), ("arrow-file", "x.arrow")])
def test_a_truncated_file_names_the_file_and_the_reason(
    tmp_path: Path, format: str, name: str
) -> None:
    path = truncate(write(tmp_path / name, make_rows(500), format))

    with pytest.raises(SourceError) as caught:
        list(open_source(path).batches())

    assert str(path) in str(caught.value)
    assert "cannot read this" in caught.value.headline
    assert "truncated" in (caught.value.hint or "")


def test_skip_mode_skips_an_unreadable_file_and_reads_the_others(tmp_path: Path) -> None:
    write(tmp_path / "a.parquet", make_rows(100), "parquet")
    truncate(write(tmp_path / "b.parquet", make_rows(100), "parquet"))
    write(tmp_path / "c.parquet", make_rows(100, 100), "parquet")

    source = open_source(tmp_path, on_error="skip")

    assert read_all(source, chunk_rows=64) == make_rows(200)
    assert source.report.skipped == 1
    assert source.report.first_errors[0].startswith(f"{tmp_path / 'b.parquet'}: cannot read")


def test_files_with_different_columns_are_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.parquet", make_rows(10), "parquet")
    write(tmp_path / "b.parquet", [{"other": 1}], "parquet")

    with pytest.raises(SourceError, match="columns differ from those of"):
        list(open_source(tmp_path).batches())


def test_no_files_matched(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(str(tmp_path / "nothing" / "*.jsonl"))
    assert "no files match" in caught.value.headline
    assert "nothing/*.jsonl" in str(caught.value)
    assert caught.value.hint


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "absent.jsonl")


def test_a_directory_of_mixed_formats_is_an_error_naming_them(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", make_rows(3), "jsonl")
    write(tmp_path / "b.csv", make_rows(3), "csv")

    with pytest.raises(SourceError) as caught:
        open_source(tmp_path)

    assert "mixed formats" in caught.value.headline
    assert "csv (1 file, e.g. b.csv)" in caught.value.headline
    assert "jsonl (1 file, e.g. a.jsonl)" in caught.value.headline
    assert read_all(open_source(tmp_path, format="csv"), chunk_rows=10) == make_rows(3)


def test_an_unknown_extension_needs_a_format(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.txt", make_rows(4))

    with pytest.raises(SourceError, match="unknown file type") as caught:
        open_source(path)
    assert "format=" in (caught.value.hint or "")
    assert read_all(open_source(path, format="jsonl"), chunk_rows=3) == make_rows(4)
    with pytest.raises(SourceError, match="unknown format 'xml'"):
        open_source(path, format="xml")


# --- fingerprints and schemas -------------------------------------------------------------


def test_a_fingerprint_is_stable_and_follows_the_content(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", make_rows(10))
    source = open_source(path)
    first = source.fingerprint()

    assert first == source.fingerprint() == open_source(path).fingerprint()
    assert len(first) == 64

    write_jsonl(path, make_rows(11))
    assert source.fingerprint() != first


def test_a_fingerprint_sees_a_rewrite_of_the_same_size(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"a": 1}])
    source = open_source(path)
    first = source.fingerprint()
    stat = path.stat()

    path.write_text('{"a": 2}\n')
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))

    assert source.fingerprint() != first


def test_schema_leaves_the_report_alone(tmp_path: Path) -> None:
    path = bad_jsonl(tmp_path)
    source = open_source(path, on_error="skip")
    list(source.batches())
    before = ReadReport(**vars(source.report))

    assert source.schema() == pa.schema([("id", pa.int64())])
    assert source.report == before


# --- SQL ----------------------------------------------------------------------------------


def fill_table(url: str, name: str, count: int) -> None:
    engine = sa.create_engine(url, poolclass=NullPool)
    table = sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(40)),
        sa.Column("score", sa.Float),
    )
    try:
        with engine.begin() as conn:
            table.create(conn)
            # Inserted out of order: a table is read in primary-key order.
            rows = [{"id": i, "name": f"row-{i}", "score": i / 4} for i in range(count)]
            conn.execute(table.insert(), rows[::-1])
    finally:
        engine.dispose()


def drop_table(url: str, name: str) -> None:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            sa.Table(name, sa.MetaData()).drop(conn, checkfirst=True)
    finally:
        engine.dispose()


def expected_sql_rows(count: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"row-{i}", "score": i / 4} for i in range(count)]


def check_sql_source(url: str, name: str) -> None:
    source = open_source(url, table=name)
    batches = list(source.batches(chunk_rows=1000))
    assert [b.num_rows for b in batches] == [1000, 1000, 500]
    assert pa.Table.from_batches(batches).to_pylist() == expected_sql_rows(2500)
    assert source.schema() == pa.schema(
        [("id", pa.int64()), ("name", pa.string()), ("score", pa.float64())]
    )

    query = open_source(url, query=f"SELECT name, id FROM {name} WHERE id < 1500 ORDER BY id")
    got = read_all(query, chunk_rows=1000, columns=["id"])
    assert got == [{"id": i} for i in range(1500)]

    literal = open_source(url, query="SELECT 'a:b' AS s, '50%' AS p;")
    assert read_all(literal, chunk_rows=10) == [{"s": "a:b", "p": "50%"}]

    columns = read_all(source, chunk_rows=700, columns=["score", "id"])
    assert columns[:2] == [{"score": 0.0, "id": 0}, {"score": 0.25, "id": 1}]

    first = source.fingerprint()
    assert first == source.fingerprint()
    engine = sa.create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {name} (id, name, score) VALUES (9999, 'x', 1)"))
    engine.dispose()
    assert source.fingerprint() != first


def test_sqlite_table_and_query_read_in_chunks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'items.db'}"
    fill_table(url, "items", 2500)

    check_sql_source(url, "items")


def test_a_table_name_that_is_not_an_identifier_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'items.db'}"

    with pytest.raises(SourceError, match="is not a table name"):
        open_source(url, table="items; DROP TABLE items")


def test_a_missing_table_names_the_url_and_the_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'items.db'}"
    fill_table(url, "items", 3)

    with pytest.raises(SourceError) as caught:
        list(open_source(url, table="itemz").batches())

    assert "no table 'itemz'" in caught.value.headline
    assert caught.value.location == url
    assert "items" in (caught.value.hint or "")


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such SQLite database file"):
        open_source(f"sqlite:///{tmp_path / 'absent.db'}", table="items")
    assert not (tmp_path / "absent.db").exists()


def test_a_failing_query_hides_the_password() -> None:
    url = "postgresql+psycopg://someone:s3cret@127.0.0.1:1/nowhere"

    with pytest.raises(SourceError) as caught:
        list(open_source(url, query="SELECT 1").batches())

    assert "s3cret" not in str(caught.value)
    assert "someone:***@127.0.0.1:1/nowhere" in str(caught.value)


def test_a_database_url_needs_a_query_or_a_table(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="exactly one of query= and table="):
        open_source(f"sqlite:///{tmp_path / 'x.db'}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    url = os.environ.get("STAGEWISE_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("STAGEWISE_TEST_POSTGRES_URL is not set")
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at STAGEWISE_TEST_POSTGRES_URL is unreachable: {exc}")
        pytest.skip(f"PostgreSQL at STAGEWISE_TEST_POSTGRES_URL is unreachable: {exc}")
    finally:
        engine.dispose()
    yield url


def test_postgresql_table_and_query_read_in_chunks(postgres_url: str) -> None:
    name = f"sw_sources_{uuid.uuid4().hex[:12]}"
    fill_table(postgres_url, name, 2500)
    try:
        check_sql_source(postgres_url, name)
    finally:
        drop_table(postgres_url, name)


# --- seed 003's JSONL lists ---------------------------------------------------------------


def test_a_jsonl_list_skips_a_missing_file_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    food101 = write_jsonl(
        tmp_path / "food101" / "train.jsonl",
        [{"image_path": f"/img/{i}.jpg", "label": i, "dataset_name": "food101"} for i in range(3)],
    )
    # Records without dataset_name take their folder's name.
    food2k = write_jsonl(
        tmp_path / "food2k" / "train.jsonl",
        [{"image_path": f"/img/{i}.jpg", "label": i} for i in range(5)],
    )
    absent = tmp_path / "imagenet" / "train.jsonl"

    with caplog.at_level(logging.WARNING, logger="stagewise.data"):
        source = read_jsonl_list([str(food101), str(food2k), str(absent)])

    assert f"⚠️ 跳过不存在的文件: {absent}" in caplog.messages
    assert source.report.missing == [str(absent)]
    rows = read_all(source, chunk_rows=2)
    assert len(rows) == 8
    assert rows[3] == {"image_path": "/img/0.jpg", "label": 0, "dataset_name": "food2k"}
    assert source.dataset_counts() == {"food101": 3, "food2k": 5}
    assert source.loading_statistics() == (
        "📊 多数据集加载统计 (训练模式):\n"
        "  • food101: 3 samples (37.5%)\n"
        "  • food2k: 5 samples (62.5%)\n"
        "📊 总计: 8 samples"
    )
    assert read_all(source, chunk_rows=4, columns=["label"])[:2] == [{"label": 0}, {"label": 1}]
    assert source.dataset_counts() == {"food101": 3, "food2k": 5}


def test_a_jsonl_list_can_make_a_missing_file_an_error(tmp_path: Path) -> None:
    present = write_jsonl(tmp_path / "a" / "train.jsonl", make_rows(2))
    absent = tmp_path / "b" / "train.jsonl"

    with pytest.raises(SourceError) as caught:
        read_jsonl_list([present, absent], missing="error")

    assert caught.value.location == str(absent)
    with pytest.raises(SourceError, match="none of the 1 JSONL file exists"):
        read_jsonl_list([absent])


def test_the_loading_statistics_reproduce_seed_003() -> None:
    counts = {"food101": 75_750, "food2k": 100_000, "imagenet": 24_300}

    assert format_loading_statistics(counts, mode="train") == (
        "📊 多数据集加载统计 (训练模式):\n"
        "  • food101: 75,750 samples (37.9%)\n"
        "  • food2k: 100,000 samples (50.0%)\n"
        "  • imagenet: 24,300 samples (12.1%)\n"
        "📊 总计: 200,050 samples"
    )
    assert format_loading_statistics(counts, mode="训练模式") == format_loading_statistics(counts)
    assert format_loading_statistics({"a": 1}, mode="eval").startswith(
        "📊 多数据集加载统计 (评估模式):"
    )
