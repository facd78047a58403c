#!/usr/bin/env python
"""Does the GGUF export still give the fine-tuned answers in llama.cpp itself?

    python scripts/check_llamacpp.py runs/study-agnews_smollm2/runs/<run>              # f16 and q8_0
    python scripts/check_llamacpp.py runs/<run> --outtypes q8_0 --limit 100 --out results/llamacpp/x

For each output type: `ftk export RUN --gguf --outtype T` (reused when there), then
1. prompt ids: llama.cpp's own tokenizer (llama-cpp-python, vocab only) on every rendered prompt
   against the ids ftk evaluates with (train/prompts.py), item by item;
2. answers: `python -m llama_cpp.server` on the GGUF, and `ftk eval RUN --engine openai` against it
   (the completions endpoint, ftk's rendered prompts, greedy), then the extracted labels compared
   item by item with the run's own `ftk eval` (RUN/eval-test): agreement, both accuracies.
Prints one table with the CPU flags and load; with --out, writes summary.json and one items file per
type (id, gold, ftk's and llama.cpp's label: no dataset text) for the README's figures.
Needs the `llamacpp` extra (pip install -e '.[llamacpp]': llama-cpp-python builds from source).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ftk(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "ftk"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, check=False)


def _items(folder: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines() if line.strip()]
    return {r["id"]: r for r in rows}


def roundtrip_f32(run_dir: Path, n: int = 16) -> dict:
    """`ftk export --gguf --outtype f32`, then `ftk model import` of that file: logits of the first n test
    prompts against the merged model's (transformers, fp32). Exact equality is the claim."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftk.eval.evaluate import split_records
    from ftk.train.runs import read_run

    gdir = run_dir / "gguf-last-f32"
    if not list(gdir.glob("*.gguf")):
        proc = _ftk("export", str(run_dir), "--gguf", "--outtype", "f32", "--out", str(gdir))
        if proc.returncode != 0:
            raise SystemExit(f"export f32 failed: {proc.stderr.strip()[-400:]}")
    (gguf,) = gdir.glob("*.gguf")
    imported = run_dir / "gguf-f32-imported"
    shutil.rmtree(imported, ignore_errors=True)
    proc = _ftk("model", "import", str(gguf), str(imported))
    if proc.returncode != 0:
        raise SystemExit(f"import failed: {proc.stderr.strip()[-400:]}")
    _, recipe, _ = read_run(run_dir)
    records, _ = split_records(recipe.data.prepared_dir, recipe.eval.split, limit=n)
    merged = run_dir / "export-last"
    tok = AutoTokenizer.from_pretrained(merged)
    a = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(imported, dtype=torch.float32).eval()
    equal, worst = 0, 0.0
    with torch.no_grad():
        for r in records:
            text = tok.apply_chat_template([{"role": "user", "content": r["instruction"] + r.get("input", "")}],
                                           tokenize=False)
            ids = tok(text, return_tensors="pt").input_ids
            la, lb = a(ids).logits, b(ids).logits
            equal += bool(torch.equal(la, lb))
            worst = max(worst, float((la - lb).abs().max()))
    shutil.rmtree(imported, ignore_errors=True)
    return {"prompts": len(records), "logits_identical": equal, "max_abs_diff": worst}


def prompt_ids_check(gguf: Path, run_dir: Path, limit: int | None) -> tuple[int, int]:
    """(equal, total): llama.cpp's tokenizer on each rendered prompt vs ftk's prompt ids."""
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    from ftk.eval.evaluate import prompt_template_of, split_records
    from ftk.eval.predict import answer_room
    from ftk.train.prompts import Prompter, load_template
    from ftk.train.runs import read_run, run_task

    manifest, recipe, _ = read_run(run_dir)
    task = run_task(run_dir, manifest, recipe)
    records, data_manifest = split_records(recipe.data.prepared_dir, recipe.eval.split, limit=limit)
    tok = AutoTokenizer.from_pretrained(recipe.model.name_or_path)
    prompter = Prompter(tok, load_template(tok, recipe.model.template), recipe.train.cutoff_len,
                        prompt_template_of(data_manifest, task))
    room = answer_room(task, prompter, records, recipe.train.cutoff_len)
    llm = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    equal = 0
    for r in records:
        ids, _ = prompter.prompt_ids(r, room)
        text = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        equal += llm.tokenize(text.encode("utf-8"), add_bos=True, special=True) == ids
    return equal, len(records)


def serve_and_eval(gguf: Path, run_dir: Path, out: Path, limit: int | None, threads: int) -> tuple[dict, float]:
    port = _free_port()
    log = open(out.parent / f"{out.name}.server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "ftk",
                               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                               "--n_threads", str(threads), "--n_batch", "512"], stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"llama_cpp.server exited with {server.returncode}; see {log.name}") from None
                time.sleep(0.5)
        started = time.perf_counter()
        args = ["eval", str(run_dir), "--engine", "openai", "--base-url", url, "--model", "ftk", "--api", "completions",
                "--concurrency", "1", "--out", str(out)] + (["--limit", str(limit)] if limit else [])
        proc = _ftk(*args)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"ftk eval --engine openai failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        return json.loads((out / "metrics.json").read_text()), seconds
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a run directory of a causal LM (LoRA or full), evaluated with `ftk eval`")
    ap.add_argument("--outtypes", default="f16,q8_0")
    ap.add_argument("--limit", type=int, default=None, help="only the first N test items")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", default=None, help="write summary.json and items-<type>.jsonl here")
    ap.add_argument("--roundtrip", action="store_true", help="first: export f32, import it back, compare logits")
    ap.add_argument("--ref", default=None, help="the run's own ftk evaluation to compare with (default RUN/eval-test)")
    args = ap.parse_args()
    from ftk.train.runs import cpu_info

    run_dir = Path(args.run)
    ref_dir = Path(args.ref) if args.ref else run_dir / "eval-test"
    if not (ref_dir / "items.jsonl").is_file():
        print(f"error: {ref_dir}: evaluate the run first (ftk eval {run_dir})", file=sys.stderr)
        return 2
    ref = _items(ref_dir)
    ref_metrics = json.loads((ref_dir / "metrics.json").read_text())
    import gguf
    import llama_cpp

    from ftk.models.gguf_import import _version

    rows, summary = [], {"run": str(run_dir), "cpu": cpu_info(), "ftk_accuracy": ref_metrics.get("accuracy"),
                         "versions": {"llama-cpp-python": llama_cpp.__version__, "gguf": _version(gguf)},
                         "types": {}}
    if args.roundtrip:
        summary["roundtrip_f32"] = rt = roundtrip_f32(run_dir)
        print(f"f32 export -> ftk model import: logits identical on {rt['logits_identical']} of {rt['prompts']} "
              f"prompts (max |diff| {rt['max_abs_diff']:.3g})", flush=True)
    for outtype in [t for t in args.outtypes.split(",") if t]:
        gdir = run_dir / f"gguf-last-{outtype}"
        t0 = time.perf_counter()
        if not list(gdir.glob("*.gguf")):
            proc = _ftk("export", str(run_dir), "--gguf", "--outtype", outtype, "--out", str(gdir))
            if proc.returncode != 0:
                print(f"error: export {outtype}: {proc.stderr.strip()[-400:]}", file=sys.stderr)
                return 1
        export_s = time.perf_counter() - t0
        (gguf,) = gdir.glob("*.gguf")
        equal, total = prompt_ids_check(gguf, run_dir, args.limit)
        out = run_dir / f"eval-llamacpp-{outtype}"
        m, seconds = serve_and_eval(gguf, run_dir, out, args.limit, args.threads)
        mine = _items(out)
        ids = [i for i in mine if i in ref]
        agree = sum(mine[i]["pred"] == ref[i]["pred"] for i in ids)
        ref_acc = sum(ref[i]["correct"] for i in ids) / len(ids)
        info = {"file_mb": round(gguf.stat().st_size / 2**20, 1), "export_s": round(export_s, 1),
                "prompt_ids_equal": equal, "prompts": total, "agree": agree, "n": len(ids),
                "agreement": agree / len(ids), "accuracy": m["accuracy"], "ftk_accuracy_same_items": ref_acc,
                "invalid_rate": m["invalid_rate"], "rows_per_s": round(len(ids) / seconds, 2),
                "server_prompt_tokens_differ": m["served"]["server_prompt_tokens_differ"]}
        summary["types"][outtype] = info
        rows.append((outtype, info))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            with open(Path(args.out) / f"items-{outtype}.jsonl", "w") as fh:
                for i in ids:
                    fh.write(json.dumps({"id": i, "gold": ref[i]["gold"], "ftk": ref[i]["pred"],
                                         "llamacpp": mine[i]["pred"]}) + "\n")
    print(f"CPU: {summary['cpu'].get('cpu_model')} flags {summary['cpu'].get('cpu_flags')} load "
          f"{summary['cpu'].get('load_avg')}")
    print("| type | file MB | export s | prompt ids equal | agreement with ftk eval | accuracy llama.cpp | "
          "accuracy ftk | invalid | rows/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for outtype, i in rows:
        print(f"| {outtype} | {i['file_mb']} | {i['export_s']} | {i['prompt_ids_equal']}/{i['prompts']} | "
              f"{i['agree']}/{i['n']} ({i['agreement']:.2%}) | {i['accuracy']:.4f} | {i['ftk_accuracy_same_items']:.4f} | "
              f"{i['invalid_rate']:.1%} | {i['rows_per_s']} |")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
