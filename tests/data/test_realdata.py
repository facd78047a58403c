"""Every built-in task on the real public files in ../shared/realdata (skipped when absent)."""

import json
from collections import Counter

import pytest
from seqeval.metrics.sequence_labeling import get_entities

from conftest import realdata
from ftk.data import spans
from ftk.data.prepare import prepare
from ftk.data.records import read_records
from ftk.data.task import load_task
from ftk.errors import FtkError


def test_financial_phrasebank_counts_and_nested_overlap(tmp_path, capsys):
    t50 = realdata("financial_phrasebank", "Sentences_50Agree.txt")
    t66 = realdata("financial_phrasebank", "Sentences_66Agree.txt")
    task = load_task("financial_phrasebank")
    m = prepare(task, {"train": str(t50), "test": str(t66)}, tmp_path)
    tr = m["splits"]["train"]
    assert tr["rows_read"] == 4846
    assert tr["read_counts"]["label_counts"] == {"negative": 604, "neutral": 2879, "positive": 1363}
    assert tr["cleaning"].get("duplicates", 0) + tr["cleaning"].get("conflicting_duplicates", 0) == 8
    assert tr["cleaning"]["conflicting_duplicates"] == 2
    assert tr["rows"] == 4846 - 8
    assert m["splits"]["test"]["rows_read"] == 4217
    assert m["overlap"]["test_in_train"] == m["splits"]["test"]["rows"]  # every test sentence is in train
    assert "also appear in train" in m["warnings"][0]  # the CLI prints it after a successful prepare
    with pytest.raises(FtkError, match="--strict forbids train/test overlap"):
        prepare(task, {"train": str(t50), "test": str(t66)}, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict").exists()
    # The leak-free setup: split 50Agree itself.
    m2 = prepare(task, {"train": str(t50)}, tmp_path / "ok", test_size=0.2, seed=1)
    assert m2["overlap"]["test_in_train"] == 0
    assert m2["splits"]["test"]["rows"] + m2["splits"]["train"]["rows"] == 4838


def test_mrpc_counts(tmp_path):
    task = load_task("mrpc")
    m = prepare(task, {"train": str(realdata("mrpc", "msr_paraphrase_train.txt")),
                       "test": str(realdata("mrpc", "msr_paraphrase_test.txt")),
                       "validation": str(realdata("mrpc", "dev.tsv"))}, tmp_path)
    assert m["splits"]["train"]["rows_read"] == 4076
    assert m["splits"]["test"]["rows_read"] == 1725
    assert m["splits"]["test"]["read_counts"]["label_counts"] == {"not equivalent": 578, "equivalent": 1147}
    assert m["splits"]["validation"]["rows_read"] == 408
    rec = read_records(tmp_path / "mrpc_test.jsonl")[0]
    assert rec["input"].startswith("Sentence1: ") and "\nSentence2: " in rec["input"]
    assert '"' in open(tmp_path / "mrpc_train.jsonl").read()  # bare quotes survived (quoting off)


def test_disaster_tweets_counts_and_split_from_train(tmp_path):
    task = load_task("disaster_tweets")
    src = str(realdata("disaster_tweets", "train.csv"))
    m = prepare(task, {"train": src}, tmp_path, test_size=0.2, val_size=0.1, seed=3)
    tr = m["splits"]["train"]
    assert tr["rows_read"] == 7613
    assert tr["read_counts"]["label_counts"] == {"no": 4342, "yes": 3271}
    total = sum(m["splits"][s]["rows"] for s in ("train", "validation", "test"))
    assert total == 7613 - sum(tr["cleaning"].values())
    assert any("\n" in r["input"] for r in read_records(tmp_path / "disaster_tweets_train.jsonl"))


def test_yelp_hf_sample(tmp_path):
    task = load_task("yelp_review_full")
    m = prepare(task, {"train": str(realdata("yelp_review_full", "hf_train_sample1000_full_dataset.csv"))},
                tmp_path, source_format="hf_csv", val_size=0.1)
    assert m["splits"]["train"]["read_counts"]["label_counts"] == {str(i): 200 for i in range(5)}
    rec = read_records(tmp_path / "yelp_review_full_train.jsonl")[0]
    assert rec["instruction"].startswith("Instruction: The following is a user's review")
    assert rec["instruction"].endswith("\nOutput: ") and rec["input"] == ""


def test_jnlpba_entities_match_seqeval_and_round_trip(tmp_path):
    src = realdata("jnlpba", "Genia4EReval1.iob2")
    task = load_task("bionlp2004")
    m = prepare(task, {"test": str(src)}, tmp_path)
    s = m["splits"]["test"]
    assert s["rows"] == 3856
    recs = read_records(tmp_path / "bionlp2004_test.jsonl")
    seq = Counter(t for r in recs for t, _, _ in get_entities(r["tags"]))
    assert s["entity_counts"] == {t: seq[t] for t in task.labels}
    assert sum(len(r["tokens"]) for r in recs) == 101039
    for r in recs:  # IOB2 -> target -> IOB2, exact
        parsed = spans.parse_entities(r["output"], task.labels)
        assert parsed.valid
        tags, missing = spans.entities_to_tags(r["tokens"], parsed.entities)
        assert missing == 0 and tags == r["tags"], r["id"]
    # The file with ###MEDLINE boundaries holds the same sentences.
    m2 = prepare(task, {"test": str(realdata("jnlpba", "Genia4EReval2.iob2"))}, tmp_path / "v2")
    assert m2["splits"]["test"]["rows"] == 3856


def test_shopbench_counts(tmp_path):
    task = load_task("shopbench")
    m = prepare(task, {"test": str(realdata("shopbench", "development.json"))}, tmp_path)
    s = m["splits"]["test"]
    assert s["rows"] == 96
    assert s["label_counts"] == {"generation": 17, "multiple-choice": 52, "named_entity_recognition": 8,
                                 "ranking": 4, "retrieval": 15}
    recs = read_records(tmp_path / "shopbench_test.jsonl")
    ranking = [r for r in recs if r["task_type"] == "ranking"][0]
    assert json.loads(ranking["gold"]) == [1, 0.01, 0.1, 1, 0] and ranking["output"] == "1, 4, 3, 2, 5"
    assert all(r["instruction"] and r["input"] == "" for r in recs)
