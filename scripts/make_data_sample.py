"""Build the project's shipped `data/` from the full data set beside the project.

Copies the licensed files the defaults use verbatim (XSTest, HH-RLHF harmless-base
test, AlpacaEval pairs, each with its LICENSE) and draws a small, fixed sample of
Safer-Instruct source texts for the quickstart:

- categories `hate` and `self-harm` only (`illegal.csv` has no source texts; the
  sexual-content category is not shipped);
- rows whose `rejected` text is non-empty, 80-1200 characters long (stripped), and not
  a repeat of an earlier row's text;
- 32 rows per category: the eligible rows with the smallest
  sha1(f"{SEED}:{category}:{row_index}"), written in row order. No random state, so every
  run writes byte-identical files.

Outputs, under `data/safer-instruct/`:
- `sources.csv`: id (`hate-0007`, the original 0-based row index), category, text
  (= the original `rejected`);
- `hate-sample.csv`, `self-harm-sample.csv`: id plus the original four columns
  (instruction, rejected, chosen, label) of the same rows, for audits and recovery tests.

Run from the project root:

    .venv/bin/python scripts/make_data_sample.py            # reads ../shared/data
    .venv/bin/python scripts/make_data_sample.py --src DIR --out data

It prints counts only, never the texts (they are real hateful and self-harm text).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = "safer-instruct-quickstart-v1"
CATEGORIES = ("hate", "self-harm")
PER_CATEGORY = 32
MIN_CHARS, MAX_CHARS = 80, 1200
ORIGINAL_COLUMNS = ("instruction", "rejected", "chosen", "label")
COPIES = {
    "xstest": (
        "xstest_prompts.csv",
        "completions_gpt4_gpt4labels.csv",
        "completions_llama2orig_gpt4labels.csv",
        "completions_mistralinstruct_gpt4labels.csv",
        "LICENSE",
    ),
    "hh-rlhf": ("harmless-base-test.jsonl.gz", "LICENSE"),
    "alpacaeval": ("pairs.jsonl.gz", "LICENSE"),
}


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(0-based row index, row) for every data row of a CSV file."""
    csv.field_size_limit(2**31 - 1)
    with path.open(newline="", encoding="utf-8") as f:
        yield from enumerate(csv.DictReader(f))


def eligible(rows: Iterator[tuple[int, dict[str, str]]]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows with a usable source text: non-empty, 80-1200 chars, first of its text."""
    seen: set[str] = set()
    for index, row in rows:
        text = (row.get("rejected") or "").strip()
        if not MIN_CHARS <= len(text) <= MAX_CHARS or text in seen:
            continue
        seen.add(text)
        yield index, row


def rank_key(category: str, index: int) -> str:
    """Fixed pseudo-random order of rows: sha1 of seed, category and row index."""
    return hashlib.sha1(f"{SEED}:{category}:{index}".encode()).hexdigest()


def sample(category: str, path: Path, k: int = PER_CATEGORY) -> list[tuple[str, dict[str, str]]]:
    """The k chosen rows of one category as (id, row), in original row order."""
    pool = list(eligible(read_rows(path)))
    if len(pool) < k:
        sys.exit(f"{path}: only {len(pool)} eligible rows, need {k}")
    chosen = sorted(sorted(pool, key=lambda p: rank_key(category, p[0]))[:k])
    return [(f"{category}-{index:04d}", row) for index, row in chosen]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """Write a CSV with a header, `\\n` line ends and minimal quoting."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def copy_licensed(src: Path, out: Path) -> None:
    """Copy the licensed files verbatim, each folder with its LICENSE."""
    for folder, names in COPIES.items():
        (out / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(src / folder / name, out / folder / name)
            print(f"copied {folder}/{name}", file=sys.stderr)


def write_samples(src: Path, out: Path) -> None:
    """Write sources.csv and the per-category sample files."""
    target = out / "safer-instruct"
    target.mkdir(parents=True, exist_ok=True)
    sources: list[list[str]] = []
    for category in CATEGORIES:
        picked = sample(category, src / "safer-instruct" / f"{category}.csv")
        sources += [[rid, category, row["rejected"]] for rid, row in picked]
        full = [[rid, *(row[c] for c in ORIGINAL_COLUMNS)] for rid, row in picked]
        write_csv(target / f"{category}-sample.csv", ["id", *ORIGINAL_COLUMNS], full)
        print(f"sampled {len(picked)} rows of {category}", file=sys.stderr)
    write_csv(target / "sources.csv", ["id", "category", "text"], sources)
    print(f"wrote {len(sources)} rows to {target / 'sources.csv'}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "data")
    args = parser.parse_args()
    copy_licensed(args.src, args.out)
    write_samples(args.src, args.out)


if __name__ == "__main__":
    main()
