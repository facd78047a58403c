#!/usr/bin/env python
"""Evaluation speed, one run, one machine, same model and the same N AG News test prompts:
LLaMA-Factory predict at batch size 1 and at its best batch size, ftk generate, ftk choice, plain
transformers `generate` (batched, greedy, left-padded), lm-evaluation-harness loglikelihood (when
`lm_eval` is installed: `pip install lm-eval`), and the floor (one batched forward pass per prompt,
last-position logits only, model calls only). Prints examples/s, the ratios, and how often the
methods agree (generators against ftk generate, scorers against ftk choice).

    python scripts/bench_eval.py --run runs/agnews_tiny_real-<ts> --n 7600
    python scripts/bench_eval.py --model data/models/smollm2-135m-instruct --n 1000 --skip-lf-bs1
    python scripts/bench_eval.py --build-model --hidden-size 2048 --layers 16 --n 2000   # GPU, 1B-sized
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def lf_predict(model: str, template: str, data_dir: Path, out: Path, batch_size: int, max_new_tokens: int,
               cutoff: int) -> tuple[float, list[str]]:
    from ftk.train.llamafactory import render_predict_args

    args = render_predict_args(model_name_or_path=model, template=template, dataset_dir=str(data_dir),
                               eval_dataset="bench_test", output_dir=str(out), batch_size=batch_size,
                               max_new_tokens=max_new_tokens, cutoff_len=cutoff)
    cfg = out.with_suffix(".yaml")
    cfg.write_text(yaml.safe_dump(args))
    proc = subprocess.run([sys.executable, "-m", "llamafactory.launcher", str(cfg)], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    metrics = json.loads((out / "predict_results.json").read_text())
    preds = [json.loads(l)["predict"] for l in (out / "generated_predictions.jsonl").open()]
    return float(metrics["predict_runtime"]), preds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="ftk run directory (default: newest runs/agnews_tiny_real-*)")
    ap.add_argument("--model", help="a model folder instead of a run (e.g. data/models/smollm2-135m-instruct)")
    ap.add_argument("--template", help="chat template (default: the fetched model's, else llama3)")
    ap.add_argument("--skip-no-drafts", action="store_true", help="skip the generate row without label drafts")
    ap.add_argument("--n", type=int, default=7600)
    ap.add_argument("--batch-size", default="auto", help="ftk's batch size (auto: as `ftk eval` picks)")
    ap.add_argument("--floor-batch-size", type=int, default=64)
    ap.add_argument("--lf-batch-sizes", default="16,64", help="LLaMA-Factory batch sizes to try besides 1")
    ap.add_argument("--skip-lf-bs1", action="store_true", help="skip the slow batch-size-1 run")
    ap.add_argument("--build-model", action="store_true", help="random-init model of the given size (no run)")
    ap.add_argument("--hidden-size", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--test-csv", help="AG News-format test CSV (default: the real one in ../shared/realdata)")
    ap.add_argument("--json", help="also write the figures (rows/s, ratios, agreement) to this JSON file")
    args = ap.parse_args()

    import torch

    from ftk.data.prepare import prepare
    from ftk.data.records import read_records
    from ftk.data.task import load_task
    from ftk.eval import generate as G
    from ftk.eval.extract import make_extractor
    from ftk.eval.predict import auto_batch_size, label_token_ids, max_new_tokens_for
    from ftk.train.prompts import Prompter

    task = load_task("agnews")
    tmp = Path(tempfile.mkdtemp(prefix="ftk-bench-eval-"))
    test_csv = Path(args.test_csv) if args.test_csv else REPO.parent / "shared" / "realdata" / "ag_news" / "test.csv"
    prepare(task, {"test": str(test_csv)}, tmp / "data", prefix="bench", max_samples={"test": args.n})
    records = read_records(tmp / "data" / "bench_test.jsonl")
    if args.build_model:
        from ftk.data.sources import iter_lines
        from ftk.train.tiny import build_tiny_model

        model = str(build_tiny_model(tmp / "model", iter_lines([test_csv]), hidden_size=args.hidden_size,
                                     num_layers=args.layers, num_heads=max(4, args.hidden_size // 64),
                                     num_kv_heads=max(2, args.hidden_size // 256), vocab_size=32000))
    elif args.model:
        model = args.model
    else:
        run = args.run or sorted(glob.glob(str(REPO / "runs" / "agnews_tiny_real-*")))[-1]
        model = str(Path(run) / "model")
    template = args.template or fetched_template(Path(model)) or "llama3"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = G.load(model, template, device=device)
    n_params = sum(p.numel() for p in loaded.model.parameters())
    prompter = Prompter(loaded.tokenizer, loaded.template, None)
    prompts = [prompter.encode(r)[0] for r in records]
    mnt = max_new_tokens_for(task, loaded.tokenizer, records)
    extract = make_extractor(task.labels)
    n = len(prompts)
    args.batch_size = auto_batch_size() if args.batch_size == "auto" else int(args.batch_size)
    print(f"model {model} ({n_params / 1e6:.1f} M params, {loaded.model.dtype}, {device}); {n} prompts, "
          f"mean {sum(map(len, prompts)) / n:.0f} tokens, max_new_tokens {mnt}; ftk batch size {args.batch_size}, "
          f"floor batch size {args.floor_batch_size}")

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    results: dict[str, float] = {}
    outputs: dict[str, list[str]] = {}

    eng = G.Engine(loaded, prompts)  # prefix KV computed here, once
    labels = label_token_ids(task, loaded, end=True)  # drafts end on the stop token
    choice_labels = label_token_ids(task, loaded)
    # Warm-up, not timed: the first calls pay for allocator growth and kernel selection.
    warm = G.Engine(loaded, prompts[: args.batch_size])
    for _ in warm.generate(batch_size=args.batch_size, max_new_tokens=mnt):
        pass
    for _ in warm.choice(choice_labels, batch_size=args.batch_size):
        pass
    rows = (("ftk generate", labels),) + (() if args.skip_no_drafts else (("ftk generate, no label drafts", None),))
    for name, drafts in rows:
        t0 = time.perf_counter()
        gen = [""] * n
        for idx, texts in eng.generate(batch_size=args.batch_size, max_new_tokens=mnt, label_ids=drafts):
            for i, t in zip(idx, texts):
                gen[i] = t
        sync()
        results[name] = n / (time.perf_counter() - t0)
        outputs[name] = gen
    print(f"rows that left the label drafts (decoded plainly): {eng.fallback_rows}")

    t0 = time.perf_counter()
    cho = [""] * n
    for idx, scores in eng.choice(choice_labels, batch_size=args.batch_size):
        for i, k in zip(idx, scores.argmax(-1).tolist()):
            cho[i] = task.target_for(task.labels[k])
    sync()
    results["ftk choice"] = n / (time.perf_counter() - t0)
    outputs["ftk choice"] = cho

    order = sorted(range(n), key=lambda i: -len(prompts[i]))
    pad = loaded.tokenizer.pad_token_id
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, n, args.floor_batch_size):
            ids, mask = left_padded(prompts, order[s:s + args.floor_batch_size], pad)
            loaded.model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=1)
    sync()
    results["floor (1 forward/prompt)"] = n / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    outputs["transformers generate"] = hf_generate(loaded, prompts, order, args.batch_size, mnt, device)
    sync()
    results["transformers generate"] = n / (time.perf_counter() - t0)

    lm = lm_eval_choice(loaded, prompts, task, args.batch_size)
    if lm is not None:
        results["lm-eval loglikelihood"], outputs["lm-eval loglikelihood"] = lm
    del eng, loaded
    if device == "cuda":
        torch.cuda.empty_cache()

    lf_sizes = ([] if args.skip_lf_bs1 else [1]) + [int(x) for x in args.lf_batch_sizes.split(",") if x]
    for bs in lf_sizes:
        secs, preds = lf_predict(model, template, tmp / "data", tmp / f"lf_bs{bs}", bs, mnt, 1024)
        results[f"LLaMA-Factory predict bs {bs}"] = n / secs
        outputs[f"LLaMA-Factory predict bs {bs}"] = preds

    print(f"\n{'method':34} {'ex/s':>9}")
    for name, v in results.items():
        print(f"{name:34} {v:9.1f}")
    floor = results["floor (1 forward/prompt)"]
    lf_best_name = max((k for k in results if k.startswith("LLaMA-Factory") and not k.endswith(" 1")),
                       key=results.get, default=None)
    print()
    print(f"ftk generate / floor             {results['ftk generate'] / floor:6.2f}   (target >= 0.85)")
    print(f"ftk choice / floor               {results['ftk choice'] / floor:6.2f}   (target >= 1.3)")
    print(f"ftk generate / transformers gen. {results['ftk generate'] / results['transformers generate']:6.2f}")
    if "lm-eval loglikelihood" in results:
        print(f"ftk choice / lm-eval loglik.     {results['ftk choice'] / results['lm-eval loglikelihood']:6.2f}")
    if lf_best_name:
        print(f"ftk generate / {lf_best_name:18}{results['ftk generate'] / results[lf_best_name]:6.2f}   (target >= 2)")
    if "LLaMA-Factory predict bs 1" in results:
        print(f"ftk generate / LLaMA-Factory bs 1 {results['ftk generate'] / results['LLaMA-Factory predict bs 1']:6.2f}")
    agreement = {}
    print("\nagreement (same extracted label / same text):")
    for name, preds in outputs.items():
        if name in ("ftk generate", "ftk choice"):
            continue
        ref = "ftk choice" if name == "lm-eval loglikelihood" else "ftk generate"  # scorer vs scorer
        base = outputs[ref]
        same_label = sum(extract(a) == extract(b) for a, b in zip(base, preds))
        same_text = sum(a.strip() == b.strip() for a, b in zip(base, preds))
        print(f"  {ref} vs {name:30} labels {same_label}/{n} ({same_label / n:.4%})  text {same_text}/{n}")
        agreement[f"{ref} vs {name}"] = {"same_label": same_label, "same_text": same_text, "n": n}
    gen, cho = outputs["ftk generate"], outputs["ftk choice"]
    same = sum(extract(a) == extract(b) for a, b in zip(gen, cho))
    print(f"  ftk generate vs ftk choice (different methods)  labels {same}/{n} ({same / n:.4%})")
    acc = {k: sum(extract(p) == extract(r["output"]) for p, r in zip(v, records)) / n for k, v in outputs.items()}
    print("accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": model, "params": n_params, "device": device, "n": n, "batch_size": args.batch_size,
            "rows_per_s": results, "agreement": agreement, "accuracy": acc,
            "ratios": {"ftk generate / transformers generate": results["ftk generate"] / results["transformers generate"],
                       "ftk generate / floor": results["ftk generate"] / floor,
                       "ftk choice / floor": results["ftk choice"] / floor,
                       **({f"ftk generate / {lf_best_name}": results["ftk generate"] / results[lf_best_name]}
                          if lf_best_name else {})},
        }, indent=2))


def fetched_template(model: Path) -> str | None:
    """The chat template of a model `ftk model fetch` imported (its ftk-import.json names the file)."""
    from ftk.models.fetch import REGISTRY

    manifest = model / "ftk-import.json"
    if not manifest.is_file():
        return None
    sha = json.loads(manifest.read_text())["sha256"]
    return next((f.template for f in REGISTRY.values() if f.sha256 == sha), None)


def left_padded(prompts: list[list[int]], idx: list[int], pad: int):
    """(input ids, attention mask) of the prompts at `idx`, padded on the left to the longest."""
    import torch

    w = max(len(prompts[i]) for i in idx)
    ids = torch.full((len(idx), w), pad)
    mask = torch.zeros_like(ids)
    for r, i in enumerate(idx):
        ids[r, w - len(prompts[i]):] = torch.tensor(prompts[i])
        mask[r, w - len(prompts[i]):] = 1
    return ids, mask


def hf_generate(loaded, prompts: list[list[int]], order: list[int], batch_size: int, max_new_tokens: int,
                device: str) -> list[str]:
    """Plain transformers: left-padded batches (longest first), greedy `generate`, stop on the
    template's stop tokens, decode without special tokens."""
    import torch

    tok, model = loaded.tokenizer, loaded.model
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = [""] * len(prompts)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            ids, mask = left_padded(prompts, idx, pad)
            w = ids.shape[1]
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=list(loaded.stop_ids), pad_token_id=pad)
            for r, i in enumerate(idx):
                out[i] = tok.decode(gen[r, w:], skip_special_tokens=True)
    return out


def lm_eval_choice(loaded, prompts: list[list[int]], task, batch_size: int):
    """lm-evaluation-harness HFLM.loglikelihood of each label's target after each prompt (the
    prompt text decoded from ftk's ids, as a harness task would hold it): (examples/s, outputs)."""
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        print("lm-evaluation-harness: not installed (pip install lm-eval), row skipped")
        return None
    tok = loaded.tokenizer
    lm = HFLM(pretrained=loaded.model, tokenizer=tok, batch_size=batch_size)
    contexts = [tok.decode(p) for p in prompts]
    targets = [task.target_for(lab) for lab in task.labels]
    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=(c, t), idx=j)
            for c in contexts for j, t in enumerate(targets)]
    t0 = time.perf_counter()
    scores = [ll for ll, _ in lm.loglikelihood(reqs, disable_tqdm=True)]
    secs = time.perf_counter() - t0
    k = len(targets)
    picks = [targets[max(range(k), key=lambda j: scores[i * k + j])] for i in range(len(prompts))]
    return len(prompts) / secs, picks


if __name__ == "__main__":
    main()
