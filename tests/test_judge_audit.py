"""The judge audited on a person's labels (`eval judge-audit`, the data report): labels
that agree with the judge give precision = recall = 1; a sample that over-represents
the judge's drops is weighted back to the run; stale labels are not counted; with no
labels, "not audited"."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from saferinstruct.io import read_jsonl
from saferinstruct.labels import append_label, judge_kept, read_labels
from saferinstruct.measures.audit import audit_on_labels, audit_run
from saferinstruct.rundir import RunDir
from test_report import build_run


def finished_run(tmp_path) -> tuple[RunDir, list[dict]]:
    build_run(tmp_path)
    run = RunDir(tmp_path)
    run.mark("complete", {"test": "a finished run"})
    judged = [r for r in read_jsonl(run.stage("judge")) if judge_kept(r) is not None]
    return run, judged


def audit_cli(run_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saferinstruct", "eval", "judge-audit",
                           str(run_dir)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)  # fmt: skip


def test_labels_that_agree_with_the_judge_give_precision_and_recall_one(tmp_path):
    run, judged = finished_run(tmp_path)
    assert {judge_kept(r) for r in judged} == {True, False}  # both strata present
    for record in judged:
        bad = judge_kept(record) is False
        append_label(run.labels, record, "bad" if bad else "good",
                     "unhelpful chosen" if bad else None)  # fmt: skip
    proc = audit_cli(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["audited"] and figures["labels"] == len(judged)
    for key in ("precision", "recall", "agreement"):
        assert figures[key]["value"] == 1.0 and figures[key]["ci95"] == [1.0, 1.0]
    assert figures["precision"]["n"] == sum(judge_kept(r) is False for r in judged)
    assert "precision 1.000 [1.000, 1.000]" in proc.stderr
    # the data report, written again, shows the audit
    report = json.loads(run.report_json.read_text())["judge_audit"]
    assert report["precision"]["value"] == 1.0
    assert "Judge audit on your labels" in run.report_html.read_text()
    assert "| precision | 1.000 | [1.000, 1.000] |" in run.report_md.read_text()


def test_no_labels_means_not_audited(tmp_path):
    run, _ = finished_run(tmp_path)
    proc = audit_cli(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["audited"] is False and figures["labels"] == 0
    assert "not audited" in proc.stderr
    assert "Not audited" in run.report_md.read_text()
    assert "Judge audit on your labels" not in run.report_html.read_text()


def test_a_label_on_a_pair_that_changed_is_stale(tmp_path):
    run, judged = finished_run(tmp_path)
    record = dict(judged[0], chosen="another answer than the one labelled")
    append_label(run.labels, record, "good")
    append_label(run.labels, judged[1], "bad", "harmful chosen")
    append_label(run.labels, judged[1], None)  # cleared: the last line wins
    assert read_labels(run.labels) == {judged[0]["id"]: read_labels(run.labels)[judged[0]["id"]]}
    audit = audit_run(run)
    assert audit["audited"] is False and audit["stale"] == 1


def test_a_sample_heavy_in_drops_is_weighted_back_to_the_run():
    """90 kept and 10 dropped in the run; 5 of each labelled: every dropped one bad, one
    kept one bad. Precision is the dropped stratum's own rate; recall and agreement weigh
    each stratum by its size: 10 / (10 + 90 x 0.2) and (10 + 90 x 0.8) / 100."""
    labelled = [(True, True)] * 5 + [(False, True)] + [(False, False)] * 4
    audit = audit_on_labels(labelled, {"kept": 90, "dropped": 10}, resamples=500)
    assert audit["precision"]["value"] == 1.0
    assert audit["recall"]["value"] == pytest.approx(10 / 28, abs=1e-4)
    assert audit["agreement"]["value"] == pytest.approx(0.82, abs=1e-4)
    lo, hi = audit["recall"]["ci95"]
    assert lo < audit["recall"]["value"] < hi
    # the unweighted share of the sample would have said 5/6 and 0.9
    assert audit["recall"]["value"] < 5 / 6 and audit["agreement"]["value"] < 0.9


def test_figures_need_labels_in_every_stratum():
    audit = audit_on_labels([(True, True), (True, False)], {"kept": 40, "dropped": 10})
    assert audit["precision"]["value"] == 0.5 and audit["precision"]["n"] == 2
    assert audit["recall"]["value"] is None and audit["agreement"]["value"] is None


def test_labels_are_read_by_datasets(tmp_path):
    from datasets import load_dataset

    run, judged = finished_run(tmp_path)
    append_label(run.labels, judged[0], "good")
    append_label(run.labels, judged[1], "bad", "wrong instruction")
    rows = load_dataset("json", data_files=str(run.labels), split="train")
    assert rows["label"] == ["good", "bad"] and rows["reason"] == [None, "wrong instruction"]
