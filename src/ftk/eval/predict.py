"""Model predictions for prepared records: greedy generation or label-choice scoring, persisted per
batch (appended, fsync'd) so a killed eval resumes where it stopped; data-parallel shards merged by
id. Prompts are fitted to cutoff_len exactly as training fitted them (train/prompts.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ftk.data.task import TaskSpec
from ftk.errors import FtkError
from ftk.eval import generate
from ftk.eval.predictions import PREDICTIONS, PredictionsFile, base_row, read_done, write_rows
from ftk.train.prompts import Prompter, load_template
from ftk.progress import CountScreen


def max_new_tokens_for(task: TaskSpec, tokenizer, records: list[dict], margin: int = 4, cap: int = 512) -> int:
    """Longest possible target in tokens plus a margin: the label set for classification, else the
    longest target among (up to 5,000 of) the records, doubled for open-ended outputs."""
    if task.is_classification:
        return max(len(tokenizer.encode(task.target_for(lab), add_special_tokens=False)) for lab in task.labels) + margin
    targets = [r.get("output", "") for r in records[:5000]]
    longest = max((len(tokenizer.encode(t, add_special_tokens=False)) for t in targets), default=16)
    return min(cap, 2 * longest + margin)


def answer_room(task: TaskSpec, prompter: Prompter, records: list[dict], cutoff_len: int | None) -> int:
    """Tokens kept free after each prompt: the longest label target, or for open tasks the longest
    target of (up to 5,000 of) the records, at most half of cutoff_len. Never the row's own gold."""
    if not cutoff_len:
        return 0
    if task.is_classification:
        return prompter.answer_room([task.target_for(lab) for lab in task.labels])
    targets = sorted({r.get("output", "") for r in records[:5000]}, key=len)[-50:]
    return min(prompter.answer_room(targets), cutoff_len // 2)


def label_token_ids(task: TaskSpec, loaded, *, end: bool | None = None) -> list[list[int]]:
    """Each label's target tokens; with the end-of-turn token appended when `end` is true, or (None)
    only where needed: when one label's tokens are a prefix of another's. Drafts need `end=True`."""
    ids = [loaded.tokenizer.encode(task.target_for(lab), add_special_tokens=False) for lab in task.labels]
    if end is None:
        end = any(a != b and b[: len(a)] == a for a in ids for b in ids)
    if end:
        eot = loaded.stop_ids[0] if loaded.tokenizer.eos_token_id is None else loaded.tokenizer.eos_token_id
        ids = [x + [eot] for x in ids]
    return ids


def auto_batch_size() -> int:
    """256 on a GPU (halved on out-of-memory); 32 on CPU, where smaller batches measured faster."""
    return 256 if visible_gpus() else 32


def predict(records: list[dict], out_dir: Path, *, model_path: str, template: str, task: TaskSpec,
            adapter: str | None = None, batch_size: int = 64, max_new_tokens: int | None = None,
            cutoff_len: int | None = None, trust_remote_code: bool = False, mode: str = "generate",
            engine: str = "hf", file_name: str = PREDICTIONS, progress: bool = True,
            prompt_template: str | None = None, room_records: list[dict] | None = None,
            shots: list[dict] | tuple = ()) -> dict[str, dict]:
    """Predict every record not yet in out_dir/<file_name>; return all rows by id.

    Rows are appended per finished batch (flushed, fsync'd), so a killed eval resumes here.
    mode `generate`: greedy text. mode `choice`: the most likely label, plus `label_probs`.
    `shots`: in-context examples rendered as earlier turns before every prompt (eval/shots.py).
    """
    if mode == "choice" and not task.is_classification:
        raise FtkError(f"--mode choice needs a closed label set; task {task.name!r} is {task.kind}")
    out = PredictionsFile(out_dir / file_name)
    todo = out.todo(records)
    reused = [out.done[r["id"]] for r in records if r["id"] in out.done]
    others = sorted({row.get("engine", "hf") for row in reused} - {engine})
    if others:
        raise FtkError(f"holds {len(reused)} predictions made by engine {others[0]}; --engine {engine} would report "
                       f"them as its own (evaluate into another folder with --out, or remove the file)", path=out.path)
    if reused and progress:
        print(f"[ftk] reusing {len(reused)} of {len(records)} predictions already in {out.path}"
              + (f"; predicting the other {len(todo)}" if todo else ""), flush=True)
    if not todo:
        return out.finish(records)
    loaded = generate.load(model_path, template, adapter=adapter, trust_remote_code=trust_remote_code) \
        if engine == "hf" else None
    if engine == "vllm":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        tmpl = load_template(tok, template)
    else:
        tok, tmpl = loaded.tokenizer, loaded.template
    n_virtual = loaded.n_virtual if loaded is not None else 0  # prompt tuning: room for the virtual tokens
    prompter = Prompter(tok, tmpl, cutoff_len - n_virtual if cutoff_len else None, prompt_template, shots)
    room = answer_room(task, prompter, room_records or records, prompter.cutoff_len)
    encoded = [prompter.prompt_ids(r, room) for r in todo]
    prompts = [ids for ids, _ in encoded]
    mnt = max_new_tokens or max_new_tokens_for(task, tok, records)
    if engine == "vllm":
        batches = generate.vllm_generate(model_path, prompts, tok, tmpl, adapter=adapter, max_new_tokens=mnt,
                                         trust_remote_code=trust_remote_code)
    elif mode == "choice":
        eng = generate.Engine(loaded, prompts)
        batches = eng.choice(label_token_ids(task, loaded), batch_size=batch_size)
    else:
        # A closed label set serves as verified drafts: identical output to plain greedy decoding.
        drafts = label_token_ids(task, loaded, end=True) if task.is_classification else None
        batches = generate.Engine(loaded, prompts).generate(batch_size=batch_size, max_new_tokens=mnt,
                                                            label_ids=drafts)
    with out, CountScreen(f"eval {mode}", len(records), len(records) - len(todo), enabled=progress) as bar:
        for idx, result in batches:
            if mode == "choice":
                import torch

                probs = torch.softmax(result, dim=-1).tolist()
                logliks = result.tolist()  # each label's summed token log-likelihood, unrounded
                best = result.argmax(-1).tolist()
            rows = []
            for j, i in enumerate(idx):
                row = base_row(todo[i])
                row["engine"] = engine
                if mode == "choice":
                    row["predict"] = task.target_for(task.labels[best[j]])
                    row["label_probs"] = {lab: round(p, 6) for lab, p in zip(task.labels, probs[j])}
                    row["label_loglik"] = dict(zip(task.labels, logliks[j]))
                else:
                    row["predict"] = result[j]
                if encoded[i][1]:
                    row["truncated"] = True  # the input text was cut to fit cutoff_len
                rows.append(row)
            out.add(rows)
            bar.update(len(idx))
    return out.finish(records)


def visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def predict_sharded(run_dir: Path, records: list[dict], out_dir: Path, shards: int, argv_extra: list[str]) -> dict:
    """Data-parallel eval: one `ftk eval --shard i/N` process per GPU (or CPU), merged by id."""
    from ftk.train import launch

    procs = []
    n_gpus = visible_gpus()
    for i in range(shards):
        env = launch.launch_env({"CUDA_VISIBLE_DEVICES": str(i)} if n_gpus >= shards else None)
        argv = ["ftk", "eval", str(run_dir), "--out", str(out_dir), "--shard", f"{i}/{shards}", *argv_extra]
        log = open(out_dir / f"shard-{i}.log", "ab")
        procs.append((subprocess.Popen(launch.resolve(argv), env=env, stdout=log, stderr=subprocess.STDOUT), log))
    failed = []
    for i, (proc, log) in enumerate(procs):
        if proc.wait() != 0:
            failed.append(i)
        log.close()
    if failed:
        raise FtkError(f"eval shard(s) {failed} failed; see {out_dir}/shard-<i>.log", path=out_dir)
    merged: dict[str, dict] = read_done(out_dir / PREDICTIONS)
    for i in range(shards):
        merged.update(read_done(out_dir / f"predictions.shard-{i}.jsonl"))
    kept = {r["id"]: merged[r["id"]] for r in records if r["id"] in merged}
    write_rows(out_dir / PREDICTIONS, kept.values())
    for i in range(shards):
        (out_dir / f"predictions.shard-{i}.jsonl").unlink(missing_ok=True)
    return kept
