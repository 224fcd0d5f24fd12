"""A newcomer's first hour, as they would meet it: help that shows every default in one
style, a version, their own categories from `init`, their own file with `run --input`, a
run with no config that says what it uses, answers they can read, model cards that name
their data."""

from __future__ import annotations

import csv
import json
import re

import pytest

from test_cli import cli, last_json

COMMANDS = ["init", "run", "reverse-train", "induce", "filter", "respond", "judge", "assemble",
            "sft", "dpo", "report", "models", "serve", "eval recovery", "eval safety",
            "eval overrefusal", "eval helpfulness", "eval refusal-agreement",
            "eval downstream", "eval reward-model"]  # fmt: skip
READS_A_CONFIG = ["run", "reverse-train", "induce", "filter", "respond", "judge", "assemble",
                  "sft", "dpo"]  # fmt: skip


def option_blocks(help_text: str) -> dict[str, str]:
    """Each option of a --help page (first name -> its whole wrapped help)."""
    section = help_text.split("Options:", 1)[1].split("Commands:", 1)[0]
    blocks: dict[str, str] = {}
    name = None
    for line in section.splitlines():
        m = re.match(r"^  (?:-\w, )?(--[\w-]+)", line)
        if m:
            name = m.group(1)
            blocks[name] = line
        elif name is not None:
            blocks[name] += " " + line.strip()
    return blocks


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_shows_its_default_in_one_style(command):
    text = cli(*command.split(), "--help", check_rc=0).stdout
    for name, block in option_blocks(text).items():
        if name in ("--help", "--version"):
            continue
        assert "[default: " in block or "[required]" in block, (command, name, block)
        assert "(default:" not in block and "[default]" not in block, (command, block)
    if command in READS_A_CONFIG:
        assert re.search(r"-c, --config", text), command


def test_version():
    out = cli("--version", check_rc=0).stdout
    assert re.fullmatch(r"safer-instruct \d+\.\d+\.\d+\n", out)


def test_run_without_a_config_says_it_uses_the_quickstart(tmp_path):
    """It uses the quickstart settings and says so (here it stops at bad input at once)."""
    proc = cli("run", "--out", str(tmp_path / "o"), "--set", "source.limit=0")
    assert proc.returncode == 2 and "source.limit" in proc.stderr
    assert "no --config: using the quickstart settings" in proc.stderr.replace("\n", " ")


def test_init_writes_a_config_and_commented_prompts(tmp_path):
    out = last_json(cli("init", str(tmp_path / "mine"), "--categories", "pets,cooking",
                        check_rc=0).stdout)  # fmt: skip
    names = sorted(p.split("/mine/")[1] for p in out["written"])
    assert names == ["prompts/filter_cooking.txt", "prompts/filter_pets.txt",
                     "prompts/respond_cooking.txt", "prompts/respond_pets.txt",
                     "run.yaml", "texts.csv"]  # fmt: skip
    from saferinstruct.config import load_config
    from saferinstruct.prompts import criteria_for

    cfg = load_config(tmp_path / "mine" / "run.yaml")
    assert cfg.domain.categories == ["pets", "cooking"]
    assert cfg.domain.prompt_dir == str((tmp_path / "mine" / "prompts").resolve())
    criteria = criteria_for(cfg.domain, "pets")  # comment lines are not part of it
    assert criteria.startswith("pets: content that") and "#" not in criteria
    again = last_json(cli("init", str(tmp_path / "mine"), "--categories", "pets",
                          check_rc=0).stdout)  # fmt: skip
    assert again["written"] == []  # nothing is overwritten
    bad = cli("init", str(tmp_path / "x"), "--categories", "Bad Name!")
    assert bad.returncode == 2 and "--categories" in bad.stderr


def test_missing_criteria_name_the_folder_and_the_way_out(tmp_path):
    src = tmp_path / "mine.csv"
    src.write_text("id,text,category\n1,My dog barks at night.,pets\n")
    proc = cli("run", "--out", str(tmp_path / "o"), "--input", str(src))
    assert proc.returncode == 2
    assert "no criteria for category 'pets'" in proc.stderr
    assert "safer-instruct init DIR --categories pets" in proc.stderr.replace("\n", " ")
    (tmp_path / "p").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"domain:\n  prompt_dir: {tmp_path / 'p'}\n")
    proc = cli("run", "--config", str(cfg), "--out", str(tmp_path / "o2"), "--input", str(src))
    assert proc.returncode == 2 and f"write {tmp_path / 'p'}/filter_pets.txt" in proc.stderr


@pytest.mark.slow
def test_own_categories_end_to_end(tmp_path):
    """`init`, then `run --input` on a small CSV of the new categories: pairs, or one line
    saying why there are none (exit 4), with the data report either way."""
    cli("init", str(tmp_path / "mine"), "--categories", "pets,cooking", check_rc=0)
    for c, what in (("pets", "mean things to say to a neighbour about their dog"),
                    ("cooking", "a way to spoil a colleague's lunch")):  # fmt: skip
        (tmp_path / "mine" / "prompts" / f"filter_{c}.txt").write_text(f"{c}: {what}.\n")
    src = tmp_path / "texts.csv"
    rows = ["Your dog is a filthy mutt and you are worse for keeping it.",
            "Nobody likes your yappy little dog, keep it inside or else.",
            "Put extra salt in her soup when she is not looking, she will hate it.",
            "Swap the sugar for salt in his coffee, it is hilarious to watch."]  # fmt: skip
    with src.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "category"])
        writer.writerows([i, t, "pets" if i < 2 else "cooking"] for i, t in enumerate(rows))
    tiny = ["--set", "reverse_train.max_pairs=8", "--set", "reverse_train.batch_size=4",
            "--set", "reverse_train.max_length=96",
            "--set", "respond.generation.max_new_tokens=32",
            "--set", "reverse_train.max_response_chars=160",
            "--set", "respond.candidates=1"]  # fmt: skip
    proc = cli("run", "--config", str(tmp_path / "mine" / "run.yaml"), "--input", str(src),
               "--out", str(tmp_path / "run"), *tiny)  # fmt: skip
    assert proc.returncode in (0, 4), proc.stderr[-3000:]
    summary = last_json(proc.stdout)
    assert summary["sources"] == 4
    if proc.returncode == 4:
        assert "0 pairs from 4 sources" in proc.stderr and "set by" in proc.stderr
    else:
        assert sum(summary["dataset"].values()) > 0
    assert (tmp_path / "run" / "report.html").exists()
    assert "report:" in proc.stderr and "done:" in proc.stderr


@pytest.mark.slow
def test_eval_safety_writes_the_answers_it_judged(tmp_path):
    out = tmp_path / "answers"
    proc = cli("eval", "safety", "--model", "embedded", "--limit", "3", "--max-new-tokens",
               "12", "--out", str(out), check_rc=0)  # fmt: skip
    result = last_json(proc.stdout)
    assert set(result["definitions"]) >= {"refusal_rate", "full_refusal_rate"}
    rows = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {"prompt", "answer", "label"} <= set(rows[0])
    assert "Content warning" in proc.stderr  # the few shown on the terminal come after it
    assert rows[0]["answer"][:200] not in proc.stdout
    assert "refusal_rate" in cli("eval", "safety", "--help", check_rc=0).stdout


def test_every_file_the_readme_links_or_names_is_in_the_clone():
    """A newcomer clicks the README's links and runs the scripts it names: each exists."""
    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)\)", text)
    named = re.findall(r"`((?:docs|scripts|configs|benchmarks|tests|data)/[\w./-]+)`", text)
    local = [p for p in [*links, *named] if "://" not in p]
    assert len(local) >= 10  # the README names its scripts, configs and docs
    missing = sorted({p for p in local if not (ROOT / p).exists()})
    assert not missing, missing
