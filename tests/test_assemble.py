"""Assembly: dedup with reasons, the split by source text, provenance of every id, the
TRL preference files (datasets loads them, DPOTrainer trains a step), the card, the funnel.

Records are constructed (benign placeholder texts); no generation model is needed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from saferinstruct.config import AssembleConfig
from saferinstruct.funnel import funnel
from saferinstruct.io import read_jsonl, write_jsonl_atomic
from saferinstruct.measures.text import normalise
from saferinstruct.pipeline.assemble import assemble, assign_splits, split_score
from saferinstruct.recipes.data import write_dataset
from saferinstruct.records import add_verdict, new_record, reason_key
from saferinstruct.rundir import RunDir

TOPICS = [
    "how vaccines train the immune system",
    "the history of the printing press",
    "why the sky looks blue in daylight",
    "saving money on groceries each week",
    "learning to play chess as an adult",
    "keeping houseplants alive in winter",
    "the rules of cricket for beginners",
    "how volcanoes form over millions of years",
    "writing a polite complaint letter",
    "training a puppy to walk on a leash",
    "what causes ocean tides",
    "planning a vegetable garden in spring",
]


def assemble_into(run_dir: Path, records: list[dict], cfg: AssembleConfig, info: dict) -> dict:
    """Assemble and write the files, as `recipes.data.assemble_records` does (without
    funnel and report)."""
    return write_dataset(RunDir(run_dir), lambda: records, cfg, info)


def stage_path(run_dir: Path, name: str) -> Path:
    return RunDir(run_dir).stage(name)


def pair(rid: str, text: str, instruction: str, chosen: str, category: str = "hate") -> dict:
    record = new_record(rid, text, category, instruction=instruction, chosen=chosen)
    add_verdict(record, "induce", True)
    return record


def distinct_records() -> list[dict]:
    cats = ["hate", "self-harm"]
    return [
        pair(
            f"r{i}",
            f"A long source text number {i} about {topic}. " * 3,
            f"Write a paragraph about {topic}.",
            f"Here is a careful answer about {topic}, with a safe suggestion number {i}.",
            cats[i % 2],
        )
        for i, topic in enumerate(TOPICS)
    ]


def tricky_records() -> list[dict]:
    base = distinct_records()
    first = base[0]
    dup_text = pair("dup-text", "  " + first["text"].upper() + " ", "Tell me anything.", "Fine.")
    dup_instr = pair("dup-instr", "Another text entirely.", first["instruction"], "Sure thing.")
    near = pair("near", "Yet another text.", first["instruction"].rstrip(".") + "!", "Answer here.")
    copy = pair("copy", "The chosen copies me.", "Repeat this.", "the chosen  copies me.")
    no_chosen = pair("no-chosen", "Text without a chosen.", "Say something new.", "")
    filtered = pair("filtered", "Dropped by the filter.", "Whatever.", "x")
    add_verdict(filtered, "filter", False, "not harmful (score 0.10)", score=0.1)
    return base + [dup_text, dup_instr, near, copy, no_chosen, filtered]


@pytest.fixture
def assembled(tmp_path):
    records = tricky_records()
    info = {"models": {"expert": "embedded@abc"}, "sources": ["data/safer-instruct/sources.csv"]}
    summary = assemble_into(tmp_path, records, AssembleConfig(test_fraction=0.25, seed=3), info)
    return tmp_path, records, summary


def test_duplicates_are_dropped_with_reasons(assembled):
    run_dir, _, summary = assembled
    out = {r["id"]: r for r in read_jsonl(stage_path(run_dir, "assemble"))}
    assert out["dup-text"]["drop_reason"] == "assemble: duplicate source text of r0"
    assert out["dup-instr"]["drop_reason"] == "assemble: duplicate instruction of r0"
    assert out["near"]["drop_reason"] == "assemble: near-duplicate instruction of r0"
    assert out["near"]["verdicts"][-1]["cosine"] >= 0.95
    assert out["copy"]["drop_reason"] == "assemble: chosen equals rejected"
    assert out["no-chosen"]["drop_reason"] == "assemble: no chosen response"
    assert out["filtered"]["drop_reason"].startswith("filter: not harmful")
    assert summary["in"] == len(TOPICS) + 5 and summary["kept"] == len(TOPICS)
    assert summary["dropped"] == 5
    assert summary["drop_reasons"]["near-duplicate instruction"] == 1


def test_every_id_ends_in_exactly_one_place(assembled):
    run_dir, records, summary = assembled
    stage_ids = Counter(r["id"] for r in read_jsonl(stage_path(run_dir, "assemble")))
    assert stage_ids == Counter(r["id"] for r in records)
    assert max(stage_ids.values()) == 1
    rows = {s: list(read_jsonl(run_dir / "dataset" / f"{s}.jsonl")) for s in ("train", "test")}
    data_ids = Counter(r["id"] for s in rows.values() for r in s)
    kept = {r["id"] for r in read_jsonl(stage_path(run_dir, "assemble")) if r["status"] == "kept"}
    assert set(data_ids) == kept and max(data_ids.values()) == 1
    assert summary["train"] == len(rows["train"]) and summary["test"] == len(rows["test"])
    assert rows["train"] and rows["test"]
    train_texts = {normalise(r["rejected"][0]["content"]) for r in rows["train"]}
    assert not train_texts & {normalise(r["rejected"][0]["content"]) for r in rows["test"]}


def test_rows_are_trl_conversational_preference(assembled):
    run_dir, records, _ = assembled
    by_id = {r["id"]: r for r in records}
    for row in read_jsonl(run_dir / "dataset" / "train.jsonl"):
        assert set(row) == {"id", "category", "prompt", "chosen", "rejected"}
        assert row["prompt"] == [{"role": "user", "content": by_id[row["id"]]["instruction"]}]
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        assert row["rejected"][0]["content"] == by_id[row["id"]]["text"]
        assert normalise(row["chosen"][0]["content"]) != normalise(row["rejected"][0]["content"])


def splits_of(texts: list[str], test_fraction: float, seed: int) -> dict[str, str]:
    return assign_splits({t: split_score(t, seed) for t in texts}, test_fraction)


def test_split_is_by_source_text_and_stable():
    texts = [f"source text {i}" for i in range(1000)]
    splits = splits_of(texts, 0.1, seed=0)
    share = sum(v == "test" for v in splits.values()) / len(splits)
    assert 0.07 <= share <= 0.13
    assert splits_of(texts, 0.1, seed=0) == splits
    assert splits_of(texts, 0.1, seed=1) != splits
    again = splits_of(["  SOURCE   text 5 "], 0.1, seed=0)
    assert again["  SOURCE   text 5 "] == splits["source text 5"]
    two = splits_of(["a", "b"], 0.1, seed=0)
    assert sorted(two.values()) == ["test", "train"]
    assert set(splits_of(["a", "b"], 0.0, seed=0).values()) == {"train"}


def test_same_text_in_two_records_never_straddles(tmp_path):
    records = distinct_records()
    twin = dict(records[1], id="twin", instruction="A different request.", verdicts=[])
    records.append(twin)
    assemble_into(tmp_path, records, AssembleConfig(test_fraction=0.5), {})
    out = {r["id"]: r for r in read_jsonl(stage_path(tmp_path, "assemble"))}
    assert out["twin"]["status"] == "dropped"
    assert out["r1"]["split"] in ("train", "test")


def test_dataset_card(assembled):
    run_dir, _, summary = assembled
    card = (run_dir / "dataset" / "README.md").read_text()
    header = card.split("---\n")[1]
    import yaml

    meta = yaml.safe_load(header)
    assert meta["license"] and "text-generation" in meta["task_categories"]
    assert "not-for-all-audiences" in meta["tags"]
    assert "Content warning" in card and "academic research only" in card
    assert "embedded@abc" in card and "sources.csv" in card
    assert "never a training target" in card
    assert f"| **all** | {summary['train']} | {summary['test']} |" in card


def test_datasets_loads_train(assembled):
    from datasets import load_dataset

    run_dir, _, summary = assembled
    files = {s: str(run_dir / "dataset" / f"{s}.jsonl") for s in ("train", "test")}
    ds = load_dataset("json", data_files=files)
    assert ds["train"].num_rows == summary["train"]
    assert set(ds["train"].column_names) == {"id", "category", "prompt", "chosen", "rejected"}
    assert ds["train"][0]["prompt"][0]["role"] == "user"


def test_reason_key():
    assert reason_key("assemble: near-duplicate instruction of hate-12") == (
        "near-duplicate instruction"
    )
    assert reason_key("induce: no valid candidate (empty: 2, copied_text: 1)") == (
        "no valid candidate"
    )
    assert reason_key("respond: request_failed") == "request_failed"
    assert reason_key("filter: no (0.25): the expert explains: at length") == "no"
    assert reason_key("judge: below_threshold (0.40): meh") == "below_threshold"
    assert reason_key("judge: chosen near-copy of rejected (cosine 0.97)") == (
        "chosen near-copy of rejected"
    )
    assert reason_key(None) == "unknown"


def test_funnel_counts_each_stage(tmp_path):
    records = distinct_records()[:6]
    stages = tmp_path / "stages"
    write_jsonl_atomic(stages / "00-sources.jsonl", records)
    add_verdict(records[0], "filter", False, "not harmful (score 0.2)")
    add_verdict(records[1], "filter", False, "unparsed")
    write_jsonl_atomic(stages / "02-filter.jsonl", records)
    add_verdict(records[2], "respond", False, "empty response")
    write_jsonl_atomic(stages / "03-respond.jsonl", records)
    fun = funnel(sorted(stages.glob("*.jsonl")))
    by_stage = {s["stage"]: s for s in fun["stages"]}
    assert [s["stage"] for s in fun["stages"]] == ["sources", "filter", "respond"]
    assert (by_stage["sources"]["in"], by_stage["sources"]["kept"]) == (6, 6)
    assert (by_stage["filter"]["in"], by_stage["filter"]["dropped"]) == (6, 2)
    assert (by_stage["respond"]["in"], by_stage["respond"]["kept"]) == (4, 3)
    assert by_stage["respond"]["records"] == 6
    assert by_stage["filter"]["by_category"]["hate"] == {"in": 3, "kept": 2, "dropped": 1}
    assert {r["reason"] for r in by_stage["filter"]["top_drop_reasons"]} == {
        "not harmful",
        "unparsed",
    }
    assert fun["overall"] == {"in": 6, "kept": 3, "dropped": 3}
    assert fun["by_category"] == {"hate": {"in": 3, "kept": 1}, "self-harm": {"in": 3, "kept": 2}}
    json.dumps(fun)


@pytest.mark.slow
def test_dpo_trainer_accepts_the_dataset(tmp_path):
    """TRL's DPOTrainer trains one step on train.jsonl unchanged (CPU, fp32).

    Short texts keep the step small: ~15 s on 2 idle cores, under 60 s when loaded."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from saferinstruct.llm.embedded import ensure_converted

    records = distinct_records()
    for r in records:
        r["text"] = r["text"][:60]
    assemble_into(tmp_path / "run", records, AssembleConfig(test_fraction=0.25), {})
    train = str(tmp_path / "run" / "dataset" / "train.jsonl")
    ds = load_dataset("json", data_files=train, split="train")
    model_dir = str(ensure_converted())
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        per_device_train_batch_size=2,
        max_steps=1,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to=[],
        max_length=128,
        save_strategy="no",
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    result = trainer.train()
    assert result.global_step == 1
    assert Path(train).stat().st_size > 0


def test_in_memory_assemble_equals_the_streamed_files(tmp_path):
    """`assemble` (a list in memory) and the recipe's two passes over a file agree."""
    import copy

    records = tricky_records()
    done = assemble(copy.deepcopy(records), AssembleConfig(test_fraction=0.25, seed=3))
    assemble_into(tmp_path, records, AssembleConfig(test_fraction=0.25, seed=3), {})
    assert done.records == list(read_jsonl(stage_path(tmp_path, "assemble")))
    for split in ("train", "test"):
        assert done.splits[split] == list(read_jsonl(tmp_path / "dataset" / f"{split}.jsonl"))


def test_near_duplicates_are_the_same_whatever_the_block_size(monkeypatch):
    """The near-duplicate search goes a block at a time; a twin in an earlier block and a
    twin in the same block are both found, and the block size changes nothing."""
    import copy

    from saferinstruct.pipeline import assemble as module

    records = tricky_records()
    records.insert(3, pair("near-early", "Text early.", records[1]["instruction"] + "!!", "Ok."))
    whole = assemble(copy.deepcopy(records), AssembleConfig())
    monkeypatch.setattr(module, "BLOCK", 2)
    blocks = assemble(copy.deepcopy(records), AssembleConfig())
    reasons = [(r["id"], r.get("drop_reason")) for r in whole.records]
    assert reasons == [(r["id"], r.get("drop_reason")) for r in blocks.records]
    assert dict(reasons)["near-early"] == "assemble: near-duplicate instruction of r1"
    assert dict(reasons)["near"] == "assemble: near-duplicate instruction of r0"


def test_kept_vectors_span_slabs_without_changing_the_result(monkeypatch):
    """The kept instructions' vectors live in fixed slabs; a twin in an earlier slab is
    found the same as in one slab."""
    import copy

    from saferinstruct.pipeline import assemble as module

    records = tricky_records()
    whole = assemble(copy.deepcopy(records), AssembleConfig())
    monkeypatch.setattr(module, "BLOCK", 2)
    monkeypatch.setattr(module.NearDuplicates, "SLAB", 3)
    slabs = assemble(copy.deepcopy(records), AssembleConfig())
    assert [r.get("drop_reason") for r in whole.records] == [
        r.get("drop_reason") for r in slabs.records
    ]
    assert [v.get("cosine") for r in whole.records for v in r["verdicts"]] == [
        v.get("cosine") for r in slabs.records for v in r["verdicts"]
    ]


def test_a_record_dropped_as_a_duplicate_is_no_original():
    """B repeats A's instruction (dropped) with a new text; C repeats B's text: C is no
    duplicate of the dropped B, and stays."""
    a = pair("a", "The first text.", "Write about owls.", "Owls hunt at night, quietly.")
    b = pair("b", "A second text.", "Write about owls.", "Something else entirely.")
    c = pair("c", "A second text.", "Describe a lighthouse.", "It guides ships at night.")
    out = {r["id"]: r for r in assemble([a, b, c], AssembleConfig()).records}
    assert out["b"]["drop_reason"] == "assemble: duplicate instruction of a"
    assert out["c"]["status"] == "kept", out["c"]["drop_reason"]


def test_rejected_from_the_expert_where_respond_kept_a_complying_answer(tmp_path):
    """assemble.rejected=expert: a pair whose record holds the expert's complying answer
    (`complied`) gets it as `rejected`, the others keep the source text; the stage file,
    the counts and the card say which is which, and the default keeps the source text."""
    records = distinct_records()
    for r in records[::2]:
        r["complied"] = f"Sure, here is exactly what you asked, about {r['id']}."
    expert = assemble_into(tmp_path / "expert", [dict(r) for r in records],
                           AssembleConfig(rejected="expert"), {})  # fmt: skip
    rows = {r["id"]: r for s in ("train", "test")
            for r in read_jsonl(tmp_path / "expert" / "dataset" / f"{s}.jsonl")}  # fmt: skip
    by_id = {r["id"]: r for r in records}
    for rid, row in rows.items():
        want = by_id[rid].get("complied") or by_id[rid]["text"]
        assert row["rejected"][0]["content"] == want
    assert expert["rejected_from"] == {"expert": len(records[::2]),
                                       "source": len(records) - len(records[::2])}  # fmt: skip
    settled = {r["id"]: r for r in read_jsonl(stage_path(tmp_path / "expert", "assemble"))}
    assert settled["r0"]["verdicts"][-1]["rejected_from"] == "expert"
    assert settled["r1"]["verdicts"][-1]["rejected_from"] == "source"
    card = (tmp_path / "expert" / "dataset" / "README.md").read_text()
    assert f"complying** in {len(records[::2])} pairs" in card

    source = assemble_into(tmp_path / "source", [dict(r) for r in records], AssembleConfig(), {})
    assert source["rejected_from"] == {"source": len(records)}
    rows = [r for s in ("train", "test")
            for r in read_jsonl(tmp_path / "source" / "dataset" / f"{s}.jsonl")]  # fmt: skip
    assert all(r["rejected"][0]["content"] == by_id[r["id"]]["text"] for r in rows)
    card = (tmp_path / "source" / "dataset" / "README.md").read_text()
    assert "**original source text**." in card
