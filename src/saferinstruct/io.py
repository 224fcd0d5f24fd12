"""Streaming readers and writers for records: CSV, JSON lines (optionally gzipped),
Parquet and `datasets` directories saved with `save_to_disk`.

Readers yield one record (a plain dict) at a time, so memory stays flat however big the
input is. Every record gets an `id`: the `id_column` if named, else the row's own `id`,
else `"<file stem>:<row number>"` (from 0). A missing file, an unknown format or a
column the file lacks raises `BadInput` with one line naming the path and the column.

    from saferinstruct.io import read_records, write_atomic, write_jsonl_atomic

    rows = read_records("data/safer-instruct/sources.csv", id_column="id",
                        columns={"text": "text", "category": "category"}, limit=8)
    n = write_jsonl_atomic("out/inputs.jsonl.gz", rows)
    write_atomic("out/notes.md", "# notes")   # text or bytes, the one atomic writer

`read_jsonl` reads a stage file back and skips a final line a killed writer left
incomplete (the runner appends stage files as records finish).
`count_records` is a cheap row count for progress bars.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any, TypeVar

from saferinstruct.errors import BadInput

Record = dict[str, Any]
JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
DATASET_MARKERS = ("dataset_info.json", "state.json")
BATCH_ROWS = 1024
READ_ERRORS = (UnicodeDecodeError, csv.Error, EOFError, gzip.BadGzipFile)
T = TypeVar("T")


def unreadable(path: Path, error: Exception) -> BadInput:
    """A one-line BadInput for a file that cannot be decoded (not UTF-8, bad gzip, ...)."""
    detail = str(error).splitlines()[0] if str(error) else ""
    return BadInput(f"{path}: unreadable ({type(error).__name__}: {detail})")


# ---------------------------------------------------------------- format detection


def detect_format(path: Path) -> str:
    """'csv', 'jsonl', 'parquet' or 'datasets' for an existing path; BadInput otherwise."""
    if not path.exists():
        raise BadInput(f"{path}: no such file or directory")
    if path.is_dir():
        if any((path / marker).exists() for marker in DATASET_MARKERS):
            return "datasets"
        if (path / "dataset_dict.json").exists():
            splits = sorted(p.name for p in path.iterdir() if p.is_dir())
            raise BadInput(f"{path}: a DatasetDict; point at one split ({', '.join(splits)})")
        raise BadInput(f"{path}: a directory but not a saved dataset (no dataset_info.json)")
    name = path.name.lower()
    for fmt, suffixes in (
        ("csv", CSV_SUFFIXES),
        ("jsonl", JSONL_SUFFIXES),
        ("parquet", PARQUET_SUFFIXES),
    ):
        if name.endswith(suffixes):
            return fmt
    known = ", ".join(CSV_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES)
    raise BadInput(f"{path}: unknown format (expected {known} or a save_to_disk directory)")


def file_stem(path: Path) -> str:
    """The name without data suffixes (`pairs.jsonl.gz` -> `pairs`); a directory's name."""
    if path.is_dir():
        return path.name
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return Path(name).stem


def open_text(path: Path, newline: str) -> IO[str]:
    """Open a UTF-8 text file for reading (a byte-order mark at its start is dropped),
    through gzip when the name ends in `.gz`.

    CSV needs newline="" (quoted newlines); JSON lines use "\n" so that a stray `\r`
    never splits a line.
    """
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline=newline)
    return path.open(encoding="utf-8-sig", newline=newline)


# ---------------------------------------------------------------- raw row streams


def iter_csv(path: Path) -> tuple[list[str], Iterator[Record]]:
    """(header, rows) of a CSV file; rows stream from the open file. Parsing is strict:
    a quoted field that never closes (a stray quote would otherwise swallow every row
    after it into one field) is BadInput naming the line where it opens."""
    csv.field_size_limit(2**31 - 1)
    f = open_text(path, newline="")
    reader = csv.DictReader(f, strict=True)
    try:
        header = list(reader.fieldnames or [])
    except READ_ERRORS as e:
        f.close()
        raise unreadable(path, e) from None

    def rows() -> Iterator[Record]:
        with f:
            n = 0
            while True:
                start = reader.line_num + 1
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    raise BadInput(f"{path}: line {start}: {e} (a quoted field opens there and "
                                   "does not close: a stray quote?)") from None  # fmt: skip
                if None in row:
                    raise BadInput(f"{path}: line {reader.line_num}: more fields than the header "
                                   "(a comma in a text that is not in quotes?)")  # fmt: skip
                n += 1
                yield row

    return header, rows()


def parse_json_line(path: Path, lineno: int, line: str) -> Record:
    """One JSON object from one line; BadInput naming path and line otherwise."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        array = lineno == 1 and line.lstrip().startswith("[")
        hint = " (a JSON array, not JSON lines?)" if array else ""
        raise BadInput(f"{path}: line {lineno} is not valid JSON: {e.msg}{hint}") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{path}: line {lineno} is a JSON {type(obj).__name__}, not an object")
    return obj


def iter_jsonl(path: Path) -> Iterator[Record]:
    """Objects of a JSON-lines file, line by line; blank lines are skipped."""
    with open_text(path, newline="\n") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield parse_json_line(path, lineno, line)


def iter_parquet(path: Path) -> tuple[list[str], Iterator[Record]]:
    """(columns, rows) of a Parquet file, read one record batch at a time."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise BadInput(f"{path}: not a readable Parquet file ({type(e).__name__})") from None

    def rows() -> Iterator[Record]:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            yield from batch.to_pylist()

    return list(pf.schema_arrow.names), rows()


def load_dataset_dir(path: Path) -> Any:
    """A `datasets.Dataset` saved with `save_to_disk`, memory-mapped, plain Python format."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises FileNotFoundError/ValueError for broken dirs
        raise BadInput(f"{path}: not a loadable datasets directory ({type(e).__name__})") from None
    if not isinstance(ds, datasets.Dataset):
        raise BadInput(f"{path}: a DatasetDict; point at one split ({', '.join(ds)})")
    return ds.with_format(None)


def iter_dataset(path: Path) -> tuple[list[str], Iterator[Record]]:
    """(columns, rows) of a saved dataset, read in batches."""
    ds = load_dataset_dir(path)

    def rows() -> Iterator[Record]:
        for batch in ds.iter(batch_size=BATCH_ROWS):
            keys, columns = list(batch), list(batch.values())
            for i in range(len(columns[0]) if columns else 0):
                yield {key: column[i] for key, column in zip(keys, columns, strict=True)}

    return list(ds.column_names), rows()


def open_rows(path: Path) -> tuple[list[str] | None, Iterator[Record]]:
    """(known columns or None, row stream) for any supported input."""
    fmt = detect_format(path)
    if fmt == "csv":
        return iter_csv(path)
    if fmt == "parquet":
        return iter_parquet(path)
    if fmt == "datasets":
        return iter_dataset(path)
    return None, iter_jsonl(path)


def columns_of(path: str | os.PathLike[str]) -> list[str]:
    """The columns of an input (the first row's keys for JSON lines; [] when empty)."""
    header, rows = open_rows(Path(path))
    try:
        if header is None:
            first = next(guarded(Path(path), rows), None)
            return list(first) if first else []
        return header
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


# ---------------------------------------------------------------- records


def check_columns(path: Path, available: list[str], wanted: Iterable[str]) -> None:
    """BadInput naming path, the first missing column and the available ones."""
    for column in wanted:
        if column not in available:
            listed = ", ".join(available) or "none"
            raise BadInput(f"{path}: no column {column!r} (available: {listed})")


def resolve_columns(
    text_column: str | None, id_column: str | None, columns: dict[str, str] | None
) -> tuple[str | None, dict[str, str]]:
    """(id column, our-name -> file-column mapping) from the three ways of naming them."""
    mapping = dict(columns or {})
    if text_column is not None:
        if mapping.get("text", text_column) != text_column:
            raise BadInput(f"text_column={text_column!r} contradicts columns['text']")
        mapping["text"] = text_column
    if "id" in mapping:
        source = mapping.pop("id")
        if id_column not in (None, source):
            raise BadInput(f"id_column={id_column!r} contradicts columns['id']")
        id_column = source
    return id_column, mapping


def record_id(path: Path, row: Record, n: int, id_column: str | None) -> str:
    """The id of row n: id_column's value, else the row's own `id`, else `stem:n`."""
    if id_column is not None:
        value = row.get(id_column)
        if value is None or value == "":
            raise BadInput(f"{path}: row {n} has no value in id column {id_column!r}")
        return str(value)
    own = row.get("id")
    return str(own) if own not in (None, "") else f"{file_stem(path)}:{n}"


def to_record(
    path: Path, row: Record, n: int, id_column: str | None, mapping: dict[str, str]
) -> Record:
    """Rename mapped columns and add `id`; mapped columns missing from a row are an error."""
    missing = [src for src in mapping.values() if src not in row]
    if missing:
        raise BadInput(f"{path}: row {n} has no column {missing[0]!r}")
    sources = set(mapping.values())
    record = {"id": record_id(path, row, n, id_column)}
    record.update((k, v) for k, v in row.items() if k not in sources and k != "id")
    record.update({ours: row[src] for ours, src in mapping.items()})
    return record


def read_records(
    path: str | os.PathLike[str],
    *,
    text_column: str | None = None,
    id_column: str | None = None,
    columns: dict[str, str] | None = None,
    limit: int | None = None,
) -> Iterator[Record]:
    """Stream the records of a csv, jsonl(.gz), json-lines, parquet or saved-dataset input.

    `columns` maps our field names to the file's (`{"text": "rejected"}`) and renames
    them; `text_column="x"` is short for `columns={"text": "x"}`. Each record is the
    row's fields plus `id` (a string; see the module docstring). Columns are checked
    against the header (or the first row of JSON lines) before anything is yielded.
    `limit` stops after that many records. Errors are `BadInput`, one line each.
    """
    path = Path(path)
    id_column, mapping = resolve_columns(text_column, id_column, columns)
    if limit is not None and limit < 0:
        raise BadInput(f"{path}: limit must be >= 0, got {limit}")
    header, rows = open_rows(path)
    if header is None:  # JSON lines: the first row stands in for a header
        try:
            first = next(rows, None)
        except READ_ERRORS as e:
            raise unreadable(path, e) from None
        if first is None:  # no rows, so no column can be missing
            return iter(())
        header, rows = list(first), chain([first], rows)
    check_columns(path, header, [*mapping.values(), *([id_column] if id_column else [])])
    return _records(path, rows, id_column, mapping, limit)


def guarded(path: Path, rows: Iterator[Record]) -> Iterator[Record]:
    """Turn decoding failures of a row stream into one-line BadInput errors."""
    try:
        yield from rows
    except READ_ERRORS as e:
        raise unreadable(path, e) from None


def _records(
    path: Path,
    rows: Iterator[Record],
    id_column: str | None,
    mapping: dict[str, str],
    limit: int | None,
) -> Iterator[Record]:
    """The generator behind read_records, which validates before returning it."""
    try:
        for n, row in enumerate(islice(guarded(path, rows), limit)):
            yield to_record(path, row, n, id_column, mapping)
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()  # closes the file when the caller stops early


# ---------------------------------------------------------------- JSON lines


def dump_line(record: Record) -> str:
    """One record as one JSON line (UTF-8 kept readable)."""
    return json.dumps(record, ensure_ascii=False) + "\n"


def temp_path(path: Path) -> Path:
    """A temp name beside `path`, unique per process and call (two writers never share)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], T]) -> T:
    """Run `write` on a fresh temp file beside `path`, fsync, then `os.replace` it over
    `path`: a reader never sees half a file, and an error midway leaves any old file
    untouched. Parent directories are created; the file gets the user's umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as raw:
            result = write(raw)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


def umask() -> int:
    """The process's file-creation mask (read without changing it for long)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(root: Path) -> None:
    """Give a folder written through a private temp folder (0700) or by a library that
    writes 0600 files (safetensors) the modes the user's umask asks for."""
    mask = umask()
    for path in [Path(root), *Path(root).rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def write_atomic(path: str | os.PathLike[str], content: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path` all at once or not at all; returns `path`."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    _atomic(path, lambda raw: raw.write(data))
    return Path(path)


def write_jsonl_atomic(path: str | os.PathLike[str], records: Iterable[Record]) -> int:
    """Write records as JSON lines (gzipped for `.gz`) all at once or not at all (see
    `write_atomic`; an error from the iterable too leaves any old file). Returns the count."""
    gz = Path(path).name.lower().endswith(".gz")
    return _atomic(path, lambda raw: _write_lines(raw, records, gz=gz))


def _write_lines(raw: IO[bytes], records: Iterable[Record], *, gz: bool) -> int:
    """Write JSON lines to an open binary file; gzip with a fixed header when gz."""
    out: IO[bytes] = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if gz else raw
    count = 0
    for record in records:
        out.write(dump_line(record).encode("utf-8"))
        count += 1
    if gz:
        out.close()  # writes the gzip trailer; leaves `raw` open
    return count


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Stream the objects of a JSON-lines file (`.gz` too), tolerating a killed writer.

    A final line without its newline that does not parse (or a gzip stream that ends
    early) is skipped; a malformed line anywhere else is `BadInput` naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    return _read_jsonl(path)


def _read_jsonl(path: Path) -> Iterator[Record]:
    """The generator behind read_jsonl."""
    with open_text(path, newline="\n") as f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except EOFError:  # truncated gzip stream: a writer killed mid-member
                return
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue
            if not line.endswith("\n"):
                try:
                    yield parse_json_line(path, lineno, line)
                except BadInput:
                    return
                return
            yield parse_json_line(path, lineno, line)


# ---------------------------------------------------------------- counting


def count_records(path: str | os.PathLike[str]) -> int:
    """Rows in an input without parsing them: metadata for parquet and datasets,
    non-blank lines for JSON lines, CSV rows (quoted newlines handled) for CSV."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if fmt == "datasets":
        return len(load_dataset_dir(path))
    if fmt == "csv":
        csv.field_size_limit(2**31 - 1)
        with open_text(path, newline="") as f:
            return max(sum(1 for row in csv.reader(f) if row) - 1, 0)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        return sum(1 for line in f if line.strip())
