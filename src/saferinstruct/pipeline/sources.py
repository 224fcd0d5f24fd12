"""Stage 00, sources: read the in-the-wild texts into records (streaming).

Each text becomes a record with a stable id (the id column, else file name + row
number) and a category. Empty texts are kept with a drop reason, not skipped, and
`limit` caps the count per category (a deterministic prefix of the file). A text longer
than `max_text_chars` is cut there, once, here (the record keeps `text_cut_from`, its
length before; the funnel counts them). Bad input is one line naming the file: an id
that appears twice, a limit below 1, a file with no texts.

Every record keeps `source_index`, its row in the file, so shards merged later
(`source.shard` "I/N": the records whose id hashes to shard I of N, after the limit) come
back in the order one unsharded run has.

    records = list(load_sources(SourceConfig(path="data/safer-instruct/sources.csv")))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from .. import drops
from ..config import SourceConfig, parse_shard
from ..errors import BadInput
from ..io import file_stem, read_records
from ..measures.splits import hash_fraction
from ..records import Record, add_verdict, new_record


def shard_of(record_id: str, n: int) -> int:
    """The shard (1..n) a source id belongs to: a stable hash, the same on every machine."""
    return min(int(hash_fraction(record_id) * n), n - 1) + 1


def load_sources(cfg: SourceConfig, limit: int | None = None) -> Iterator[Record]:
    cap = limit if limit is not None else cfg.limit
    if cap is not None and cap < 1:
        raise BadInput(f"--limit / source.limit: expected at least 1 text per category, got {cap}")
    columns = {"text": cfg.text_column}
    if cfg.category_column:
        columns["category"] = cfg.category_column
    shard = parse_shard(cfg.shard)
    seen: Counter[str] = Counter()
    ids: dict[str, int] = {}
    stem = file_stem(Path(cfg.path))
    for number, row in enumerate(read_records(cfg.path, id_column=cfg.id_column, columns=columns)):
        if cfg.id_column is None:  # no id column: file name + row number, always unique
            row["id"] = f"{stem}:{number}"
        if not _matches(row, cfg.where):
            continue
        # no category column: one category, whatever columns the file has
        named = row.get("category") if cfg.category_column else None
        category = str(named or cfg.default_category)
        if cap is not None and seen[category] >= cap:
            continue
        seen[category] += 1
        rid = str(row["id"])
        if rid in ids:
            raise BadInput(f"{cfg.path}: id {rid!r} appears twice (rows {ids[rid]} and {number}): "
                           f"ids in {cfg.id_column or 'the id column'} must be unique")  # fmt: skip
        ids[rid] = number
        text = row.get("text")
        text = "" if text is None else str(text)
        extra = {}
        if len(text) > cfg.max_text_chars:
            extra["text_cut_from"] = len(text)
            text = text[: cfg.max_text_chars]
        if shard is not None and shard_of(rid, shard[1]) != shard[0]:
            continue
        record = new_record(rid, text, category, source_index=number, **extra)
        if not text.strip():
            add_verdict(record, "sources", False, drops.EMPTY_TEXT)
        yield record
    if not ids:
        raise BadInput(f"{cfg.path}: no source texts (an empty file, only a header, or no row "
                       "matches source.where)")  # fmt: skip


def _matches(row: dict, where: dict[str, list[str]] | None) -> bool:
    if not where:
        return True
    for column, values in where.items():
        if column not in row:
            raise BadInput(f"source.where: column {column!r} not in the source file")
        if str(row[column]) not in {str(v) for v in values}:
            return False
    return True
