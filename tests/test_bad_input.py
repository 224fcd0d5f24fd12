"""Bad input, as a user makes it: one line naming the file, line or field, exit 2,
before any model call, nothing half-written. And awkward but valid input loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

QUICK = ROOT / "configs" / "quickstart.yaml"


def run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saferinstruct", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def one_line_exit_2(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-2000:]
    assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


CSV_HEAD = "id,text,category\n"
CASES = {
    # a stray quote would swallow every later row into one text
    "stray quote": (CSV_HEAD + '1,fine,hate\n2,"she said hi,hate\n3,next,hate\n4,last,hate\n',
                    [], "line 3"),
    "duplicate ids": (CSV_HEAD + "1,one,hate\n2,two,hate\n1,three,hate\n", [], "'1' appears twice"),
    "header only": (CSV_HEAD, [], "no source texts"),
    "limit 0": (CSV_HEAD + "1,one,hate\n", ["--limit", "0"], "at least 1"),
    "limit -1": (CSV_HEAD + "1,one,hate\n", ["--limit", "-1"], "at least 1"),
    "no candidates": (CSV_HEAD + "1,one,hate\n", ["--set", "induce.num_candidates=0"],
                      "induce.num_candidates"),
    "test fraction": (CSV_HEAD + "1,one,hate\n", ["--set", "assemble.test_fraction=1.5"],
                      "assemble.test_fraction: expected a number in [0.0, 1.0)"),
    "respond candidates": (CSV_HEAD + "1,one,hate\n", ["--set", "respond.candidates=0"],
                           "respond.candidates"),
    "broken --set": (CSV_HEAD + "1,one,hate\n", ["--set", "source.limit=[1"], "not valid YAML"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_sources_and_settings(tmp_path, case):
    content, extra, needle = CASES[case]
    src = tmp_path / "texts.csv"
    src.write_text(content)
    out = tmp_path / "run"
    proc = run("run", "--config", str(QUICK), "--out", str(out), "--set",
               f"source.path={src}", "--set", f"cache={tmp_path / 'c.sqlite'}", *extra)  # fmt: skip
    one_line_exit_2(proc, needle)
    assert not (out / "stages").exists() and not (tmp_path / "c.sqlite").exists()


def test_an_empty_jsonl_file(tmp_path):
    src = tmp_path / "texts.jsonl"
    src.write_text("")
    proc = run("run", "--config", str(QUICK), "--out", str(tmp_path / "o"), "--set",
               f"source.path={src}")  # fmt: skip
    one_line_exit_2(proc, "no source texts")


def test_a_config_that_is_not_utf8_and_an_out_that_is_a_file(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("source:\n  text_column: caf\xe9\n".encode("latin-1"))
    one_line_exit_2(run("run", "--config", str(bad), "--out", str(tmp_path / "o")), "UTF-8")
    taken = tmp_path / "a-file"
    taken.write_text("x")
    one_line_exit_2(run("run", "--config", str(QUICK), "--out", str(taken), "--limit", "1"),
                    "is a file")  # fmt: skip
    one_line_exit_2(run("sft", "--data", "hh", "--out", str(taken)), "is a file")


def test_bad_training_settings_stop_before_any_model_loads(tmp_path):
    out = tmp_path / "dpo"
    for args, needle in ((["--loss-type", "bogus"], "loss_type"),
                         (["--label-smoothing", "0.7"], "label_smoothing"),
                         (["--held-out-share", "0.9"], "held_out_share"),
                         (["--loss-type", "exo_pair"], "label_smoothing > 0")):  # fmt: skip
        one_line_exit_2(run("dpo", "--data", "hh", "--out", str(out), *args), needle)
        assert not out.exists()


def test_prompt_dir_resolves_against_the_config_file(tmp_path):
    """A relative `domain.prompt_dir` is the folder beside the config, wherever the
    command runs; a missing one is named with its full path."""
    (tmp_path / "my-prompts").mkdir()
    (tmp_path / "my-prompts" / "filter_gardening.txt").write_text("plants")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("domain:\n  prompt_dir: my-prompts\n")
    from saferinstruct.config import load_config

    loaded = load_config(cfg)
    assert loaded.domain.prompt_dir == str((tmp_path / "my-prompts").resolve())
    cfg.write_text("domain:\n  prompt_dir: missing-prompts\n")
    proc = run("run", "--config", str(cfg), "--out", str(tmp_path / "o"))
    one_line_exit_2(proc, str(tmp_path / "missing-prompts"))


def test_a_utf8_bom_is_not_part_of_the_first_column(tmp_path):
    from saferinstruct.config import SourceConfig
    from saferinstruct.pipeline.sources import load_sources

    src = tmp_path / "bom.csv"
    src.write_bytes("\ufeffid,text,category\n7,hello,hate\n".encode())
    [record] = load_sources(SourceConfig(path=str(src)))
    assert record["id"] == "7" and record["text"] == "hello"


def test_no_category_column_means_one_category(tmp_path):
    """`category_column: null` reads no category, even from a file that has the column."""
    from saferinstruct.config import SourceConfig
    from saferinstruct.pipeline.sources import load_sources

    src = tmp_path / "texts.csv"
    src.write_text("id,text,category\n1,one,hate\n2,two,self-harm\n")
    named = [r["category"] for r in load_sources(SourceConfig(path=str(src)))]
    assert named == ["hate", "self-harm"]
    none = SourceConfig(path=str(src), category_column=None)
    assert {r["category"] for r in load_sources(none)} == {"default"}


def test_long_texts_are_cut_once_at_load_and_counted(tmp_path):
    from saferinstruct.config import SourceConfig
    from saferinstruct.funnel import stage_counts
    from saferinstruct.io import write_jsonl_atomic
    from saferinstruct.pipeline.sources import load_sources

    src = tmp_path / "long.jsonl"
    src.write_text('{"id": "a", "text": "' + "x" * 1_000_000 + '", "category": "hate"}\n'
                   '{"id": "b", "text": "short", "category": "hate"}\n')  # fmt: skip
    records = list(load_sources(SourceConfig(path=str(src), max_text_chars=1000)))
    assert len(records[0]["text"]) == 1000 and records[0]["text_cut_from"] == 1_000_000
    assert "text_cut_from" not in records[1]
    stage = tmp_path / "stages" / "00-sources.jsonl"
    write_jsonl_atomic(stage, records)
    assert stage_counts(stage)["texts_cut"] == 1
