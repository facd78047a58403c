"""Prompts as token ids, exactly as LLaMA-Factory's template encoder builds them, and the one rule
for records longer than `cutoff_len`, shared by training and evaluation.

LLaMA-Factory 0.9.5 cuts an over-long example at the end of its *source* ids
(`source_ids[:source_len]`), and the source ends with the chat template's assistant header: the
model is then trained (and LLaMA-Factory's own predict asks it) to answer after a user turn that
stops mid-sentence, without the header. ftk instead cuts the record's *text* (the task input, at
the token level) until the whole encoded example fits, so the instruction, the template's framing
and the generation prompt always stay:

- train: over-long rows of the train/validation splits are fitted before LLaMA-Factory sees them
  (room kept for the row's own target), so LLaMA-Factory never cuts anything;
- eval: every prompt is fitted the same way, with room for the longest answer (the longest label
  target, or the longest target of the split for open tasks), never for the row's own gold.

A fitted record re-encodes to exactly the ids ftk evaluates with (tests compare against
LLaMA-Factory's own preprocessing of the fitted records).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ftk.data.records import user_content

# Tokens never outnumber UTF-8 bytes (byte-level BPE, SentencePiece with byte fallback), plus a
# few per separately encoded slot; no chat template's framing comes near this many bytes.
FRAMING_BYTES = 512


def load_template(tokenizer, name: str):
    """LLaMA-Factory's template object (its INFO lines kept off ftk's terminal)."""
    from ftk.train.llamafactory import llamafactory_verbosity

    with llamafactory_verbosity("WARN"):
        from llamafactory.data.template import get_template_and_fix_tokenizer
        from llamafactory.hparams import DataArguments

    return get_template_and_fix_tokenizer(tokenizer, DataArguments(template=name))


def may_exceed(record: dict, cutoff_len: int) -> bool:
    """False when the record cannot reach `cutoff_len` tokens whatever the tokenizer (no loading)."""
    n = sum(len(str(record.get(k) or "").encode("utf-8")) for k in ("instruction", "input", "output"))
    return n + FRAMING_BYTES > cutoff_len


@dataclass
class Fitted:
    record: dict
    truncated: bool  # the text (and, if need be, the instruction) was cut
    fits: bool  # the encoded record fits cutoff_len (False: framing + answer alone are too long)


class Prompter:
    """Encodes prepared records with a LLaMA-Factory template and fits them to `cutoff_len`.

    `prompt_template` is the task prompt the records were made with; when it embeds `{input}`,
    the text inside the instruction is the part that is cut.
    """

    def __init__(self, tokenizer, template, cutoff_len: int | None, prompt_template: str | None = None,
                 shots: Sequence[dict] = ()):
        self.tokenizer, self.template = tokenizer, template
        self.cutoff_len = cutoff_len
        self.prefix = self.suffix = None
        if prompt_template and "{input}" in prompt_template:
            self.prefix, _, self.suffix = prompt_template.partition("{input}")
        self.eos_extra = 1 if getattr(template, "efficient_eos", False) else 0
        self.shots: list[dict] = []
        if shots:  # in-context examples (eval/shots.py): each fitted to cutoff_len / (K + 1) first
            share = Prompter(tokenizer, template, cutoff_len // (len(shots) + 1) if cutoff_len else None,
                             prompt_template)
            self.shots = [share.fit(s).record for s in shots]

    def encode(self, record: dict) -> tuple[list[int], list[int]]:
        """(prompt ids, target ids) of LLaMA-Factory's `encode_oneturn` for this record (after the
        in-context examples' turns, if any)."""
        messages = []
        for s in self.shots:
            messages += [{"role": "user", "content": user_content(s)}, {"role": "assistant", "content": s["output"]}]
        messages += [{"role": "user", "content": user_content(record)},
                     {"role": "assistant", "content": record.get("output", "")}]
        return self.template.encode_oneturn(self.tokenizer, messages)

    def answer_room(self, targets: Sequence[str]) -> int:
        """Tokens the longest of these targets takes after the prompt (end-of-turn included)."""
        return max((len(self.encode({"instruction": "x", "output": t})[1]) for t in targets), default=0) \
            + self.eos_extra

    # -- the text part of a record, and the record rebuilt with a shorter text -------------------

    def _text(self, record: dict) -> tuple[str, str]:
        if record.get("input"):
            return "input", record["input"]
        instr = record.get("instruction", "")
        if self.prefix is not None and instr.startswith(self.prefix) and instr.endswith(self.suffix):
            return "embedded", instr[len(self.prefix): len(instr) - len(self.suffix)]
        return "instruction", instr

    def _with_text(self, record: dict, where: str, text: str) -> dict:
        out = dict(record)
        if where == "embedded":
            out["instruction"] = self.prefix + text + self.suffix
        else:
            out[where] = text
        return out

    def fit(self, record: dict, room: int | None = None) -> Fitted:
        """The record with its text cut (token level, from the end) so prompt + `room` answer tokens
        fit `cutoff_len`; `room` defaults to the record's own target (training). When the text alone
        is not enough, the instruction is cut too: the template's framing always stays."""
        if not self.cutoff_len:
            return Fitted(record, False, True)
        prompt, target = self.encode(record)
        room = len(target) + self.eos_extra if room is None else room
        if len(prompt) + room <= self.cutoff_len:
            return Fitted(record, False, True)
        where, text = self._text(record)
        cut = self._cut(record, where, text, room)
        if cut is None:  # even without the text: cut the instruction as well
            bare = self._with_text(record, where, "")
            cut = self._cut(bare, "instruction", bare.get("instruction", ""), room)
        return Fitted(cut, True, True) if cut is not None else Fitted(record, False, False)

    def _cut(self, record: dict, where: str, text: str, room: int) -> dict | None:
        """The longest token prefix of `text` whose record fits, or None if none does."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        over = len(self.encode(record)[0]) + room - self.cutoff_len
        keep = len(ids) - max(over, 1)
        while keep >= 0:
            candidate = self._with_text(record, where, self.tokenizer.decode(
                ids[:keep], skip_special_tokens=False).rstrip("\ufffd") if keep else "")
            over = len(self.encode(candidate)[0]) + room - self.cutoff_len
            if over <= 0:
                return candidate
            if keep == 0:
                return None
            keep = max(keep - over, 0)  # decode/encode round trips can differ by a token: step again
        return None

    def prompt_ids(self, record: dict, room: int) -> tuple[list[int], bool]:
        """Eval prompt ids (fitted with `room` tokens left for the answer) and whether it was cut."""
        ids = self.encode(record)[0]
        if not self.cutoff_len or len(ids) + room <= self.cutoff_len:
            return ids, False
        f = self.fit(record, room)
        ids = self.encode(f.record)[0]
        if not f.fits:  # the template's framing alone leaves no room: cut as LLaMA-Factory does
            ids = ids[: max(self.cutoff_len - room, 1)]
        return ids, f.truncated or not f.fits


# -- training: the fitted copy of a prepared folder ------------------------------------------------


def tokenizer_fingerprint(model_path: str) -> str:
    """What decides token ids without loading anything: the tokenizer files, or the hub id."""
    path = Path(model_path)
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.iterdir()):
            if p.is_file() and (p.name.startswith("tokenizer") or p.name in (
                    "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja")):
                h.update(p.name.encode())
                h.update(p.read_bytes())
    else:
        h.update(model_path.encode())
    return h.hexdigest()[:16]


def fit_key(model_path: str, template: str, cutoff_len: int, split_hashes: dict[str, str],
            prompt_template: str | None) -> str:
    blob = json.dumps([tokenizer_fingerprint(model_path), template, cutoff_len, sorted(split_hashes.items()),
                       prompt_template], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def fit_for_training(recipe, manifest: dict) -> tuple[str, dict]:
    """The folder LLaMA-Factory should read for an sft stage, and what fitting did per split.

    The prepared folder itself when no train/validation row can exceed `train.cutoff_len` (decided
    from byte lengths, without loading a tokenizer); else a fitted copy in
    `<prepared_dir>/fitted-<key>/`, cached by tokenizer, template, cutoff_len and data hashes.
    """
    from ftk.data.records import read_records
    from ftk.data.task import load_task
    from ftk.fileio import staged_dir, write_json

    prepared = Path(recipe.data.prepared_dir)
    cutoff = recipe.train.cutoff_len
    splits = {s: info for s, info in manifest.get("splits", {}).items() if s in ("train", "validation")}
    if recipe.train.stage != "sft" or not splits:
        return str(prepared), {}
    records = {s: read_records(prepared / info["file"]) for s, info in splits.items()}
    if not any(may_exceed(r, cutoff) for recs in records.values() for r in recs):
        return str(prepared), {s: {"rows": len(recs), "truncated": 0, "unfittable": 0}
                               for s, recs in records.items()}
    task = load_task(recipe.task)
    prompt_template = task.prompt(manifest.get("prompt_version"))
    key = fit_key(recipe.model.name_or_path, recipe.model.template, cutoff,
                  {s: info["sha256"] for s, info in splits.items()}, prompt_template)
    out = prepared / f"fitted-{key}"
    if (out / "fit.json").is_file():
        return str(out), json.loads((out / "fit.json").read_text(encoding="utf-8"))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(recipe.model.name_or_path,
                                              trust_remote_code=recipe.model.trust_remote_code)
    prompter = Prompter(tokenizer, load_template(tokenizer, recipe.model.template), cutoff, prompt_template)
    stats, info = {}, {}
    registry = json.loads((prepared / "dataset_info.json").read_text(encoding="utf-8"))
    with staged_dir(out) as stage:
        for split, recs in records.items():
            fitted = [prompter.fit(r) if may_exceed(r, cutoff) else Fitted(r, False, True) for r in recs]
            name = splits[split]["file"]
            with open(stage / name, "w", encoding="utf-8") as fh:
                for f in fitted:
                    fh.write(json.dumps(f.record, ensure_ascii=False) + "\n")
            stats[split] = {"rows": len(recs), "truncated": sum(f.truncated for f in fitted),
                            "unfittable": sum(not f.fits for f in fitted)}
            info[splits[split]["dataset"]] = registry[splits[split]["dataset"]]
        write_json(stage / "dataset_info.json", info)
        write_json(stage / "fit.json", stats)
    return str(out), stats
