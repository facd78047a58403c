"""NER, ShopBench and CI metrics cross-checked against seqeval, scikit-learn, sacrebleu, rouge-score."""

import math

import numpy as np
import pytest

from ftk.eval import metrics as M

GOLD_TAGS = [
    ["B-protein", "I-protein", "O", "B-DNA", "O"],
    ["O", "B-cell_type", "I-cell_type", "I-cell_type"],
    ["B-RNA", "O", "O"],
    ["O", "O"],
]
PRED_TAGS = [
    ["B-protein", "I-protein", "O", "B-protein", "O"],  # right span, wrong type
    ["O", "B-cell_type", "I-cell_type", "O"],            # boundary error
    ["I-RNA", "O", "O"],                                  # invalid IOB2 start: not an entity in strict mode
    ["B-DNA", "O"],                                       # spurious
]


def test_ner_metrics_match_seqeval_strict():
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    m = M.ner_metrics(GOLD_TAGS, PRED_TAGS)
    kw = dict(mode="strict", scheme=IOB2)
    assert m["precision"] == pytest.approx(precision_score(GOLD_TAGS, PRED_TAGS, **kw), abs=1e-9)
    assert m["recall"] == pytest.approx(recall_score(GOLD_TAGS, PRED_TAGS, **kw), abs=1e-9)
    assert m["f1"] == pytest.approx(f1_score(GOLD_TAGS, PRED_TAGS, **kw), abs=1e-9)
    assert m["token_accuracy"] == pytest.approx(accuracy_score(GOLD_TAGS, PRED_TAGS), abs=1e-9)
    # Counted by hand: 1 correct entity (protein) of 4 gold, 4 predicted.
    assert m["precision"] == pytest.approx(1 / 4) and m["recall"] == pytest.approx(1 / 4)
    assert m["per_type"]["protein"]["support"] == 1 and m["per_type"]["DNA"]["f1"] == 0.0


def test_ner_length_mismatch():
    with pytest.raises(ValueError, match="sentence 0"):
        M.ner_metrics([["O", "O"]], [["O"]])


def test_entity_micro_f1_matches_sklearn_multilabel():
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    preds = [["Tablette", " ipad"], [], ["case", "Ünïcode"], ["x"]]
    truths = [["tablette"], ["shoes"], ["case", "ünïcode"], []]
    ours = M.entity_micro_f1(preds, truths)
    norm_p = [{x.strip().lower() for x in p} for p in preds]
    norm_t = [{x.lower() for x in t} for t in truths]
    mlb = MultiLabelBinarizer().fit(norm_p + norm_t)
    ref = f1_score(mlb.transform(norm_t), mlb.transform(norm_p), average="micro", zero_division=0)
    assert ours == pytest.approx(ref, abs=1e-9)
    assert M.entity_tp_fp_fn(["a", "a"], ["a"]) == (1, 1, 0)  # a repeated prediction is a false positive
    assert M.entity_micro_f1([[]], [[]]) == 0.0


def test_ndcg_matches_sklearn_with_exponential_gain():
    from sklearn.metrics import ndcg_score

    weights = [1, 0.01, 0.1, 1, 0]
    for ranked in ([1, 4, 3, 2, 5], [5, 2, 3, 1, 4], [4, 1, 3, 2, 5]):
        scores = np.zeros(len(weights))
        for pos, item in enumerate(ranked):
            scores[item - 1] = len(ranked) - pos
        gains = [2.0 ** w - 1 for w in weights]
        assert M.ndcg(ranked, weights) == pytest.approx(ndcg_score([gains], [scores]), abs=1e-9)
    assert M.ndcg([1, 4], weights) < 1.0
    assert M.ndcg([], weights) == 0.0
    assert M.ndcg([0, 9], weights) == 0.0  # out-of-range numbers have no relevance
    w = [3, 1, 2]
    M.ndcg([1, 2, 3], w)
    assert w == [3, 1, 2]  # the caller's weights are not sorted in place


def test_hit_rate_3():
    assert M.hit_rate_3([6, 9, 15], [6, 9, 15]) == 1.0
    assert M.hit_rate_3([6, 1, 2, 9], [6, 9, 15]) == pytest.approx(1 / 3)
    assert M.hit_rate_3([], [1]) == 0.0


def test_rouge_l_matches_rouge_score():
    from rouge_score import rouge_scorer

    sc = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for gen, ref in [("The cats are running fast", "a cat runs fast"), ("", "something"), ("ünï côde", "ünï")]:
        assert M.rouge_l(gen, ref) == pytest.approx(sc.score(ref, gen)["rougeL"].fmeasure, abs=1e-9)


def test_bleu4_matches_sacrebleu():
    import sacrebleu

    for gen, ref in [("The quick brown fox jumps over the lazy dog", "the quick brown fox jumped over the lazy dog"),
                     ("first line only\nsecond line", "first line only"), ("", "empty")]:
        first = gen.strip("\n").split("\n")[0]
        ref_score = sacrebleu.corpus_bleu([first], [[ref]], lowercase=True).score / 100
        assert M.bleu4(gen, ref) == pytest.approx(ref_score, abs=1e-9)
    assert M.bleu4("the same five words here", "The same five words here") == pytest.approx(1.0)
    assert M.bleu4("three words only", "three words only") == 0.0  # no 4-grams: corpus BLEU-4 is 0


def test_sentence_similarity_offline_matches_sentence_transformers():
    from sentence_transformers import util

    gens = ["A toggle switch is a lever switch.", "Running shoes for trail."]
    truths = ["A toggle switch is an electric switch operated by a lever.", ["shoes", "trail running footwear"]]
    ours = M.sentence_similarity(gens, truths)
    model = M.sentence_model()
    ref0 = float(util.cos_sim(model.encode(gens[0]), model.encode(truths[0]))[0][0])
    ref1 = float(np.mean([float(util.cos_sim(model.encode(gens[1]), model.encode(t))[0][0]) for t in truths[1]]))
    assert ours[0] == pytest.approx(max(ref0, 0), abs=1e-6)
    assert ours[1] == pytest.approx(max(ref1, 0), abs=1e-6)
    assert ours[0] > 0.5


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval from its formula (Wilson 1927), independent of scipy."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(0, 300), (300, 300), (1, 7), (163, 400), (5, 5)])
def test_accuracy_ci_is_wilson_and_a_real_interval_at_0_and_1(k, n):
    labels = ["a", "b"]
    gold = ["a"] * n
    pred = ["a"] * k + ["[invalid]"] * (n - k)
    lo, hi = M.classification_ci(gold, pred, labels, "accuracy")
    ref = _wilson(k, n)
    assert lo == pytest.approx(ref[0], abs=1e-9) and hi == pytest.approx(ref[1], abs=1e-9)
    assert lo <= k / n <= hi and hi - lo > 0.005  # never [0, 0] or [1, 1]
    assert M.ci_method("accuracy") == M.WILSON and "bootstrap" in M.ci_method("macro_f1")


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    gold = list(rng.choice(labels, 400))
    pred = [g if rng.random() < 0.8 else "[invalid]" for g in gold]
    acc = M.classification_metrics(gold, pred, labels)["accuracy"]
    lo, hi = M.classification_ci(gold, pred, labels, "accuracy")
    assert lo < acc < hi and hi - lo < 0.12
    assert (lo, hi) == M.classification_ci(gold, pred, labels, "accuracy")
    se = math.sqrt(acc * (1 - acc) / len(gold))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)  # close to the normal approximation
    lo_f, hi_f = M.classification_ci(gold, pred, labels, "macro_f1")
    f1 = M.classification_metrics(gold, pred, labels)["macro_f1"]
    assert lo_f < f1 < hi_f


def test_ten_thousand_labels_stay_small_and_fast(tmp_path):
    """A task with 10,000 labels and 24 predictions: counted per class (no 10,000 x 10,001 matrix; it
    made a 1.1 GB metrics.json in 400 s), report.md shows the 100 best-supported classes, and the
    metrics still equal scikit-learn's."""
    import time

    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    from ftk.eval.report import write_outputs

    labels = [f"label{i:05d}" for i in range(10_000)]
    rng = np.random.default_rng(0)
    gold = [labels[i] for i in rng.integers(0, 50, 24)]
    pred = [g if rng.random() < 0.5 else ("[invalid]" if rng.random() < 0.5 else labels[7]) for g in gold]
    t0 = time.perf_counter()
    m = M.classification_metrics(gold, pred, labels)
    rows = [{"id": str(i), "correct": g == p, "invalid": p == "[invalid]"} for i, (g, p) in enumerate(zip(gold, pred))]
    write_outputs(tmp_path, dict(m, task="big"), rows)
    assert time.perf_counter() - t0 < 20
    assert "confusion" not in m and "10000 labels" in m["confusion_omitted"]
    assert (tmp_path / "metrics.json").stat().st_size < 5_000_000 and not (tmp_path / "confusion.png").exists()
    report = (tmp_path / "report.md").read_text()
    assert "(9900 more labels, by support: metrics.json)" in report and len(report) < 50_000
    assert m["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(gold, pred), abs=1e-9)
    assert m["macro_f1"] == pytest.approx(f1_score(gold, pred, labels=labels, average="macro", zero_division=0))


def test_macro_f1_from_codes_equals_scikit_learn_on_resamples_and_many_labels():
    """The bootstrap's macro-F1 is counted per class (issue 32: a 10,000-label task spent minutes
    building a labels x labels matrix per resample); it equals scikit-learn's on every resample."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    for k in (2, 7, 3000):
        labels = [f"l{i}" for i in range(k)]
        gold = [labels[i] for i in rng.integers(0, k, 300)]
        pred = [g if rng.random() < 0.5 else ("[invalid]" if rng.random() < 0.3 else labels[int(rng.integers(0, k))])
                for g in gold]
        codes = M.label_codes(gold, pred, labels)
        for idx in (np.arange(300), rng.integers(0, 300, 300), rng.integers(0, 300, 300)):
            ref = f1_score([gold[i] for i in idx], [pred[i] for i in idx], labels=labels, average="macro",
                           zero_division=0)
            assert M.macro_f1_from_codes(codes[idx], k) == pytest.approx(ref, abs=1e-12)
