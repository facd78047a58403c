"""`ftk export RUN`: merge a run's LoRA adapter into a full model with LLaMA-Factory's export.

The checkpoint is the final model (`last`), a step number, or `best`: the saved checkpoint with the
lowest validation loss in trainer_state.json (S4 picked step 3,750 this way).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from ftk.errors import FtkError
from ftk.fileio import no_library_bars
from ftk.recipe import Recipe
from ftk.train import launch, runs
from ftk.train.screen import print_failure


def eval_losses(model_dir: Path) -> dict[int, float]:
    """step -> eval_loss from the trainer state: the final one, else the newest checkpoint's."""
    states = [p for p in sorted(model_dir.glob("checkpoint-*/trainer_state.json"),
                                key=lambda p: int(p.parent.name.split("-")[1]), reverse=True)]
    final = runs.result_file(model_dir, "trainer_state.json")
    for path in ([final] if final.exists() else []) + states:
        state = json.loads(path.read_text())
        losses = {int(e["step"]): float(e["eval_loss"]) for e in state.get("log_history", []) if "eval_loss" in e}
        if losses:
            return losses
    return {}


def checkpoints(model_dir: Path) -> dict[int, Path]:
    return {int(p.name.split("-")[1]): p for p in model_dir.glob("checkpoint-*")
            if re.fullmatch(r"checkpoint-\d+", p.name) and p.is_dir()}


def pick_checkpoint(model_dir: Path, which: str) -> tuple[Path, str]:
    """(weights folder, description) for `last`, `best` or a step number."""
    ckpts = checkpoints(model_dir)
    if which == "last":
        if (model_dir / "adapter_config.json").exists() or (model_dir / "config.json").exists():
            return model_dir, "final model"
        if not ckpts:
            raise FtkError("no final model and no checkpoints", path=model_dir)
        step = max(ckpts)
        return ckpts[step], f"checkpoint {step}"
    if which == "best":
        losses = eval_losses(model_dir)
        if not losses:
            raise FtkError("no eval_loss in trainer_state.json (train with a validation split and "
                           "`train.eval_steps`)", path=model_dir)
        saved = {s: v for s, v in losses.items() if s in ckpts}
        if not saved:
            raise FtkError(f"no saved checkpoint at an evaluated step (evaluated {sorted(losses)}, saved "
                           f"{sorted(ckpts)}); make save_steps a multiple of eval_steps", path=model_dir)
        step = min(saved, key=lambda s: (saved[s], s))
        return ckpts[step], f"checkpoint {step} (eval_loss {saved[step]:.4f}, lowest of {len(saved)} saved)"
    if not (which.isascii() and which.isdigit()) or int(which) not in ckpts:
        raise FtkError(f"no checkpoint {which!r}; saved: {sorted(ckpts)} (or last, best)", path=model_dir)
    return ckpts[int(which)], f"checkpoint {which}"


def render_export_args(recipe: Recipe, weights: Path, export_dir: Path) -> dict:
    lora = recipe.method.finetuning_type == "lora"
    args = {
        "model_name_or_path": recipe.model.name_or_path if lora else str(weights),
        "template": recipe.model.template,
        "finetuning_type": recipe.method.finetuning_type,
        "trust_remote_code": recipe.model.trust_remote_code,
        "export_dir": str(export_dir),
        "export_size": 5,
        "export_device": "cpu",
        "export_legacy_format": False,
    }
    if lora:
        args["adapter_name_or_path"] = str(weights)
    return args


def export(run_dir: str | Path, *, checkpoint: str = "last", out: str | Path | None = None,
           verbose: bool = False) -> Path:
    """Merge the chosen checkpoint into RUN/export-<checkpoint> (LLaMA-Factory's output: export.log)."""
    run_dir = Path(run_dir)
    manifest, recipe, _ = runs.read_run(run_dir)
    model_dir = Path(manifest.get("model_dir") or run_dir / "model")
    weights, what = pick_checkpoint(model_dir, checkpoint)
    export_dir = Path(out) if out else run_dir / f"export-{checkpoint}"
    if export_dir.exists() and (not export_dir.is_dir() or any(export_dir.iterdir())):
        raise FtkError("export folder exists and is not an empty folder", path=export_dir)
    if recipe.method.trainer == "ftk":
        what_done = export_ftk_model(model_dir, weights, recipe.model.name_or_path, export_dir,
                                     trust_remote_code=recipe.model.trust_remote_code)
        print(f"[ftk] exported {what}: {what_done}", flush=True)
        manifest.setdefault("exports", []).append({"checkpoint": checkpoint, "weights": str(weights), "what": what,
                                                   "export_dir": str(export_dir), "result": what_done})
        runs.write_manifest(run_dir, manifest)
        return export_dir
    cfg = run_dir / f"export-{checkpoint}.yaml"
    cfg.write_text(yaml.safe_dump(render_export_args(recipe, weights, export_dir), sort_keys=False))
    argv = ["llamafactory-cli", "export", str(cfg)]
    log = run_dir / "export.log"
    print(f"[ftk] exporting {what} -> {export_dir}: {launch.shell_quote(argv)} (output: {log})", flush=True)
    rc = launch.run_streaming(argv, log) if verbose else launch.run_logged(argv, log)
    if rc != 0:
        if not verbose:
            print_failure("export", log, rc)
        raise ExportFailed(f"LLaMA-Factory export failed with exit code {rc}; log: {log}", rc)
    manifest.setdefault("exports", []).append({"checkpoint": checkpoint, "weights": str(weights),
                                               "what": what, "export_dir": str(export_dir), "argv": argv})
    runs.write_manifest(run_dir, manifest)
    return export_dir


def export_ftk_model(model_dir: Path, weights: Path, base_model: str, export_dir: Path, *,
                     trust_remote_code: bool = False) -> str:
    """A run of ftk's own trainer: LoRA merged into the base model, head included; full weights as
    they are; prompt tuning's adapter (the base model is unchanged, so there is nothing to merge)."""
    import json
    import shutil

    info = json.loads((model_dir / "ftk_method.json").read_text(encoding="utf-8"))
    staging = export_dir.parent / f".{export_dir.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if info["kind"] == "prompt_tuning":
        for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
            if (weights / name).is_file():
                shutil.copy2(weights / name, staging / name)
        for p in model_dir.glob("*token*"):
            shutil.copy2(p, staging / p.name)
        (staging / "ftk_method.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        result = f"prompt-tuning adapter ({info['num_virtual_tokens']} virtual tokens) for {base_model}"
    else:
        from ftk.train.hf.models import load_head, saveable

        model, tokenizer, _ = load_head(weights, base_model, trust_remote_code=trust_remote_code, device="cpu",
                                        info=info, tokenizer_dir=model_dir)
        lora = hasattr(model, "merge_and_unload")
        if lora:
            model = model.merge_and_unload()
        with no_library_bars():
            model.save_pretrained(staging)
        # Outside ftk the export is read by plain transformers: its tokenizer appends EOS as ftk did.
        saveable(tokenizer, append_eos=info["kind"] == "sequence_classification" and info.get("append_eos", False)
                 ).save_pretrained(staging)
        (staging / "ftk_method.json").write_text(json.dumps(dict(info, finetuning_type="full"), indent=2),
                                                 encoding="utf-8")
        result = f"{'LoRA merged into ' + base_model if lora else 'full weights'} with the {info['kind']} head"
    if export_dir.exists():
        export_dir.rmdir()  # empty (checked before)
    staging.rename(export_dir)
    return result


class ExportFailed(RuntimeError):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def export_gguf(run_dir: str | Path, *, checkpoint: str = "last", outtype: str = "f16", out: str | Path | None = None,
                verbose: bool = False) -> Path:
    """The run's fine-tuned causal LM as one GGUF file + an Ollama Modelfile in RUN/gguf-<checkpoint>/
    (or `out`): the merged model (`ftk export`, reused when already there) written by
    ftk.models.gguf_export, its chat template checked to give the ids ftk trained and evaluated with."""
    import hashlib
    import shutil

    from ftk.fileio import sha256_file, write_json
    from ftk.models.gguf_export import _outtype, ollama_modelfile, write_gguf

    _outtype(outtype)  # an unknown type: one line before any work
    run_dir = Path(run_dir)
    manifest, recipe, _ = runs.read_run(run_dir)
    if recipe.method.trainer == "ftk":
        kind = recipe.method.head if recipe.method.head != "none" else recipe.method.finetuning_type
        raise FtkError(f"a {kind.replace('_', ' ')} model cannot go to GGUF: llama.cpp runs causal language models "
                       "(export without --gguf for a Hugging Face folder)", path=run_dir)
    gguf_dir = Path(out) if out else run_dir / f"gguf-{checkpoint}"
    if gguf_dir.exists() and (not gguf_dir.is_dir() or any(gguf_dir.iterdir())):
        raise FtkError("GGUF folder exists and is not an empty folder", path=gguf_dir)
    merged = run_dir / f"export-{checkpoint}"
    if not (merged / "config.json").is_file():
        merged = export(run_dir, checkpoint=checkpoint, verbose=verbose)
    else:
        print(f"[ftk] using the merged model already exported: {merged}", flush=True)
    from transformers import AutoTokenizer

    from ftk.train.prompts import load_template

    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    template = load_template(tokenizer, recipe.model.template)
    jinja = template._get_jinja_template(tokenizer)
    base = Path(recipe.model.name_or_path)
    hint = (json.loads((base / "ftk-import.json").read_text()).get("tokenizer") or {}).get("pre") \
        if (base / "ftk-import.json").is_file() else None
    stage = gguf_dir.parent / f".{gguf_dir.name}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        name = f"{recipe.name}-{outtype}.gguf"
        print(f"[ftk] writing GGUF ({outtype}): {gguf_dir / name}", flush=True)
        info, rebuilt = write_gguf(merged, stage / name, outtype=outtype, chat_template=jinja, name=recipe.name,
                          pre_hint=hint)
        check = check_prompt_ids(stage / name, rebuilt, tokenizer, template)
        (stage / "Modelfile").write_text(ollama_modelfile(template, tokenizer, name), encoding="utf-8")
        import gguf as gguf_pkg

        from ftk import __version__
        from ftk.models.gguf_import import _version
        write_json(stage / "ftk-export.json", {
            **info, "sha256": sha256_file(stage / name), "bytes": (stage / name).stat().st_size,
            "run": str(run_dir), "checkpoint": checkpoint, "merged_model": str(merged),
            "template": recipe.model.template, "template_sha256": hashlib.sha256(jinja.encode()).hexdigest(),
            "prompt_check": check, "versions": {"ftk": __version__, "gguf": _version(gguf_pkg)}})
        if gguf_dir.exists():
            gguf_dir.rmdir()
        stage.rename(gguf_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    manifest = runs.read_manifest(run_dir)
    manifest.setdefault("exports", []).append({"checkpoint": checkpoint, "gguf": str(gguf_dir / name),
                                               "outtype": outtype, "merged_model": str(merged)})
    runs.write_manifest(run_dir, manifest)
    return gguf_dir / name


PROMPT_PROBES = ("Classify the topic of this article: Stocks rallied 3.5% on Tuesday.",
                 "Is this tweet about a real disaster? Answer yes or no.\n\nForest fire near La Ronge Sask. Canada")


def check_prompt_ids(gguf_file: Path, rebuilt, tokenizer, template) -> dict:
    """The GGUF's chat template, rendered and tokenized by the GGUF's own tokenizer (as llama.cpp does
    for a rendered prompt), must give the prompt ids LLaMA-Factory's template gives (training, ftk eval)."""
    for text in PROMPT_PROBES:
        want, _ = template.encode_oneturn(tokenizer, [{"role": "user", "content": text},
                                                      {"role": "assistant", "content": ""}])
        rendered = rebuilt.apply_chat_template([{"role": "user", "content": text}], tokenize=False)
        got = rebuilt(rendered, add_special_tokens=True).input_ids
        if got != want:
            raise FtkError(f"the exported chat template gives other prompt ids than training did ({len(got)} vs "
                           f"{len(want)} tokens for {text[:30]!r}); not exported", path=gguf_file)
    return {"probes": len(PROMPT_PROBES), "prompt_ids_equal": True}
