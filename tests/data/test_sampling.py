"""Seeded sampling: uniform, stratified (label shares kept) and balanced (the same count of each label)."""

from collections import Counter

import pytest

from conftest import REPO, run_ftk
from ftk.data.rows import Example
from ftk.data.sampling import sample, split_off
from ftk.errors import FtkError

# 600 rows: a 60 / 30 / 10 % label mix, the labels interleaved so that "the first N rows" is not a sample.
ROWS = [Example(line=i + 1, input=f"text {i}", target=lab, label=lab)
        for i, lab in enumerate((["neutral"] * 6 + ["positive"] * 3 + ["negative"]) * 60)]


def counts(rows):
    return Counter(r.label for r in rows)


def test_stratified_keeps_shares_balanced_takes_equal_counts_both_seeded_and_in_order():
    strat = sample(ROWS, 100, seed=1, strategy="stratified")
    assert counts(strat) == {"neutral": 60, "positive": 30, "negative": 10}
    bal = sample(ROWS, 90, seed=1, strategy="balanced")
    assert counts(bal) == {"negative": 30, "neutral": 30, "positive": 30}
    # 100 over 3 labels: 34 / 33 / 33, the leftover row to the first label in sorted order
    assert counts(sample(ROWS, 100, seed=1, strategy="balanced")) == {"negative": 34, "neutral": 33, "positive": 33}
    for rows in (strat, bal):
        assert [r.line for r in rows] == sorted(r.line for r in rows)  # original order
    assert sample(ROWS, 90, seed=1, strategy="balanced") == bal  # the same seed, the same rows
    assert sample(ROWS, 90, seed=2, strategy="balanced") != bal
    # all 60 negatives and 60 of each other label: still balanced at the limit
    assert counts(sample(ROWS, 180, seed=1, strategy="balanced")) == {"negative": 60, "neutral": 60, "positive": 60}


def test_a_test_split_taken_before_balanced_sampling_keeps_the_shares():
    kept, taken = split_off(ROWS, 0.2, seed=3, what="test_size", strategy="balanced")
    assert counts(taken) == {"neutral": 72, "positive": 36, "negative": 12}
    assert len(kept) == 480 and not {r.line for r in kept} & {r.line for r in taken}


def test_balanced_refuses_a_label_short_of_its_share_and_unlabelled_rows():
    with pytest.raises(FtkError) as exc:
        sample(ROWS, 200, seed=1, strategy="balanced", path="r.yaml", key="data.max_samples.train")
    assert str(exc.value) == ("r.yaml: data.max_samples.train: 200 rows balanced over 3 labels needs 67 of each, "
                              "but 'negative' has 60 (expected a smaller N or stratified sampling)")
    tags = [Example(line=i, input="w", target="O") for i in range(10)]
    with pytest.raises(FtkError, match="^--max-samples train: balanced sampling needs a label on every row"):
        sample(tags, 4, seed=1, strategy="balanced", key="--max-samples train")


def test_prepare_balanced_through_the_installed_script(tmp_path, synth_dir):
    out = tmp_path / "out"
    proc = run_ftk("prepare", "--task", "agnews", "--train", str(synth_dir / "train.csv"), "--out", str(out),
                   "--max-samples", "train=40", "--sample-strategy", "balanced")
    assert proc.returncode == 0, proc.stderr
    assert "train: 40 rows" in proc.stdout and "(World 10, Sports 10, Business 10, Sci/Tech 10)" in proc.stdout
    # a label short of its share: one line naming the recipe and the key, exit 2, nothing written
    recipe = REPO / "configs" / "agnews_tiny_cpu.yaml"
    proc = run_ftk("prepare", str(recipe), f"data.prepared_dir={tmp_path / 'p'}", "data.sample_strategy=balanced",
                   f"data.train={synth_dir / 'train.csv'}", f"data.test={synth_dir / 'test.csv'}",
                   "data.max_samples={train: 100000}", cwd=REPO)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert str(recipe) in lines[0] and "data.max_samples.train" in lines[0] and "balanced over 4 labels" in lines[0]
    assert not (tmp_path / "p").exists()
    proc = run_ftk("prepare", "--task", "agnews", "--train", str(synth_dir / "train.csv"), "--out", str(out),
                   "--sample-strategy", "even")
    assert proc.returncode == 2 and "expected uniform, stratified or balanced" in proc.stderr
