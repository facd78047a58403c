import json

import pytest

from ftk.data import shopbench as shop_targets
from ftk.data import spans
from ftk.data.task import load_task
from ftk.eval import shopbench
from ftk.eval.scoring import score

TYPES = ["DNA", "RNA", "cell_line", "cell_type", "protein"]


def test_target_and_inverse_with_repeated_words():
    tokens = "T cells and the T cells of IL-2 receptor".split()
    tags = ["O", "O", "O", "O", "B-cell_type", "I-cell_type", "O", "B-protein", "I-protein"]
    text = spans.target_for_tags(tokens, tags)
    assert text == "cell_type: T cells #2\nprotein: IL-2 receptor"
    parsed = spans.parse_entities(text, TYPES)
    assert parsed.valid
    assert spans.entities_to_tags(tokens, parsed.entities) == (tags, 0)
    assert spans.target_for_tags(tokens, ["O"] * len(tokens)) == "none"


@pytest.mark.parametrize("text, valid, entities", [
    ("none", True, []),
    ("None.", True, []),
    ("protein: IL-2\ndna: kappa B site", True, [("protein", "IL-2"), ("DNA", "kappa B site")]),
    ("- protein: IL-2", True, [("protein", "IL-2")]),
    ("protein IL-2", False, []),
    ("gene: IL-2", False, []),
    ("", False, []),
])
def test_parse_entities(text, valid, entities):
    p = spans.parse_entities(text, TYPES)
    assert (p.valid, p.entities) == (valid, entities)


def test_prediction_not_in_sentence_is_unaligned():
    tags, missing = spans.entities_to_tags(["a", "b"], [("protein", "zzz"), ("DNA", "b")])
    assert tags == ["O", "B-DNA"] and missing == 1


@pytest.mark.parametrize("task_type, text, expected", [
    ("multiple-choice", "2", 2), ("multiple-choice", " 3. leash", 3), ("multiple-choice", "a", None),
    ("ranking", "1, 2, 3, 4, 5", [1, 2, 3, 4, 5]), ("ranking", "[1, 2, 3, 4, 5]", [1, 2, 3, 4, 5]),
    ("ranking", "1, 2, 2, 3", None), ("ranking", "1, 4, 5, aicrowd, 6", [1, 4, 5, 6]),
    ("retrieval", "100, 200, 300, 400", [100, 200, 300]), ("retrieval", "none", None),
    ("named_entity_recognition", "['New York', 'Amazon']", ["New York", "Amazon"]),
    ("named_entity_recognition", "New York, Amazon", ["New York", "Amazon"]),
    ("generation", "  text \n", "text"), ("generation", "  ", None),
])
def test_shopbench_parsers(task_type, text, expected):
    assert shopbench.parse(task_type, text) == expected


def test_shopbench_targets():
    assert shop_targets.target("ranking", [0.01, 0.1, 1, 0, 0]) == "3, 2, 1, 4, 5"
    assert shop_targets.target("retrieval", [6, 9, 15]) == "6, 9, 15"
    assert shop_targets.target("named_entity_recognition", ["tablette"]) == '["tablette"]'
    assert shopbench.parse("named_entity_recognition", shop_targets.target("named_entity_recognition", ["a b"])) == ["a b"]


def test_score_ner_kind():
    task = load_task("bionlp2004")
    tokens = "IL-2 gene in T cells".split()
    recs = [{"id": "a", "instruction": "x", "input": " ".join(tokens), "output": "",
             "tokens": tokens, "tags": ["B-DNA", "I-DNA", "O", "B-cell_type", "I-cell_type"]},
            {"id": "b", "instruction": "x", "input": "p50", "output": "", "tokens": ["p50"], "tags": ["B-protein"]}]
    preds = {"a": {"predict": "DNA: IL-2 gene\ncell_type: T cells"}, "b": {"predict": "garbage"}}
    m, rows = score(task, recs, preds)
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(2 / 3)
    assert m["invalid"] == 1 and rows[1]["invalid"] and rows[0]["correct"]


def test_unparseable_output_on_a_sentence_without_entities_is_wrong():
    """Its all-O stand-in would match the gold tags; an unparseable output still counts as wrong."""
    task = load_task("bionlp2004")
    recs = [{"id": "a", "instruction": "x", "input": "the cells", "output": "", "tokens": ["the", "cells"],
             "tags": ["O", "O"]},
            {"id": "b", "instruction": "x", "input": "and then", "output": "", "tokens": ["and", "then"],
             "tags": ["O", "O"]}]
    preds = {"a": {"predict": "garbage"}, "b": {"predict": "none"}}
    m, rows = score(task, recs, preds)
    assert rows[0]["invalid"] and not rows[0]["correct"]
    assert not rows[1]["invalid"] and rows[1]["correct"]
    assert m["invalid"] == 1 and m["sentence_exact_match"] == 0.5


def test_score_shopbench_kind():
    recs = [
        {"id": "1", "instruction": "q", "input": "", "task_type": "multiple-choice", "metric": "accuracy", "gold": 2},
        {"id": "2", "instruction": "q", "input": "", "task_type": "multiple-choice", "metric": "accuracy", "gold": 1},
        {"id": "3", "instruction": "q", "input": "", "task_type": "retrieval", "metric": "hit rate@3", "gold": [1, 2, 3]},
        {"id": "4", "instruction": "q", "input": "", "task_type": "ranking", "metric": "ndcg", "gold": [1, 0, 0]},
        {"id": "5", "instruction": "q", "input": "", "task_type": "named_entity_recognition", "metric": "micro f1",
         "gold": ["tablette"]},
        {"id": "6", "instruction": "q", "input": "", "task_type": "generation", "metric": "rougel", "gold": "a red cup"},
    ]
    preds = {"1": {"predict": "2"}, "2": {"predict": "x"}, "3": {"predict": "1, 9, 3"}, "4": {"predict": "1, 2, 3"},
             "5": {"predict": "['Tablette']"}, "6": {"predict": "a red cup"}}
    for r in recs:  # prepared records hold gold as JSON text
        r["gold"] = json.dumps(r["gold"])
    m, rows = score(load_task("shopbench"), recs, preds)
    assert m["per_metric"]["accuracy"] == 0.5
    assert m["per_metric"]["hit rate@3"] == pytest.approx(2 / 3)
    assert m["per_metric"]["ndcg"] == pytest.approx(1.0)
    assert m["per_metric"]["micro f1"] == 1.0 and m["per_metric"]["rougel"] == pytest.approx(1.0)
    assert m["invalid"] == 1 and m["invalid_by_task_type"]["multiple-choice"] == 1
    assert m["score"] == pytest.approx((0.5 + 2 / 3 + 1 + 1 + 1) / 5)
    lo, hi = m["ci95"]["score"]
    assert 0 <= lo <= hi <= 1
