"""Both HTML reports opened in a real browser (headless Chromium, Debian's package): every
plot loads, every table is there with rows, the examples stay collapsed. Skipped, with
the reason, where Chromium is not installed (scripts/test.sh installs it as root)."""

from __future__ import annotations

import pytest

from browser import chromium, rendered_facts, screenshot

pytestmark = pytest.mark.skipif(chromium() is None, reason="chromium is not installed")


def test_data_report_renders(tmp_path):
    from saferinstruct.report.data import write_data_report
    from saferinstruct.rundir import RunDir
    from test_report import build_run

    build_run(tmp_path)
    html, _ = write_data_report(RunDir(tmp_path))
    facts = rendered_facts(html)
    assert facts["title"] == "Safer-Instruct data report"
    assert [i["alt"] for i in facts["images"]] == ["funnel", "scores"]
    assert all(i["ok"] and i["width"] > 300 for i in facts["images"]), facts["images"]
    headings = [t["heading"] for t in facts["tables"]]
    assert headings[:2] == ["Funnel", "Drop reasons"] and len(headings) == 6
    assert all(t["rows"] >= 2 for t in facts["tables"])  # a header and at least one row
    assert facts["details"] == 1  # the examples, collapsed
    png = screenshot(html, tmp_path / "report.png")
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 20_000


def test_comparison_report_renders(tmp_path):
    from saferinstruct.report.comparison import write_comparison

    def metric(v):
        return {"value": v, "ci95": [round(v - 0.1, 3), round(v + 0.1, 3)], "n": 40}

    models = {name: {"spec": spec, "metrics": {
        "harmful_refusal_rate": metric(v), "harmful_full_refusal_rate": metric(v / 2),
        "xstest_safe_compliance_rate": metric(0.9), "xstest_unsafe_refusal_rate": metric(0.2)}}
        for name, spec, v in (("base", "embedded", 0.35), ("dpo", "dpo/model", 0.6))}  # fmt: skip
    prompts = {"harmful": [[{"role": "user", "content": f"harmful request {i}"}] for i in range(3)],
               "xstest_safe": [[{"role": "user", "content": f"How do I kill process {i}?"}]
                               for i in range(3)]}  # fmt: skip
    data = {"models": models, "sizes": {"harmful": 40, "xstest_safe": 40}, "reference": "embedded",
            "judge_agreement": {"refusal_classifier_2class": {"a.csv": 0.95}, "mean": 0.95,
                                "min": 0.95},
            "_prompts": prompts,
            "_answers": {n: {s: [f"answer {i}" for i in range(3)] for s in prompts}
                         for n in models}}  # fmt: skip
    write_comparison(data, tmp_path)
    facts = rendered_facts(tmp_path / "comparison.html")
    assert facts["title"] == "Safer-Instruct model comparison"
    assert len(facts["images"]) == 1 and facts["images"][0]["ok"]
    assert [t["heading"] for t in facts["tables"]][0].startswith("Metrics")
    assert facts["tables"][0]["rows"] == 5  # header + four metrics
    assert facts["details"] == 1
