import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_recall_fscore_support,
)

from ftk.eval.extract import INVALID
from ftk.eval.metrics import classification_metrics

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def _check_against_sklearn(gold, pred, labels):
    m = classification_metrics(gold, pred, labels)
    assert m["n"] == len(gold)
    assert m["accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-9)
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    for i, lab in enumerate(labels):
        c = m["per_class"][lab]
        assert c["precision"] == pytest.approx(p[i], abs=1e-9)
        assert c["recall"] == pytest.approx(r[i], abs=1e-9)
        assert c["f1"] == pytest.approx(f[i], abs=1e-9)
        assert c["support"] == s[i]
    for avg in ("micro", "macro", "weighted"):
        ref = f1_score(gold, pred, labels=labels, average=avg, zero_division=0)
        assert m[f"{avg}_f1"] == pytest.approx(ref, abs=1e-9), avg
    assert m["mcc"] == pytest.approx(matthews_corrcoef(gold, pred), abs=1e-9)
    cm = confusion_matrix(gold, pred, labels=labels + [INVALID])
    assert np.array(m["confusion"]["matrix"]).tolist() == cm[: len(labels)].tolist()
    n_inv = sum(p not in labels for p in pred)
    assert m["invalid"] == n_inv
    assert m["invalid_rate"] == pytest.approx(n_inv / len(gold))
    return m


def test_small_table_with_invalid_and_unicode():
    gold = ["World", "Sports", "Business", "Sci/Tech", "Business", "World", "Sports"]
    pred = ["World", "Sports", "Sci/Tech", "Sci/Tech", INVALID, "Business", INVALID]
    m = _check_against_sklearn(gold, pred, LABELS)
    assert m["accuracy"] == pytest.approx(3 / 7)
    assert m["per_class"]["Business"]["invalid"] == 1
    labels_u = ["négatif", "neutre", "正面"]
    _check_against_sklearn(["négatif", "正面", "neutre"], ["正面", "正面", INVALID], labels_u)


def test_label_never_in_gold_and_all_invalid():
    gold = ["World", "World", "Sports"]
    pred = ["Sci/Tech", "World", "Sci/Tech"]  # Sci/Tech predicted but never gold
    _check_against_sklearn(gold, pred, LABELS)
    m = _check_against_sklearn(gold, [INVALID] * 3, LABELS)
    assert m["accuracy"] == 0.0 and m["invalid_rate"] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_random_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    choices = LABELS + [INVALID]
    gold = list(rng.choice(LABELS, size=500))
    pred = [g if rng.random() < 0.6 else str(rng.choice(choices)) for g in gold]
    _check_against_sklearn(gold, pred, LABELS)


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        classification_metrics(["World", "World"], ["World"], LABELS)
