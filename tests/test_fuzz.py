"""Generated input (hypothesis, in process): awkward but valid files load exactly the
records a reference parser reads (embedded newlines and quotes, a BOM, right-to-left
text, zero-width characters, emoji, long lines), and any config either loads or is
one-line BadInput, never another exception. 100 + 100 + 100 + 60 generated cases."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saferinstruct.config import RunConfig, field_docs, load_config
from saferinstruct.errors import BadInput
from saferinstruct.io import read_jsonl, read_records

AWKWARD = ["مرحبا بالعالم", "zero\u200bwidth\u200d", "emoji 🙂🔥", 'say "hi", then\nleave',
           "tab\tand\r\nCRLF", "x" * 5000, "\u202eRTL override", ",,,", '"', "\\"]  # fmt: skip
TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            max_size=120),
    st.sampled_from(AWKWARD),
)  # fmt: skip
ROWS = st.lists(st.tuples(TEXT, st.sampled_from(["hate", "self-harm", "other"])),
                min_size=1, max_size=12)  # fmt: skip
FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def temp_file(suffix: str, data: bytes) -> Path:
    path = Path(tempfile.mkdtemp()) / f"input{suffix}"
    path.write_bytes(data)
    return path


@FUZZ
@given(rows=ROWS, bom=st.booleans())
def test_csv_loads_what_the_reference_parser_reads(rows, bom):
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(["id", "text", "category"])
    writer.writerows([(str(i), text, cat) for i, (text, cat) in enumerate(rows)])
    data = ("\ufeff" if bom else "") + buf.getvalue()
    path = temp_file(".csv", data.encode("utf-8"))
    reference = list(csv.DictReader(io.StringIO(data.removeprefix("\ufeff"), newline="")))
    ours = list(read_records(path, columns={"text": "text"}))
    assert [(r["id"], r["text"], r["category"]) for r in ours] == [
        (r["id"], r["text"], r["category"]) for r in reference
    ]


@FUZZ
@given(rows=ROWS, bom=st.booleans())
def test_jsonl_loads_what_json_reads(rows, bom):
    lines = [json.dumps({"id": f"r{i}", "text": t, "category": c}, ensure_ascii=bool(i % 2))
             for i, (t, c) in enumerate(rows)]  # fmt: skip
    data = ("\ufeff" if bom else "") + "\n".join(lines) + "\n"
    path = temp_file(".jsonl", data.encode("utf-8"))
    assert list(read_jsonl(path)) == [json.loads(line) for line in lines]
    assert [r["text"] for r in read_records(path)] == [t for t, _ in rows]


KEYS = [key for key, _, _ in field_docs(RunConfig)] + ["bogus", "induce.bogus", "source"]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(-2, 2),
                   TEXT, st.lists(st.integers(), max_size=3),
                   st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))  # fmt: skip


def nest(flat: dict[str, object]) -> dict[str, object]:
    doc: dict[str, object] = {}
    for key, value in flat.items():
        node = doc
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[parts[-1]] = value
    return doc


@FUZZ
@given(flat=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4))
def test_any_config_loads_or_is_bad_input(flat):
    path = temp_file(".yaml", yaml.safe_dump(nest(flat), allow_unicode=True).encode())
    try:
        cfg = load_config(path)
    except BadInput as e:
        assert "\n" not in str(e) and str(e)
    else:
        assert isinstance(cfg, RunConfig)


@settings(max_examples=60, deadline=None)
@given(raw=st.binary(max_size=300))
def test_any_bytes_as_a_config_file_are_bad_input_or_load(raw):
    path = temp_file(".yaml", raw)
    try:
        load_config(path)
    except BadInput as e:
        assert "\n" not in str(e)
