"""Tests for saferinstruct.io: every input format, ids, column mapping, one-line errors,
atomic and append writes, truncated files and streaming. Run:

    HF_HUB_OFFLINE=1 .venv/bin/pytest tests/test_io.py -q
"""

from __future__ import annotations

import csv
import gzip
import json
import tracemalloc
from pathlib import Path

import pytest

from saferinstruct.errors import BadInput
from saferinstruct.io import (
    count_records,
    read_jsonl,
    read_records,
    write_jsonl_atomic,
)

DATA = Path(__file__).resolve().parents[1] / "data"
ROWS = [
    {"text": "first text", "label": "hate"},
    {"text": "second, with a comma\nand a newline", "label": "self-harm"},
    {"text": 'third "quoted" text é', "label": "hate"},
]


# ---------------------------------------------------------------- builders


def make_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def make_jsonl(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def make_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    return path


def make_dataset(path: Path, rows: list[dict]) -> Path:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


MAKERS = {
    "data.csv": make_csv,
    "data.jsonl": make_jsonl,
    "data.json": make_jsonl,
    "data.jsonl.gz": make_jsonl,
    "data.parquet": make_parquet,
    "data_ds": make_dataset,
}


@pytest.fixture(params=sorted(MAKERS))
def any_input(request, tmp_path: Path) -> Path:
    """The same three rows in every supported format."""
    return MAKERS[request.param](tmp_path / request.param, ROWS)


# ---------------------------------------------------------------- reading


def test_round_trip_every_format(any_input: Path) -> None:
    records = list(read_records(any_input))
    assert [{k: r[k] for k in ("text", "label")} for r in records] == ROWS
    assert count_records(any_input) == len(ROWS)


def test_ids_default_to_stem_and_row_number(any_input: Path) -> None:
    stem = "data_ds" if any_input.is_dir() else "data"
    ids = [r["id"] for r in read_records(any_input)]
    assert ids == [f"{stem}:0", f"{stem}:1", f"{stem}:2"]
    assert ids == [r["id"] for r in read_records(any_input)]  # stable across reads


def test_own_id_field_and_id_column(tmp_path: Path) -> None:
    rows = [{"id": 7, "uid": "a", "text": "x"}, {"id": 9, "uid": "b", "text": "y"}]
    path = make_jsonl(tmp_path / "r.jsonl", rows)
    assert [r["id"] for r in read_records(path)] == ["7", "9"]
    assert [r["id"] for r in read_records(path, id_column="uid")] == ["a", "b"]
    assert [r["id"] for r in read_records(path, columns={"id": "uid"})] == ["a", "b"]


def test_column_mapping_renames(tmp_path: Path) -> None:
    path = make_csv(tmp_path / "pairs.csv", ROWS)
    records = list(read_records(path, columns={"content": "text", "category": "label"}))
    assert records[1] == {"id": "pairs:1", "content": ROWS[1]["text"], "category": "self-harm"}
    short = list(read_records(path, text_column="label"))
    assert [r["text"] for r in short] == ["hate", "self-harm", "hate"]


def test_limit(any_input: Path) -> None:
    assert [r["text"] for r in read_records(any_input, limit=2)] == ["first text", ROWS[1]["text"]]
    assert list(read_records(any_input, limit=0)) == []


def test_missing_column_names_column_path_and_available(any_input: Path) -> None:
    with pytest.raises(BadInput) as err:
        read_records(any_input, columns={"text": "rejected"})  # raised before iterating
    message = str(err.value)
    assert "\n" not in message
    assert str(any_input) in message and "'rejected'" in message
    assert "text" in message and "label" in message


def test_missing_id_column(tmp_path: Path) -> None:
    path = make_csv(tmp_path / "r.csv", ROWS)
    with pytest.raises(BadInput, match="'uid'"):
        read_records(path, id_column="uid")


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        read_records(tmp_path / "nope.jsonl")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(BadInput, match="unknown format"):
        read_records(tmp_path / "notes.txt")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(BadInput, match="not a saved dataset"):
        read_records(tmp_path / "plain_dir")


def test_malformed_jsonl_line_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n{"text": "ok"}\n')
    with pytest.raises(BadInput, match=r"bad\.jsonl: line 2"):
        list(read_records(path))
    path.write_text('["not", "an", "object"]\n')
    with pytest.raises(BadInput, match="line 1"):
        read_records(path)


def test_jsonl_row_missing_mapped_column_later(tmp_path: Path) -> None:
    path = make_jsonl(tmp_path / "r.jsonl", [{"text": "a"}, {"other": "b"}])
    records = read_records(path, text_column="text")
    assert next(records)["text"] == "a"
    with pytest.raises(BadInput, match="row 1"):
        next(records)


def test_not_utf8_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(BadInput, match="unreadable"):
        list(read_records(path))


def test_empty_jsonl_yields_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert list(read_records(path, text_column="text")) == []
    assert count_records(path) == 0


# ---------------------------------------------------------------- writing


def test_write_jsonl_atomic_round_trip(tmp_path: Path) -> None:
    for name in ("out/a.jsonl", "out/nested/b.jsonl.gz"):
        path = tmp_path / name
        assert write_jsonl_atomic(path, iter(ROWS)) == 3
        assert list(read_jsonl(path)) == ROWS
        assert [r["text"] for r in read_records(path)] == [r["text"] for r in ROWS]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == [
        "a.jsonl",
        "b.jsonl.gz",
    ]


def test_gz_output_is_deterministic(tmp_path: Path) -> None:
    write_jsonl_atomic(tmp_path / "one.jsonl.gz", ROWS)
    write_jsonl_atomic(tmp_path / "two.jsonl.gz", ROWS)
    assert (tmp_path / "one.jsonl.gz").read_bytes() == (tmp_path / "two.jsonl.gz").read_bytes()


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "stage.jsonl"
    write_jsonl_atomic(path, [{"v": "old"}])
    before = path.read_bytes()

    def exploding():
        yield {"v": "new-1"}
        yield {"v": "new-2"}
        raise RuntimeError("writer died midway")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(path, exploding())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["stage.jsonl"]

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(tmp_path / "fresh.jsonl", exploding())
    assert not (tmp_path / "fresh.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["stage.jsonl"]


def test_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "partial" / "03-filter.jsonl"
    write_jsonl_atomic(path, ROWS[:2])
    assert list(read_jsonl(path)) == ROWS[:2]

    with path.open("a", encoding="utf-8") as f:  # a writer killed mid-line
        f.write('{"text": "half a rec')
    assert list(read_jsonl(path)) == ROWS[:2]
    with pytest.raises(BadInput):  # the strict reader does not hide it
        list(read_records(path))


def test_read_jsonl_keeps_complete_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}')
    assert list(read_jsonl(path)) == [{"a": 1}, {"a": 2}]


def test_read_jsonl_malformed_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(BadInput, match="line 2"):
        list(read_jsonl(path))
    with pytest.raises(BadInput, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_read_jsonl_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.gz"
    write_jsonl_atomic(path, ({"i": i, "pad": "x" * 50} for i in range(2000)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    got = list(read_jsonl(path))
    assert 0 < len(got) < 2000
    assert [r["i"] for r in got] == list(range(len(got)))


# ---------------------------------------------------------------- streaming


def test_streaming_reads_first_record_without_loading_file(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl.gz"
    n = 200_000
    write_jsonl_atomic(path, ({"id": f"r{i}", "text": f"row {i} " + "y" * 100} for i in range(n)))
    assert count_records(path) == n

    tracemalloc.start()
    try:
        records = read_records(path, text_column="text")
        first = next(records)
        peak_first = tracemalloc.get_traced_memory()[1]
        records.close()
    finally:
        tracemalloc.stop()
    assert first["id"] == "r0"
    assert peak_first < 2_000_000  # the file is ~22 MB uncompressed

    tracemalloc.start()
    try:
        seen = sum(1 for _ in read_records(path, limit=50_000))
        peak_many = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == 50_000
    assert peak_many < 2_000_000  # flat: nothing accumulates while iterating


def test_streaming_csv_flat_memory(tmp_path: Path) -> None:
    path = make_csv(
        tmp_path / "big.csv", [{"text": "z" * 200, "label": str(i)} for i in range(30_000)]
    )
    tracemalloc.start()
    try:
        assert sum(1 for _ in read_records(path)) == 30_000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # the file is ~6 MB


# ---------------------------------------------------------------- shipped data


def test_shipped_sources_csv() -> None:
    path = DATA / "safer-instruct" / "sources.csv"
    records = list(
        read_records(path, id_column="id", columns={"text": "text", "category": "category"})
    )
    assert len(records) == count_records(path) == 64
    assert {r["category"] for r in records} == {"hate", "self-harm"}
    assert len({r["id"] for r in records}) == 64
    assert all(80 <= len(r["text"].strip()) <= 1200 for r in records)
    assert records[0]["id"].startswith("hate-")


def test_shipped_sample_matches_sources() -> None:
    sources = {r["id"]: r["text"] for r in read_records(DATA / "safer-instruct" / "sources.csv")}
    for category in ("hate", "self-harm"):
        path = DATA / "safer-instruct" / f"{category}-sample.csv"
        rows = list(read_records(path, id_column="id"))
        assert len(rows) == 32
        assert all(sources[r["id"]] == r["rejected"] and r["label"] == category for r in rows)


def test_shipped_alpacaeval_pairs() -> None:
    path = DATA / "alpacaeval" / "pairs.jsonl.gz"
    columns = {"instruction": "instruction", "response": "output"}
    records = list(read_records(path, columns=columns, limit=20))
    assert len(records) == 20
    assert all(r["instruction"] and r["response"] and r["generator"] for r in records)
    assert records[0]["id"] == "0"  # the instruction's index, shared by its 16 answers
    assert count_records(path) == 11_279
