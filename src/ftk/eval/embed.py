"""`ftk embed RUN`: the model's last-token hidden state for each test prompt (the prompt eval uses),
reduced to 2-D with scikit-learn's t-SNE, as two figures (S0): coloured by gold label, and by
correct / wrong (from the run's evaluation of that split, when there is one).

By default the rows are the ones that evaluation scored (so both figures show the same points; an
eval run with `--limit 500` gives a 500-point plot); `--limit N` takes the split's first N rows
instead, and rows the evaluation did not score are drawn grey as "not evaluated".

Writes RUN/embed-<split>/: tsne_by_label.png, tsne_by_correct.png, points.csv (id, x, y, label, correct).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ftk import plots
from ftk.errors import FtkError
from ftk.eval.evaluate import model_for, prompt_template_of, split_records
from ftk.eval.extract import make_extractor
from ftk.eval.predictions import read_done
from ftk.fileio import write_text
from ftk.train.runs import read_run, run_task


def hidden_states(run_dir: Path, manifest, recipe, task, records: list[dict], data_manifest: dict,
                  batch_size: int = 32) -> np.ndarray:
    """[n, hidden] last-layer hidden state at each prompt's last token (the generative model's), or
    at the input's last token for a classification head's backbone."""
    import torch

    model_path, adapter, weights = model_for(manifest, recipe, run_dir)
    if recipe.method.head != "none":
        from ftk.train.hf.data import seq_cls_ids
        from ftk.train.hf.models import load_head
        from ftk.train.hf.tokens import align

        model, tok, info = load_head(weights, recipe.model.name_or_path, device="cpu")
        seqs = [align(tok, r["tokens"]).input_ids if info["kind"] == "token_classification"
                else seq_cls_ids(tok, r, recipe.train.cutoff_len, info.get("append_eos", False)) for r in records]
        pad = tok.pad_token_id
    else:
        from ftk.eval import generate
        from ftk.train.prompts import Prompter

        loaded = generate.load(model_path, recipe.model.template, adapter=adapter, device="cpu")
        if loaded.virtual is not None:
            raise FtkError("ftk embed does not handle prompt tuning's virtual tokens yet", path=run_dir)
        model, tok = loaded.model, loaded.tokenizer
        prompter = Prompter(tok, loaded.template, recipe.train.cutoff_len, prompt_template_of(data_manifest, task))
        seqs = [prompter.prompt_ids(r, 0)[0] for r in records]
        pad = tok.pad_token_id if tok.pad_token_id is not None else loaded.stop_ids[0]
    out = np.zeros((len(seqs), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(seqs), batch_size):
            chunk = seqs[s:s + batch_size]
            width = max(map(len, chunk))
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, q in enumerate(chunk):  # left padding: the last position is every row's last token
                ids[i, width - len(q):] = torch.tensor(q)
                mask[i, width - len(q):] = 1
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            res = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
            out[s:s + len(chunk)] = res.hidden_states[-1][:, -1, :].float().numpy()
    return out


def embed_run(run_dir: str | Path, *, split: str | None = None, limit: int | None = None, seed: int = 0,
              perplexity: float = 30.0) -> Path:
    from sklearn.manifold import TSNE

    run_dir = Path(run_dir)
    manifest, recipe, _ = read_run(run_dir)
    task = run_task(run_dir, manifest, recipe)
    if not task.is_classification:
        raise FtkError(f"ftk embed colours points by class label; task {task.name!r} is {task.kind}")
    split = split or recipe.eval.split
    recorded = manifest.get("data", {}).get("splits", {}).get(split, {}).get("sha256")
    records, data_manifest = split_records(recipe.data.prepared_dir, split, recorded, limit)
    preds = _evaluated(run_dir, split)
    if limit is None and preds:
        records = [r for r in records if r["id"] in preds]
    if len(records) < 10:
        raise FtkError(f"{len(records)} rows: t-SNE needs at least 10", path=run_dir)
    x = hidden_states(run_dir, manifest, recipe, task, records, data_manifest)
    xy = TSNE(n_components=2, perplexity=min(perplexity, (len(records) - 1) / 3), random_state=seed,
              init="pca").fit_transform(x)
    gold = [r["label"] for r in records]
    correct = _correctness(preds, task, records) if preds else None
    out_dir = run_dir / f"embed-{split}"
    _scatter(xy, gold, task.labels, out_dir / "tsne_by_label.png", f"{manifest.get('name')}: t-SNE by gold label")
    if correct is not None:
        names = {True: "correct", False: "wrong", None: "not evaluated"}
        _scatter(xy, [names[c] for c in correct], ["not evaluated", "correct", "wrong"],
                 out_dir / "tsne_by_correct.png", f"{manifest.get('name')}: t-SNE by correct / wrong",
                 colors={"correct": "tab:green", "wrong": "tab:red", "not evaluated": "tab:gray"}, emphasise="wrong")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "x", "y", "label", "correct"])
    for r, (a, b), c in zip(records, xy, correct or [None] * len(records)):
        w.writerow([r["id"], f"{a:.4f}", f"{b:.4f}", r["label"], "" if c is None else int(c)])
    write_text(out_dir / "points.csv", buf.getvalue())
    return out_dir


def _evaluated(run_dir: Path, split: str) -> dict[str, dict]:
    """The predictions of the run's evaluation of this split ({} when it has none)."""
    for name in (f"eval-{split}", f"eval-{split}-choice"):
        preds = read_done(run_dir / name / "predictions.jsonl")
        if preds:
            return preds
    return {}


def _correctness(preds: dict[str, dict], task, records: list[dict]) -> list[bool | None]:
    """Per record: right or wrong in the run's evaluation (None: that evaluation did not score it)."""
    ex = task.extraction
    extract = make_extractor(task.labels, ex.steps, ex.synonyms)
    return [extract(preds[r["id"]]["predict"]) == r["label"] if r["id"] in preds else None for r in records]


def _scatter(xy: np.ndarray, values: list[str], order: list[str], path: Path, title: str,
             colors: dict[str, str] | None = None, emphasise: str | None = None) -> None:
    """Points by value, in `order` (later ones drawn on top); the `emphasise` value as large crosses
    over faded others, so that a few wrong items stand out of hundreds of right ones."""
    fig, ax = plots.figure(8, 6)
    for k, lab in enumerate(order):
        pts = xy[[v == lab for v in values]]
        if not len(pts):
            continue
        style = ({"s": 28, "marker": "X", "alpha": 0.95, "linewidths": 0.4, "edgecolors": "black", "zorder": 3}
                 if lab == emphasise else {"s": 6, "alpha": 0.35 if emphasise else 0.7, "zorder": 2})
        ax.scatter(pts[:, 0], pts[:, 1], label=f"{lab} ({len(pts)})", color=(colors or {}).get(lab, f"C{k}"), **style)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    plots.legend_outside(ax, markerscale=2)
    plots.save(fig, path)
