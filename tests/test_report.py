"""The data report: HTML + Markdown + report.json from a constructed run directory
(stage files with filter/judge scores, then the real `assemble`); long texts are cut,
examples sit behind a content warning, HTML is self-contained and escaped."""

from __future__ import annotations

import json

import pytest

from saferinstruct.config import AssembleConfig, RunConfig
from saferinstruct.errors import BadInput
from saferinstruct.io import write_jsonl_atomic
from saferinstruct.measures.text import distinct_n
from saferinstruct.recipes.data import assemble_records
from saferinstruct.records import add_verdict, new_record
from saferinstruct.render import clip
from saferinstruct.report.data import diversity_distance
from saferinstruct.report.data import write_data_report as write_report
from saferinstruct.rundir import RunDir

LONG = " ".join(f"word{i}" for i in range(600))  # ~4.7k characters, every prefix unique
TOPICS = ["the tides", "chess openings", "bread baking", "volcanoes", "house plants", "cricket"]


def stage_path(run_dir, name):
    return RunDir(run_dir).stage(name)


def write_data_report(run_dir):
    return write_report(RunDir(run_dir))


def build_run(run_dir, with_scores: bool = True) -> list[dict]:
    records = []
    for i, topic in enumerate(TOPICS):
        cat = "hate" if i % 2 else "self-harm"
        text = LONG if i == 0 else f"Source text {i} about {topic}, written in the wild."
        records.append(new_record(f"r{i}", text, cat))
    write_jsonl_atomic(stage_path(run_dir, "sources"), records)
    for i, r in enumerate(records):
        r["instruction"] = f"Tell me about {TOPICS[i]}, don't stop <script>x</script>"
        add_verdict(r, "induce", True)
    write_jsonl_atomic(stage_path(run_dir, "induce"), records)
    _verdicts(records, "filter", [0.9, 0.8, 0.2, 0.7, 0.95, 0.6], with_scores)
    write_jsonl_atomic(stage_path(run_dir, "filter"), records)
    for r in records:
        if r["status"] == "kept":
            r["chosen"] = "I would rather not; here is a safer way to think about it."
            add_verdict(r, "respond", True)
    write_jsonl_atomic(stage_path(run_dir, "respond"), records)
    _verdicts(records, "judge", [0.7, 0.6, None, 0.3, 0.9, 0.8], with_scores)
    write_jsonl_atomic(stage_path(run_dir, "judge"), records)
    assemble_records(lambda: records, RunConfig(assemble=AssembleConfig(test_fraction=0.3)),
                     run_dir)  # fmt: skip
    return records


def _verdicts(records: list[dict], stage: str, scores: list, with_scores: bool) -> None:
    for r, s in zip(records, scores, strict=True):
        if r["status"] != "kept" or s is None:
            continue
        info = {"score": s} if with_scores else {}
        add_verdict(r, stage, s >= 0.5, "" if s >= 0.5 else "below threshold", **info)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    build_run(run_dir)
    html_path, md_path = write_data_report(run_dir)
    return run_dir, html_path.read_text(), md_path.read_text()


def test_report_files_and_funnel_image(report):
    run_dir, html, md = report
    png = (run_dir / "report_files" / "funnel.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert (run_dir / "report_files" / "scores.png").exists()
    assert html.count("data:image/png;base64,") == 2
    assert "](report_files/funnel.png)" in md and "](report_files/scores.png)" in md
    assert "http://" not in html and "https://" not in html and "<link" not in html


def test_content_warning_and_examples_hidden(report):
    _, html, md = report
    for doc in (html, md):
        assert "Content warning" in doc
        # the warning names the run's own categories, not a fixed list
        assert "of these kinds: hate, self-harm." in doc
        assert doc.index("<details>") < doc.index("instruction:") < doc.index("</details>")
    assert "<script>" not in html and "&lt;script&gt;" in html
    # Markdown: tags neutralised, but no HTML entities for quotes and apostrophes
    assert "<script>" not in md and "don't" in md and "&#x27;" not in md


def test_long_source_text_is_truncated(report):
    run_dir, html, md = report
    json_text = (run_dir / "report.json").read_text()
    for doc in (html, md, json_text):
        assert LONG not in doc and LONG[:170] not in doc
    assert clip(LONG)[:-1] in html


def test_report_numbers(report):
    run_dir, _, _ = report
    data = json.loads((run_dir / "report.json").read_text())
    stages = [s["stage"] for s in data["funnel"]["stages"]]
    assert stages == ["sources", "induce", "filter", "respond", "judge", "assemble"]
    assert data["counts"]["sources"] == len(TOPICS)
    assert data["counts"]["final"] == data["counts"]["train"] + data["counts"]["test"] == 4
    assert data["scores"]["filter"]["n"] == 6 and data["scores"]["judge"]["n"] == 5
    assert sum(data["scores"]["filter"]["dropped"]["counts"]) == 1
    templates = data["templates"]
    assert templates["all"]["top_response_share"] == 1.0
    assert all(0.0 <= d["distinct_2"] <= 1.0 for d in data["diversity"].values())
    assert data["duplicates"]["all"]["in"] == 4
    assert {r["reason"] for r in data["drop_reasons"]["judge"]} == {"below threshold"}


def test_report_without_scores(tmp_path):
    build_run(tmp_path, with_scores=False)
    html_path, md_path = write_data_report(tmp_path)
    assert not (tmp_path / "report_files" / "scores.png").exists()
    assert json.loads((tmp_path / "report.json").read_text())["scores"] == {}
    assert "Score distributions" not in md_path.read_text()
    assert html_path.read_text().count("data:image/png;base64,") == 1


def test_report_needs_stage_files(tmp_path):
    with pytest.raises(BadInput, match="no stage files"):
        write_data_report(tmp_path)


def test_small_measures():
    assert clip("a  b\n c") == "a b c"
    assert len(clip("x" * 500)) == 160 and clip("x" * 500).endswith("…")
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["one"], 2) == 0.0
    assert diversity_distance(["only one"]) is None
    same = diversity_distance(["The same sentence."] * 3)
    assert same == pytest.approx(0.0, abs=1e-5)
    apart = diversity_distance(["Bake bread at home.", "Quantum field theory lecture."])
    assert apart > 0.5


def test_a_big_dataset_measures_text_on_a_stable_sample(tmp_path, monkeypatch):
    """Above MAX_REPORT_PAIRS the text measures use a sample by a hash of the id (the
    report streams the stage file and dataset); the counts stay those of every pair."""
    from saferinstruct.report import data as module

    build_run(tmp_path)
    monkeypatch.setattr(module, "MAX_REPORT_PAIRS", 1)
    write_data_report(tmp_path)
    first = json.loads((tmp_path / "report.json").read_text())
    write_data_report(tmp_path)
    assert json.loads((tmp_path / "report.json").read_text()) == first
    counts = first["counts"]
    assert counts["train"] + counts["test"] == 4 and counts["text_measures_over"] < 4
    sentence = f"stable sample of {counts['text_measures_over']} of the 4 pairs"
    assert sentence in (tmp_path / "report.md").read_text()
    assert sentence in (tmp_path / "report.html").read_text()
