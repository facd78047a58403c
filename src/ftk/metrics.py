"""Classification metrics as pure functions of (gold, predicted) label lists.

Everything is derived from one confusion matrix (gold rows x predicted columns, plus an
`[invalid]` column), so a million predictions cost one pass. Definitions follow scikit-learn
(`precision_recall_fscore_support(..., labels=labels, zero_division=0)`, `matthews_corrcoef`),
and tests cross-check against it. An invalid prediction is wrong: it is a false negative for its
gold class and a false positive for no label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ftk.extract import INVALID


def confusion(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Counts[i, j] = rows with gold labels[i] predicted labels[j]; last column = anything else."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    index = {lab: i for i, lab in enumerate(labels)}
    k = len(labels)
    g = np.fromiter((index[x] for x in gold), dtype=np.int64, count=len(gold))
    p = np.fromiter((index.get(x, k) for x in pred), dtype=np.int64, count=len(pred))
    return np.bincount(g * (k + 1) + p, minlength=k * (k + 1)).reshape(k, k + 1)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b != 0)


def _f1(p, r):
    return _div(2 * p * r, p + r)


def classification_metrics(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, per-class P/R/F1/support, micro/macro/weighted F1, MCC, invalid rate, confusion."""
    labels = list(labels)
    cm = confusion(gold, pred, labels)
    k = len(labels)
    n = int(cm.sum())
    tp = np.diag(cm[:, :k]).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm[:, :k].sum(axis=0).astype(float)
    precision = _div(tp, predicted)
    recall = _div(tp, support)
    f1 = _f1(precision, recall)
    micro_p = tp.sum() / predicted.sum() if predicted.sum() else 0.0
    micro_r = tp.sum() / support.sum() if support.sum() else 0.0
    micro_f1 = float(_f1(np.array(micro_p), np.array(micro_r)))
    invalid = cm[:, k]
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "micro_f1": micro_f1,
        "weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() else 0.0,
        "mcc": mcc_from_confusion(cm),
        "invalid": int(invalid.sum()),
        "invalid_rate": float(invalid.sum() / n) if n else 0.0,
        "per_class": {
            lab: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                  "support": int(support[i]), "invalid": int(invalid[i]),
                  "invalid_rate": float(invalid[i] / support[i]) if support[i] else 0.0}
            for i, lab in enumerate(labels)
        },
        "confusion": {"labels": labels, "columns": labels + [INVALID], "matrix": cm.tolist()},
    }


def mcc_from_confusion(cm: np.ndarray) -> float:
    """Matthews correlation (multiclass, as sklearn.metrics.matthews_corrcoef) over labels+invalid."""
    k = cm.shape[0]
    # Square matrix: invalid becomes an extra predicted class that is never gold.
    c = np.zeros((k + 1, k + 1), dtype=float)
    c[:k, :] = cm
    t_sum = c.sum(axis=1)
    p_sum = c.sum(axis=0)
    n_correct = np.trace(c)
    n = c.sum()
    cov_ytyp = n_correct * n - t_sum @ p_sum
    cov_ypyp = n * n - p_sum @ p_sum
    cov_ytyt = n * n - t_sum @ t_sum
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))
