"""Stage 1, sources: read the in-the-wild texts into records (streaming).

Each text becomes a record with a stable id (the id column, else file name + row
number) and a category. Empty texts are kept with a drop reason, not skipped, and
`limit` caps the count per category (a deterministic prefix of the file).

    records = list(load_sources(SourceConfig(path="data/safer-instruct/sources.csv")))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from ..config import SourceConfig
from ..io import read_records
from ..records import Record, add_verdict, new_record


def load_sources(cfg: SourceConfig, limit: int | None = None) -> Iterator[Record]:
    cap = limit if limit is not None else cfg.limit
    columns = {"text": cfg.text_column}
    if cfg.category_column:
        columns["category"] = cfg.category_column
    seen: Counter[str] = Counter()
    for row in read_records(cfg.path, id_column=cfg.id_column, columns=columns):
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
