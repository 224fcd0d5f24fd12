"""Stage 00, sources: read the in-the-wild texts into records (streaming).

Each text becomes a record with a stable id (the id column, else file name + row
number) and a category. Empty texts are kept with a drop reason, not skipped, and
`limit` caps the count per category (a deterministic prefix of the file).

    records = list(load_sources(SourceConfig(path="data/safer-instruct/sources.csv")))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..config import SourceConfig
from ..errors import BadInput
from ..io import file_stem, read_records
from ..records import Record, add_verdict, new_record


def load_sources(cfg: SourceConfig, limit: int | None = None) -> Iterator[Record]:
    cap = limit if limit is not None else cfg.limit
    columns = {"text": cfg.text_column}
    if cfg.category_column:
        columns["category"] = cfg.category_column
    seen: Counter[str] = Counter()
    stem = file_stem(Path(cfg.path))
    for number, row in enumerate(read_records(cfg.path, id_column=cfg.id_column, columns=columns)):
        if cfg.id_column is None:  # no id column: file name + row number, always unique
            row["id"] = f"{stem}:{number}"
        if not _matches(row, cfg.where):
            continue
        category = str(row.get("category") or cfg.default_category)
        if cap is not None and seen[category] >= cap:
            continue
        seen[category] += 1
        text = row.get("text")
        text = "" if text is None else str(text)
        record = new_record(str(row["id"]), text, category)
        if not text.strip():
            add_verdict(record, "sources", False, "empty text")
        yield record


def _matches(row: dict, where: dict[str, list[str]] | None) -> bool:
    if not where:
        return True
    for column, values in where.items():
        if column not in row:
            raise BadInput(f"source.where: column {column!r} not in the source file")
        if str(row[column]) not in {str(v) for v in values}:
            return False
    return True
