"""A study's base rows (zero-shot generate and choice, K-shot choice), its baselines (CV-chosen
TF-IDF, majority) and seeds: every tuned row is tested against the strongest base row and the
strongest baseline, and trials that differ only in their seed are summarised (mean, sd, each seed)."""

import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO, ftk_here

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bases_study(tmp_path_factory, synth_dir, tiny_model):
    tmp = tmp_path_factory.mktemp("bases")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "extends": str(REPO / "configs" / "agnews_tiny_cpu.yaml"), "name": "seeds",
        "data": {"train": str(synth_dir / "train.csv"), "test": str(synth_dir / "test.csv"),
                 "prepared_dir": str(tmp / "prepared"), "max_samples": {"train": 400, "test": 60}},
        "model": {"name_or_path": str(tiny_model)},
        "train": {"max_steps": 30, "save_steps": 1000, "logging_steps": 10}}))
    study = tmp / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "seeds_tiny", "recipe": str(recipe), "base": True,
        "bases": [{"mode": "choice"}, {"mode": "choice", "shots": 4, "overrides": ["train.cutoff_len=512"]}],
        "baselines": ["tfidf", "majority"], "grid": {"train.seed": [1, 2]}}))
    out = tmp / "out"
    proc = ftk_here("study", "run", study, "--out", out, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text())


def test_every_base_row_and_baseline_is_a_row(bases_study):
    _, rep = bases_study
    ids = [r["trial"] for r in rep["rows"]]
    assert ids[:3] == ["base", "base-choice", "base-choice-4shot"]
    assert {"baseline-tfidf", "baseline-majority"} <= set(ids) and len(ids) == 7
    rows = {r["trial"]: r for r in rep["rows"]}
    m = json.loads(Path(rows["base-choice-4shot"]["eval_dir"], "metrics.json").read_text())
    assert m["shots"] == 4 and len(m["shot_ids"]) == 4 and m["mode"] == "choice"
    assert m["identity"]["shots"] == m["shot_ids"]
    tf = json.loads(Path(rows["baseline-tfidf"]["eval_dir"], "metrics.json").read_text())
    assert tf["cv"]["folds"] == 5 and 0 < tf["cv"]["score"] <= 1 and set(tf["chosen"]) == {
        "analyzer", "ngram_range", "sublinear_tf", "C"}
    assert "CV-chosen" in rows["baseline-tfidf"]["what"] and "4-shot choice" in rows["base-choice-4shot"]["what"]


def test_tuned_rows_are_tested_against_the_strongest_base_and_baseline(bases_study):
    _, rep = bases_study
    rows = {r["trial"]: r for r in rep["rows"]}
    bases = [r for r in rep["rows"] if r["base"]]
    baselines = [r for r in rep["rows"] if r["baseline"]]
    assert rep["strongest_base"] == max(bases, key=lambda r: r["value"])["trial"]
    assert rep["strongest_baseline"] == max(baselines, key=lambda r: r["value"])["trial"]
    strongest = rows[rep["strongest_baseline"]]["value"]
    for r in rep["rows"]:
        if r["base"] or r["baseline"]:
            assert r["vs_base"] is None and r["vs_baseline"] is None
        else:
            assert r["vs_baseline"]["delta"] == pytest.approx(r["value"] - strongest)
            assert 0 <= r["vs_baseline"]["mcnemar_p_holm"] <= 1
    assert rep["trivial"]["row"] == "baseline-majority"  # the majority row is the trivial line


def test_seeds_are_summarised_with_mean_and_sd(bases_study):
    out, rep = bases_study
    (group,) = rep["seeds"]
    assert group["seeds"] == [1, 2] and len(group["values"]) == 2
    vals = group["values"]
    assert group["mean"] == pytest.approx(sum(vals) / 2)
    assert group["sd"] == pytest.approx(abs(vals[0] - vals[1]) / 2 ** 0.5)
    md = (out / "report.md").read_text()
    assert "Seed-to-seed spread" in md and "vs strongest baseline" in md


def test_a_published_study_rebuilds_every_figure_from_its_items(bases_study, tmp_path):
    """export -> results folder (no dataset text) -> every figure recomputed from the items alone,
    equal to the study's own report; a changed item is caught."""
    import shutil

    from ftk.study.results import ResultsMismatch, export_study, rebuild_study

    out, rep = bases_study
    dest = export_study(out, tmp_path / "results", contended=True, note="test")
    assert not list(dest.parent.glob("*.partial"))
    texts = "".join(p.read_text() for p in dest.rglob("items.jsonl"))
    assert "instruction" not in texts and "prompt" not in texts and "predict" not in texts
    rebuilt = rebuild_study(dest)
    assert [r["trial"] for r in rebuilt["rows"]] == [r["trial"] for r in rep["rows"]]
    for mine, theirs in zip(rebuilt["rows"], rep["rows"]):
        assert mine["value"] == pytest.approx(theirs["value"], abs=1e-12)
        if theirs["vs_baseline"]:
            assert mine["vs_baseline"]["delta"] == pytest.approx(theirs["vs_baseline"]["delta"], abs=1e-12)
            assert mine["vs_baseline"]["p_holm"] == pytest.approx(theirs["vs_baseline"]["mcnemar_p_holm"], abs=1e-12)
    assert rebuilt["strongest"] == {"base": rep["strongest_base"], "baseline": rep["strongest_baseline"]}
    assert rebuilt["seeds"][0]["mean"] == pytest.approx(rep["seeds"][0]["mean"])
    prov = rebuilt["rows"][-1]["provenance"]
    assert prov["seed"] == 2 and prov["train_seconds"] > 0 and "transformers" in prov["versions"]
    assert prov["cpu_count"] and "cpu_flags" in prov
    # one prediction changed by hand: the recorded accuracy no longer follows from the items
    bad = tmp_path / "bad"
    shutil.copytree(dest, bad)
    path = bad / "baseline-tfidf" / "items.jsonl"
    lines = path.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if json.loads(line)["correct"])
    row = json.loads(lines[i])
    row["pred"] = "World" if row["gold"] != "World" else "Sports"  # now wrong, still marked correct
    path.write_text("\n".join(lines[:i] + [json.dumps(row)] + lines[i + 1:]) + "\n")
    with pytest.raises(ResultsMismatch, match="gold and prediction say otherwise"):
        rebuild_study(bad)
    row["correct"] = False  # consistent with itself, but the recorded figures no longer follow
    path.write_text("\n".join(lines[:i] + [json.dumps(row)] + lines[i + 1:]) + "\n")
    with pytest.raises(ResultsMismatch, match="accuracy: the items give"):
        rebuild_study(bad)


def test_a_study_finished_in_two_sessions_is_published_as_one(bases_study, tmp_path):
    """--merge: the rows a later session ran replace or join the published ones; the rows it did not
    run are kept with their own provenance, and the whole is rebuilt and tested as one study."""
    import shutil

    from ftk.study.results import STUDY_FILE, export_study, rebuild_study

    out, rep = bases_study
    root = tmp_path / "results"
    first = tmp_path / "first" / out.name
    shutil.copytree(out, first)
    last = sorted((first / "trials").glob("t*.json"))[-1]  # the second seed: "not run yet" in session one
    last.unlink()
    dest = export_study(first, root, contended=True, note="session one")
    assert len(json.loads((dest / STUDY_FILE).read_text())["rows"]) == 6
    second = tmp_path / "second" / out.name
    shutil.copytree(out, second)
    for p in (second / "trials").glob("*.json"):
        if p.name != last.name:
            p.unlink()
    dest = export_study(second, root, contended=False, note="session two", merge=True)
    study = json.loads((dest / STUDY_FILE).read_text())
    assert [r["trial"] for r in study["rows"]] == [r["trial"] for r in rep["rows"]]
    assert {r["trial"]: r["contended"] for r in study["rows"]}[last.stem] is False
    assert sum(r["contended"] for r in study["rows"]) == 6 and study["contended"] is True
    assert study["note"] == "session one; session two"
    rebuilt = rebuild_study(dest)
    assert rebuilt["seeds"][0]["mean"] == pytest.approx(rep["seeds"][0]["mean"])
    # without --merge the folder holds only what this runs folder holds
    dest = export_study(second, root, contended=False)
    assert [r["trial"] for r in json.loads((dest / STUDY_FILE).read_text())["rows"]] == [last.stem]
