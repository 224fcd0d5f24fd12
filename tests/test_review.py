"""`safer-instruct review`: its JSON API (FastAPI's TestClient), and the real page in
headless Chromium (Debian's chromium and chromium-driver, driven by selenium) against a
real `safer-instruct review` process: the content warning first, filters, a record's way
through the stages, labels by key and click that survive a reload and a kill -9 of the
server. The run is synthetic and benign (built here, no model).

    REVIEW_SCREENSHOT=docs/review.png pytest tests/test_review.py   # refresh the README's
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from browser import FLAGS, chromium
from saferinstruct.errors import BadInput
from saferinstruct.io import write_jsonl_atomic
from saferinstruct.labels import FIELDS, REASONS, read_labels
from saferinstruct.records import add_verdict, is_kept, new_record, preference_row
from saferinstruct.rundir import SPLITS, STAGES, RunDir
from servers import free_port

TOPICS = ["the tides", "chess openings", "bread baking", "volcanoes", "house plants", "cricket",
          "bicycles", "owls", "glaciers", "tea", "lighthouses", "bees"]  # fmt: skip
CHROMEDRIVER = "/usr/bin/chromedriver"
HAS_BROWSER = (chromium() is not None and Path(CHROMEDRIVER).is_file()
               and importlib.util.find_spec("selenium") is not None)  # fmt: skip


# -- a small finished run, benign texts, every stage and several drop reasons ----------
def build_review_run(root: Path, n: int = 30) -> RunDir:
    """Stage files as the pipeline writes them (drops at induce, filter, respond, judge
    and assemble), the dataset splits, and run.json marked complete."""
    run = RunDir(root)
    records = [new_record(f"r{i:02d}", f"Source text {i}: a short note about "
                          f"{TOPICS[i % len(TOPICS)]}.", "hate" if i % 2 else "self-harm")
               for i in range(n)]  # fmt: skip
    write_jsonl_atomic(run.stage("sources"), records)
    for i, r in enumerate(records):
        _induce(r, i)
    write_jsonl_atomic(run.stage("induce"), records)
    for i, r in enumerate(records):
        if is_kept(r):
            _filter(r, i)
    write_jsonl_atomic(run.stage("filter"), records)
    for i, r in enumerate(records):
        if is_kept(r):
            _respond(r, i)
    write_jsonl_atomic(run.stage("respond"), records)
    for i, r in enumerate(records):
        if is_kept(r):
            _judge(r, i)
    write_jsonl_atomic(run.stage("judge"), records)
    rows: dict[str, list] = {s: [] for s in SPLITS}
    for i, r in enumerate(records):
        if is_kept(r):
            _assemble(r, i, rows)
    write_jsonl_atomic(run.stage("assemble"), records)
    for split, split_rows in rows.items():
        write_jsonl_atomic(run.split(split), split_rows)
    run.finish()
    return run


def _induce(r: dict, i: int) -> None:
    if i % 12 == 5:
        r["instruction"], r["candidates"] = None, []
        add_verdict(r, "induce", False, "no_valid_candidate (too_short: 2)", model="reverse")
        return
    r["instruction"] = f"Tell me about {TOPICS[i % len(TOPICS)]}, item {i}."
    r["candidates"] = [r["instruction"], f"What is {TOPICS[i % len(TOPICS)]}?"]
    r["candidate_problems"] = ["ok", "ok"]
    add_verdict(r, "induce", True, model="reverse", mode="reverse")


def _filter(r: dict, i: int) -> None:
    score = 0.2 if i % 6 == 2 else 0.9
    verdict = "no" if score < 0.5 else "yes"
    r["filter"] = {"outcome": verdict, "score": score, "reason": f"instruction {i} judged",
                   "mode": "json", "model": "expert"}  # fmt: skip
    add_verdict(r, "filter", score >= 0.5, f"{verdict} ({score:.2f}): instruction {i} judged",
                score=score, model="expert")  # fmt: skip


def _respond(r: dict, i: int) -> None:
    info = {"model": "expert", "attempts": 2 if i % 4 == 0 else 1}
    if i == 28:
        add_verdict(r, "respond", False, "empty_response", raw="", **info)
        return
    r["chosen"] = f"A careful, friendly answer about {TOPICS[i % len(TOPICS)]} ({i})."
    add_verdict(r, "respond", True, candidate=info["attempts"] - 1, finish_reason="stop",
                labels=["full_compliance", "refusal"][: info["attempts"]], **info)  # fmt: skip


def _judge(r: dict, i: int) -> None:
    if i % 7 == 6:
        r["judge"] = {"kept": False, "reason": "near_copy", "mode": "pair_check"}
        add_verdict(r, "judge", False, "near_copy", model="pair_check", pair_cosine=0.97)
        return
    score = 0.3 if i % 5 == 3 else 0.8
    outcome = "yes" if score >= 0.5 else "below_threshold"
    r["judge"] = {"kept": score >= 0.5, "score": score, "outcome": outcome, "model": "expert",
                  "reason": f"pair {i} looked at", "mode": "json"}  # fmt: skip
    add_verdict(r, "judge", score >= 0.5, f"{outcome} ({score:.2f}): pair {i} looked at",
                score=score, model="expert")  # fmt: skip


def _assemble(r: dict, i: int, rows: dict[str, list]) -> None:
    if i == 25:
        add_verdict(r, "assemble", False, "duplicate instruction of r01")
        return
    r["split"] = "test" if i % 5 == 0 else "train"
    add_verdict(r, "assemble", True, split=r["split"])
    rows[r["split"]].append(preference_row(r["instruction"], r["chosen"], r["text"],
                                           id=r["id"], category=r["category"]))  # fmt: skip


@pytest.fixture
def run(tmp_path) -> RunDir:
    return build_review_run(tmp_path / "runs" / "example")


def final_records(run: RunDir) -> dict[str, dict]:
    from saferinstruct.io import read_jsonl

    return {r["id"]: r for r in read_jsonl(run.stage("assemble"))}


# -- the JSON API ----------------------------------------------------------------------
@pytest.fixture
def client(run):
    from fastapi.testclient import TestClient

    from saferinstruct.review import create_app, load_run

    return TestClient(create_app(load_run(run.root)))


def test_api_lists_filters_and_searches(client, run):
    meta = client.get("/api/meta").json()
    assert meta["stages"] == list(STAGES) and meta["categories"] == ["hate", "self-harm"]
    assert meta["reasons"] == list(REASONS) and meta["counts"]["records"] == 30
    every = client.get("/api/records").json()
    assert every["stage"] == "assemble" and len(every["rows"]) == 30
    reasons = every["facets"]["reason"]
    assert {"no_valid_candidate", "no", "empty_response", "near_copy", "below_threshold",
            "duplicate instruction"} == set(reasons)  # fmt: skip
    below = client.get("/api/records", params={"reason": "below_threshold"}).json()["rows"]
    assert below and all(r["reason"] == "below_threshold" and r["pair"] for r in below)
    assert len(below) == reasons["below_threshold"]
    # by stage: at the filter, nothing the judge dropped is dropped yet
    at_filter = client.get("/api/records", params={"stage": "filter", "status": "dropped"})
    assert {r["reason"] for r in at_filter.json()["rows"]} == {"no_valid_candidate", "no"}
    hate = client.get("/api/records", params={"category": "hate", "status": "kept"}).json()
    assert hate["rows"] and all(r["category"] == "hate" and r["status"] == "kept"
                                for r in hate["rows"])  # fmt: skip
    for query, ids in (("R07", ["r07"]), ("friendly answer about owls", ["r07", "r19"]),
                       ("note about bees", ["r11", "r23"]), ("item 4.", ["r04"])):  # fmt: skip
        found = client.get("/api/records", params={"q": query}).json()["rows"]
        assert [r["id"] for r in found] == ids, query
    assert client.get("/api/records", params={"stage": "nope"}).status_code == 400


def test_api_record_path_through_every_stage(client):
    view = client.get("/api/record", params={"id": "r04"}).json()
    assert [s["stage"] for s in view["steps"]] == list(STAGES)
    steps = {s["stage"]: s for s in view["steps"]}
    assert steps["sources"]["added"]["text"].startswith("Source text 4")
    assert steps["induce"]["added"]["instruction"] == "Tell me about house plants, item 4."
    assert len(steps["induce"]["added"]["candidates"]) == 2
    assert steps["filter"]["verdict"]["score"] == 0.9 and steps["filter"]["verdict"]["kept"]
    assert steps["respond"]["verdict"]["attempts"] == 2 and "chosen" in steps["respond"]["added"]
    assert steps["judge"]["verdict"]["outcome"] == "yes"
    assert steps["assemble"]["added"] == {"split": "train"}
    assert view["final"]["in_dataset"] and view["final"]["split"] == "train"
    assert view["final"]["rejected"].startswith("Source text 4")
    judged_out = client.get("/api/record", params={"id": "r03"}).json()
    assert judged_out["final"]["in_dataset"] is False and judged_out["judge_kept"] is False
    assert judged_out["steps"][-1]["status"] == "dropped"
    early = client.get("/api/record", params={"id": "r05"}).json()
    assert early["final"] is None and early["dropped_at"] == "induce"
    assert client.get("/api/record", params={"id": "zz"}).status_code == 404


def test_api_labels_are_saved_then_read_back(client, run, tmp_path):
    good = client.post("/api/labels", json={"id": "r04", "label": "good"})
    assert good.status_code == 200 and good.json()["label"] == "good"
    bad = client.post("/api/labels", json={"id": "r03", "label": "bad", "reason": REASONS[0]})
    assert bad.status_code == 200 and bad.json()["judge_kept"] is False
    assert client.post("/api/labels", json={"id": "r04", "label": "meh"}).status_code == 400
    assert client.post("/api/labels", json={"id": "r04", "label": "bad",
                                            "reason": "boring"}).status_code == 400  # fmt: skip
    assert client.post("/api/labels", json={"id": "r05", "label": "good"}).status_code == 400
    assert client.post("/api/labels", json={"id": "zz", "label": "good"}).status_code == 404
    current = client.get("/api/labels").json()
    assert {k: (v["label"], v["reason"], v["stale"]) for k, v in current.items()} == {
        "r04": ("good", None, False), "r03": ("bad", REASONS[0], False)}  # fmt: skip
    assert set(read_labels(run.labels)) == {"r03", "r04"}
    from datasets import load_dataset

    rows = load_dataset("json", data_files=str(run.labels), cache_dir=str(tmp_path / "hf"),
                        split="train")  # fmt: skip
    assert rows.column_names == list(FIELDS) and rows["label"] == ["good", "bad"]


def test_sample_is_seeded_and_takes_turns(client, run):
    first = [r["id"] for r in client.get("/api/sample", params={"seed": 3}).json()["rows"]]
    again = [r["id"] for r in client.get("/api/sample", params={"seed": 3}).json()["rows"]]
    other = [r["id"] for r in client.get("/api/sample", params={"seed": 4}).json()["rows"]]
    assert first == again and sorted(first) == sorted(other) and first != other
    judged = {i for i, r in final_records(run).items() if r.get("chosen")}
    assert set(first) == judged
    rows = client.get("/api/sample", params={"seed": 3}).json()["rows"]
    n_dropped = sum(not r["judge_kept"] for r in rows)
    assert 0 < n_dropped < len(rows)
    assert [r["judge_kept"] for r in rows[: 2 * n_dropped]] == [True, False] * n_dropped


def test_missing_or_unfinished_run_is_bad_input(tmp_path, run):
    from saferinstruct.review import load_run

    with pytest.raises(BadInput, match="no such run directory"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="not a finished run"):
        load_run(tmp_path / "empty")
    run.mark("running")
    proc = subprocess.run([sys.executable, "-m", "saferinstruct", "review", str(run.root)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and str(run.root) in errors[0] and "did not finish" in errors[0]


# -- the real page, in headless Chromium -----------------------------------------------
def start_server(run: RunDir, log: Path) -> tuple[subprocess.Popen, str]:
    """`safer-instruct review runs/example --port P`, run from the folder above `runs/`."""
    port = free_port()
    where = run.root.parent.parent
    cmd = [sys.executable, "-m", "saferinstruct", "review", str(run.root.relative_to(where)),
           "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"), cwd=where)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            with urllib.request.urlopen(base + "/api/meta", timeout=2):
                return proc, base
        except OSError:
            assert time.monotonic() < deadline, "review did not start in 60 s"
            time.sleep(0.2)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium()
    for flag in [*FLAGS, "--window-size=1280,860", "--disable-dev-shm-usage"]:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(dir=tmp_path)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = 10):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d))


def js(driver, expression: str):
    return driver.execute_script("return " + expression)


def open_page(driver, base: str) -> None:
    """Load the page; it opens on the warning, with no record text in the document."""
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    assert driver.find_element(By.ID, "warning").is_displayed()
    assert "Content warning" in driver.find_element(By.ID, "warning").text


def keys(driver, *pressed: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for key in pressed:
        ActionChains(driver).send_keys(key).perform()


def row_ids(driver) -> list[str]:
    return js(driver, "[...document.querySelectorAll('#list tr')].map(t => t.dataset.id)")


def screenshot(driver, rid: str) -> None:
    """With REVIEW_SCREENSHOT=PATH, a picture of the page on record `rid`, texts shown."""
    from selenium.webdriver.common.by import By

    if not os.environ.get("REVIEW_SCREENSHOT"):
        return
    driver.find_element(By.CSS_SELECTOR, f'#list tr[data-id="{rid}"]').click()
    wait(driver, lambda d: rid in d.find_element(By.CSS_SELECTOR, "#detail h2").text)
    driver.save_screenshot(os.environ["REVIEW_SCREENSHOT"])


def settled(driver) -> bool:
    return js(driver, "window.reviewState.inflight") == 0


def shows_current(driver) -> bool:
    """The detail shows the record the list is on (its buttons are the current ones)."""
    return js(driver, "(s => s.record && s.record.id === s.rows[s.index].id)"
                      "(window.reviewState)")


@pytest.mark.skipif(not HAS_BROWSER, reason="chromium, chromium-driver or selenium is not "
                    "installed (scripts/test.sh installs them as root)")  # fmt: skip
def test_page_in_a_real_browser(run, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    records = final_records(run)
    log = tmp_path / "server.log"
    proc, base = start_server(run, log)
    try:
        open_page(browser, base)
        # the warning first: no text in the document until "I understand"
        assert records["r04"]["text"] not in browser.page_source
        assert "[hidden]" in browser.find_element(By.ID, "detail").text
        browser.find_element(By.ID, "ack").click()
        wait(browser, lambda d: records["r00"]["text"] in d.find_element(By.ID, "detail").text)

        # filter by a drop reason: only those records
        Select(browser.find_element(By.ID, "reason")).select_by_value("below_threshold")
        expected = sorted(i for i, r in records.items() if r["drop_reason"]
                          and r["drop_reason"].startswith("judge: below_threshold"))  # fmt: skip
        wait(browser, lambda d: sorted(row_ids(d)) == expected)
        for tr in browser.find_elements(By.CSS_SELECTOR, "#list tr"):
            assert "dropped: below_threshold" in tr.text

        # one record's way through the stages
        Select(browser.find_element(By.ID, "reason")).select_by_value("")
        wait(browser, lambda d: len(row_ids(d)) == len(records))
        browser.find_element(By.CSS_SELECTOR, '#list tr[data-id="r04"]').click()
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#steps .step")
             and "r04" in d.find_element(By.CSS_SELECTOR, "#detail h2").text)  # fmt: skip
        steps = browser.find_elements(By.CSS_SELECTOR, "#steps .step")
        assert [s.get_attribute("data-stage") for s in steps] == list(STAGES)
        by_stage = {s.get_attribute("data-stage"): s.text for s in steps}
        assert records["r04"]["text"] in by_stage["sources"]
        assert records["r04"]["instruction"] in by_stage["induce"]
        assert "0.900" in by_stage["filter"] and "attempts" in by_stage["respond"]
        assert records["r04"]["chosen"] in by_stage["respond"] and "yes" in by_stage["judge"]
        assert "in the dataset (train)" in browser.find_element(By.ID, "pair").text

        # label 5 pairs in sample mode, by keys and a click
        browser.find_element(By.ID, "mode-sample").click()
        wait(browser, lambda d: d.find_element(By.ID, "mode-sample").get_attribute("disabled"))
        wait(browser, lambda d: d.find_elements(By.ID, "good"))
        keys(browser, "g", "b", "1", "3")
        wait(browser, lambda d: js(d, "window.reviewState.saved.length") == 3 and settled(d))
        wait(browser, shows_current)
        browser.find_element(By.ID, "good").click()
        wait(browser, lambda d: js(d, "window.reviewState.saved.length") == 4 and settled(d))
        keys(browser, "2")
        wait(browser, lambda d: js(d, "window.reviewState.saved.length") == 5 and settled(d))
        saved = js(browser, "window.reviewState.saved")
        assert [(s["label"], s["reason"]) for s in saved] == [
            ("good", None), ("bad", REASONS[0]), ("bad", REASONS[2]), ("good", None),
            ("bad", REASONS[1])]  # fmt: skip
        assert len({s["id"] for s in saved}) == 5
        on_disk = read_labels(run.labels)
        assert {i: (v["label"], v["reason"]) for i, v in on_disk.items()} == {
            s["id"]: (s["label"], s["reason"]) for s in saved}

        # a reload shows the 5 labels
        browser.refresh()
        open_page(browser, base)
        browser.find_element(By.ID, "ack").click()
        labelled = js(browser, "[...document.querySelectorAll('#list tr')]"
                               ".filter(t => t.dataset.label).map(t => t.dataset.id)")
        assert sorted(labelled) == sorted(s["id"] for s in saved)
        bad = next(s for s in saved if s["reason"] == REASONS[0])
        row = browser.find_element(By.CSS_SELECTOR, f'#list tr[data-id="{bad["id"]}"]')
        assert f"bad: {REASONS[0]}" in row.text
        assert "labels: 2 good, 3 bad" in browser.find_element(By.ID, "label-count").text
        screenshot(browser, bad["id"])

        # label more, kill -9 the server mid-labelling: nothing the page called saved is lost
        browser.find_element(By.ID, "mode-sample").click()
        wait(browser, lambda d: d.find_element(By.ID, "mode-sample").get_attribute("disabled"))
        wait(browser, lambda d: d.find_elements(By.ID, "good"))
        before = js(browser, "window.reviewState.saved.length")
        keys(browser, "g", "4")
        wait(browser, lambda d: js(d, "window.reviewState.saved.length") == before + 2)
        keys(browser, "g", "5", "g")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        wait(browser, lambda d: settled(d))
        keys(browser, "g")  # after the kill: the page must say it is not saved
        wait(browser, lambda d: settled(d) and "NOT saved" in d.find_element(By.ID, "status").text)
        saved = js(browser, "window.reviewState.saved")
        failed = js(browser, "Object.keys(window.reviewState.failed)")
        assert len(saved) >= 2 and failed and not set(failed) & {s["id"] for s in saved}
        lines = [json.loads(x) for x in run.labels.read_text().splitlines()]
        on_disk = {(x["id"], x["label"], x["reason"]) for x in lines}
        assert all((s["id"], s["label"], s["reason"]) in on_disk for s in saved)
        assert all(list(x) == list(FIELDS) for x in lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    # the server's log names no text of any record
    logged = log.read_text()
    assert "review:" in logged
    for r in records.values():
        for key in ("text", "instruction", "chosen"):
            assert not r.get(key) or r[key] not in logged

    from datasets import load_dataset

    labels = load_dataset("json", data_files=str(run.labels), cache_dir=str(tmp_path / "hf"),
                          split="train")  # fmt: skip
    assert labels.column_names == list(FIELDS) and len(labels) == len(lines)


def test_docs_screenshot_exists():
    """The README's picture of the page (REVIEW_SCREENSHOT=docs/review.png refreshes it)."""
    from conftest import ROOT

    png = ROOT / "docs" / "review.png"
    assert png.read_bytes().startswith(b"\x89PNG") and "docs/review.png" in (
        ROOT / "README.md").read_text()  # fmt: skip
