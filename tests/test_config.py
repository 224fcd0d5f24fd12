"""Config loading: strict keys and types, missing files, overrides, exit code 2 from the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT
from saferinstruct.config import field_docs, load_config
from saferinstruct.errors import BadInput


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_point_inside_the_project():
    cfg = load_config(None)
    assert "shared" not in cfg.source.path.split("/")
    assert cfg.source.path.endswith("data/safer-instruct/sources.csv")
    assert cfg.reverse_train.path.endswith("data/alpacaeval/pairs.jsonl.gz")


def test_unknown_key_is_named(tmp_path):
    p = write(tmp_path, "induce:\n  num_candidatez: 3\n")
    with pytest.raises(BadInput, match=r"unknown key induce\.num_candidatez"):
        load_config(p)


def test_wrong_type_is_named(tmp_path):
    p = write(tmp_path, "induce:\n  num_candidates: many\n")
    with pytest.raises(BadInput, match=r"induce\.num_candidates: expected int"):
        load_config(p)
    p = write(tmp_path, "induce:\n  generation:\n    temperature: [1]\n")
    with pytest.raises(BadInput, match=r"induce\.generation\.temperature"):
        load_config(p)


def test_bool_is_not_an_int(tmp_path):
    p = write(tmp_path, "induce:\n  num_candidates: true\n")
    with pytest.raises(BadInput, match="expected int"):
        load_config(p)


def test_missing_input_file_is_named(tmp_path):
    p = write(tmp_path, "source:\n  path: nowhere.csv\n")
    with pytest.raises(BadInput, match=r"source\.path: file not found: .*nowhere\.csv"):
        load_config(p)


def test_relative_paths_resolve_against_the_config(tmp_path):
    (tmp_path / "texts.csv").write_text("id,text\n1,hello\n")
    sub = tmp_path / "configs"
    sub.mkdir()
    p = sub / "c.yaml"
    p.write_text("source:\n  path: ../texts.csv\n")
    assert load_config(p).source.path == str((tmp_path / "texts.csv").resolve())


def test_overrides_win_and_are_typed(tmp_path):
    p = write(tmp_path, "induce:\n  num_candidates: 2\n")
    cfg = load_config(p, ["induce.num_candidates=5", "induce.generation.temperature=0.7"])
    assert cfg.induce.num_candidates == 5
    assert cfg.induce.generation.temperature == 0.7
    with pytest.raises(BadInput, match="KEY=VALUE"):
        load_config(p, ["induce.num_candidates"])


def test_openai_backend_needs_base_url(tmp_path):
    p = write(tmp_path, "expert:\n  backend: openai\n  model: gpt\n")
    with pytest.raises(BadInput, match=r"expert\.base_url"):
        load_config(p)


def test_invalid_yaml(tmp_path):
    p = write(tmp_path, "induce: [unclosed\n")
    with pytest.raises(BadInput, match="not valid YAML"):
        load_config(p)


def test_every_field_has_a_doc():
    rows = field_docs()
    assert len(rows) > 20
    assert all(doc for _, _, doc in rows), [k for k, _, d in rows if not d]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("induce:\n  bogus: 1\n", "unknown key induce.bogus"),
        ("source:\n  path: /no/such/file.csv\n", "/no/such/file.csv"),
        ("induce:\n  num_candidates: x\n", "induce.num_candidates"),
        # stage settings checked before the first model call, not when the stage starts
        ("respond:\n  candidates: 0\n", "respond.candidates"),
        ("respond:\n  candidates: 2\n  generation: {temperature: 0}\n", "temperature > 0"),
        ("assemble:\n  rejected: model\n", "assemble.rejected: expected one of source, expert"),
    ],
)
def test_cli_bad_config_exits_2_with_one_line(tmp_path, text, needle):
    p = write(tmp_path, text)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "saferinstruct",
            "run",
            "--config",
            str(p),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o" / "stages").exists()


def test_cli_missing_config_file_exits_2(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "saferinstruct",
            "run",
            "--config",
            str(tmp_path / "nope.yaml"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "nope.yaml" in proc.stderr and "Traceback" not in proc.stderr


def test_how_models_are_reached_does_not_change_the_run_hash():
    """Concurrency or retries of any model config (a role, or reverse_train.base_model)
    leave a run directory's config hash alone; a setting that changes results does not."""
    from saferinstruct.config import config_hash

    base = load_config(ROOT / "configs/quickstart.yaml")
    reached = load_config(ROOT / "configs/quickstart.yaml", ["expert.max_concurrency=2"])
    reached.reverse_train.base_model.max_concurrency = 3
    reached.reverse_train.base_model.max_retries = 9
    changed = load_config(ROOT / "configs/quickstart.yaml", ["filter.verdict.threshold=0.5"])
    assert config_hash(base) == config_hash(reached)
    assert config_hash(base) != config_hash(changed)
