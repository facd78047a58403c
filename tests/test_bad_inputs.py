"""The README's promise on bad input, case by case: exit code 2, exactly one output line that names
the file and the key or line, and no file created or changed.

Each case builds its inputs in a fresh folder, then runs the `ftk` command line in-process (the
same `main` the console script calls) with that folder as the working directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from ftk.cli.main import main

CPU = REPO / "configs" / "agnews_tiny_cpu.yaml"
GOOD_CSV = "".join(f'"{1 + i % 4}","Title {i}","Some description words number {i}"\n' for i in range(40))
AG_TASK = (REPO / "src" / "ftk" / "data" / "tasks" / "agnews.yaml").read_text()


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


def recipe(tmp: Path, extra: str = "", name: str = "r.yaml", base: Path = CPU) -> str:
    """A recipe over local files in tmp (data.csv as train and test), with `extra` YAML merged in
    (mapping by mapping, so `data: {val_size: 5}` keeps the local files)."""
    from ftk.recipe import deep_merge

    (tmp / "data.csv").write_text(GOOD_CSV)
    doc = {"extends": str(base), "name": "bad",
           "data": {"train": str(tmp / "data.csv"), "test": str(tmp / "data.csv"), "prepared_dir": str(tmp / "prepared")},
           "runs_dir": str(tmp / "runs"), "model": {"name_or_path": str(tmp / "model")}}
    try:
        more = yaml.safe_load(extra) if extra else {}
    except yaml.YAMLError:
        more = None
    if isinstance(more, dict):
        (tmp / name).write_text(yaml.safe_dump(deep_merge(doc, more), sort_keys=False))
    else:
        (tmp / name).write_text(yaml.safe_dump(doc, sort_keys=False) + extra)
    return str(tmp / name)


def task_yaml(tmp: Path, replace: tuple[str, str] | None = None, append: str = "", name: str = "t.yaml") -> str:
    text = AG_TASK.replace(*replace) if replace else AG_TASK
    (tmp / name).write_text(text + append)
    return str(tmp / name)


def prep(tmp: Path, task: str, data: str, *extra: str) -> list[str]:
    return ["prepare", "--task", task, "--test", data, "--out", str(tmp / "out"), *extra]


def fake_run(tmp: Path) -> Path:
    """A run directory with a manifest, prepared data and a (never loaded) model folder."""
    from ftk.data.prepare import prepare_recipe
    from ftk.recipe import load_recipe

    r = load_recipe(recipe(tmp))
    prepare_recipe(r)
    run = tmp / "runs" / "bad-1"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    (run / "manifest.json").write_text(json.dumps({"recipe": r.model_dump(mode="json"), "status": "finished",
                                                   "model_dir": str(run / "model")}))
    return run


def W(text: str):  # write a file and return its path (for cases)
    def make(tmp: Path, name: str = "f.csv") -> str:
        (tmp / name).write_text(text)
        return str(tmp / name)
    return make


# Each case: (id, setup(tmp) -> argv, substrings the one line must contain)
CASES = [
    # --- recipe files ------------------------------------------------------------------------
    ("recipe-missing", lambda t: ["train", str(t / "nope.yaml")], ["nope.yaml", "not found"]),
    ("recipe-is-dir", lambda t: ["train", str(t)], ["not a regular file"]),
    ("recipe-binary", lambda t: ((t / "b.yaml").write_bytes(b"name: x\x00\x01"), ["train", str(t / "b.yaml")])[1],
     ["b.yaml", "binary"]),
    ("recipe-latin1", lambda t: ((t / "l.yaml").write_bytes(b"name: caf\xe9\n"), ["train", str(t / "l.yaml")])[1],
     ["l.yaml:1", "not UTF-8"]),
    ("recipe-yaml-syntax", lambda t: ((t / "s.yaml").write_text("name: x\ntrain: {a: 1\n"),
                                      ["train", str(t / "s.yaml")])[1], ["s.yaml:", "not valid YAML"]),
    ("recipe-list", lambda t: ((t / "l.yaml").write_text("- a\n- b\n"), ["train", str(t / "l.yaml")])[1],
     ["l.yaml", "mapping"]),
    ("recipe-empty", lambda t: ((t / "e.yaml").write_text(""), ["train", str(t / "e.yaml")])[1],
     ["e.yaml", "mapping"]),
    ("recipe-nonstring-key", lambda t: ((t / "k.yaml").write_text("1: x\n"), ["train", str(t / "k.yaml")])[1],
     ["k.yaml", "keys must be strings"]),
    ("unknown-top-key", lambda t: ["train", recipe(t, "bogus: 1\n")], ["r.yaml", "`bogus`: unknown key"]),
    ("unknown-nested-key", lambda t: ["train", recipe(t, "train: {learnin_rate: 1.0e-3}\n")],
     ["r.yaml", "`train.learnin_rate`: unknown key"]),
    ("missing-name", lambda t: ((t / "n.yaml").write_text("task: agnews\ndata: {prepared_dir: p}\nmodel: {name_or_path: m}\n"),
                                ["train", str(t / "n.yaml")])[1], ["n.yaml", "`name`: required key is missing"]),
    ("missing-task", lambda t: ((t / "n.yaml").write_text("name: x\ndata: {prepared_dir: p}\nmodel: {name_or_path: m}\n"),
                                ["train", str(t / "n.yaml")])[1], ["n.yaml", "`task`: required key"]),
    ("missing-prepared-dir", lambda t: ((t / "n.yaml").write_text("name: x\ntask: agnews\ndata: {}\nmodel: {name_or_path: m}\n"),
                                        ["train", str(t / "n.yaml")])[1], ["`data.prepared_dir`: required"]),
    ("name-dotdot", lambda t: ["train", recipe(t, "name: ../../etc\n")], ["r.yaml", "`name`", "not a valid run name"]),
    ("name-absolute", lambda t: ["train", recipe(t, "name: /tmp/x\n")], ["`name`", "not a valid run name"]),
    ("name-space", lambda t: ["train", recipe(t, "name: my run\n")], ["`name`", "not a valid run name"]),
    ("lr-negative", lambda t: ["train", recipe(t, "train: {learning_rate: -1.0e-3}\n")],
     ["`train.learning_rate`", "greater than 0", "-0.001"]),
    ("lr-zero", lambda t: ["train", recipe(t, "train: {learning_rate: 0}\n")], ["`train.learning_rate`"]),
    ("epochs-negative", lambda t: ["train", recipe(t, "train: {num_train_epochs: -2}\n")], ["`train.num_train_epochs`"]),
    ("batch-zero", lambda t: ["train", recipe(t, "train: {per_device_train_batch_size: 0}\n")],
     ["`train.per_device_train_batch_size`"]),
    ("gradacc-zero", lambda t: ["train", recipe(t, "train: {gradient_accumulation_steps: 0}\n")],
     ["`train.gradient_accumulation_steps`"]),
    ("max-samples-zero", lambda t: ["prepare", recipe(t, "data: {max_samples: {train: 0}}\n")],
     ["`data.max_samples`", ">= 1"]),
    ("max-samples-negative", lambda t: ["train", recipe(t, "data: {max_samples: {test: -5}}\n")], ["`data.max_samples`"]),
    ("max-samples-bad-split", lambda t: ["prepare", recipe(t, "data: {max_samples: {trian: 5}}\n")],
     ["`data.max_samples.trian`", "'train', 'validation' or 'test'"]),
    ("max-steps-zero", lambda t: ["train", recipe(t, "train: {max_steps: 0}\n")], ["`train.max_steps`"]),
    ("warmup-ratio", lambda t: ["train", recipe(t, "train: {warmup_ratio: 1.5}\n")], ["`train.warmup_ratio`"]),
    ("lora-dropout", lambda t: ["train", recipe(t, "method: {finetuning_type: lora, lora_dropout: 1.0}\n")],
     ["`method.lora_dropout`"]),
    ("cutoff-zero", lambda t: ["train", recipe(t, "train: {cutoff_len: 0}\n")], ["`train.cutoff_len`"]),
    ("nproc-zero", lambda t: ["train", recipe(t, "distributed: {nproc_per_node: 0}\n")],
     ["`distributed.nproc_per_node`"]),
    ("nnodes-zero", lambda t: ["train", recipe(t, "distributed: {nnodes: 0}\n")], ["`distributed.nnodes`"]),
    ("port-range", lambda t: ["train", recipe(t, "distributed: {master_port: 70000}\n")], ["`distributed.master_port`"]),
    ("deepspeed-preset", lambda t: ["train", recipe(t, "distributed: {deepspeed: z4}\n")], ["`distributed.deepspeed`"]),
    ("deepspeed-config-missing", lambda t: ["train", recipe(t, f"distributed: {{deepspeed_config: {t / 'ds.json'}}}\n")],
     ["r.yaml", "`distributed.deepspeed_config`", "ds.json not found"]),
    ("deepspeed-config-not-json", lambda t: ((t / "ds.json").write_text("{oops"), ["train", recipe(
        t, f"distributed: {{deepspeed_config: {t / 'ds.json'}}}\n")])[1], ["`distributed.deepspeed_config`", "not a DeepSpeed JSON"]),
    ("deepspeed-both", lambda t: ((t / "ds.json").write_text("{}"), ["train", recipe(
        t, f"distributed: {{deepspeed: z2, deepspeed_config: {t / 'ds.json'}}}\n")])[1], ["set only one of"]),
    ("slurm-partition-newline", lambda t: ["train", recipe(t, 'distributed: {slurm: {partition: "gpu\\nrm -rf ~"}}\n'),
                                           "--slurm"], ["`distributed.slurm.partition`", "not a valid SLURM partition"]),
    ("slurm-account-semicolon", lambda t: ["train", recipe(t, 'distributed: {slurm: {account: "me;id"}}\n')],
     ["`distributed.slurm.account`"]),
    ("slurm-time-word", lambda t: ["train", recipe(t, "distributed: {slurm: {time: tomorrow}}\n")],
     ["`distributed.slurm.time`"]),
    ("slurm-extra-shell", lambda t: ["train", recipe(t, 'distributed: {slurm: {extra_sbatch: ["--qos=high; rm -rf /"]}}\n')],
     ["`distributed.slurm.extra_sbatch.0`", "not a valid sbatch option"]),
    ("slurm-extra-newline", lambda t: ["validate", recipe(t, 'distributed: {slurm: {extra_sbatch: ["--qos=a\\n#x"]}}\n')],
     ["`distributed.slurm.extra_sbatch.0`"]),
    ("eval-split", lambda t: ["train", recipe(t, "eval: {split: dev}\n")], ["`eval.split`"]),
    ("eval-batch-zero", lambda t: ["train", recipe(t, "eval: {batch_size: 0}\n")], ["`eval.batch_size"]),
    ("eval-limit-negative", lambda t: ["train", recipe(t, "eval: {limit: -1}\n")], ["`eval.limit`"]),
    ("eval-mode", lambda t: ["train", recipe(t, "eval: {mode: chose}\n")], ["`eval.mode`"]),
    ("precision", lambda t: ["train", recipe(t, "train: {precision: bf32}\n")], ["`train.precision`"]),
    ("finetuning-type", lambda t: ["train", recipe(t, "method: {finetuning_type: qlora}\n")], ["`method.finetuning_type`"]),
    ("quant-without-lora", lambda t: ["train", recipe(t, "method: {quantization_bit: 4}\n")], ["`method.quantization_bit`"]),
    ("eval-steps-no-val", lambda t: ["train", recipe(t, "train: {eval_steps: 10}\n")], ["`train.eval_steps`"]),
    ("unknown-task", lambda t: ["train", recipe(t, "task: agnewz\n")], ["r.yaml", "`task`", "did you mean 'agnews'"]),
    ("task-file-missing", lambda t: ["train", recipe(t, f"task: {t / 'nope.yaml'}\n")], ["r.yaml", "`task`", "does not exist"]),
    ("prompt-version", lambda t: ["train", recipe(t, "data: {prompt_version: v9}\n")], ["`data.prompt_version`", "v9"]),
    ("source-format", lambda t: ["train", recipe(t, "data: {source_format: parquet}\n")], ["`data.source_format`"]),
    ("train-file-missing", lambda t: ["train", recipe(t, f"data: {{train: {t / 'gone.csv'}}}\n")],
     ["gone.csv", "data file not found"]),
    ("train-is-dir", lambda t: ["prepare", recipe(t, f"data: {{train: {t}}}\n")], ["not a file"]),
    ("train-binary", lambda t: ((t / "bin.csv").write_bytes(b"\x00\x01\x02"), ["train", recipe(
        t, f"data: {{train: {t / 'bin.csv'}}}\n")])[1], ["bin.csv", "binary"]),
    ("extends-missing", lambda t: ((t / "x.yaml").write_text("extends: nope.yaml\nname: x\n"),
                                   ["train", str(t / "x.yaml")])[1], ["x.yaml", "extends", "not found"]),
    ("extends-cycle", lambda t: ((t / "a.yaml").write_text("extends: b.yaml\n"), (t / "b.yaml").write_text("extends: a.yaml\n"),
                                 ["train", str(t / "a.yaml")])[2], ["cycle"]),
    ("alias-bomb-in-stages", lambda t: ((t / "bomb.yaml").write_text(
        "name: x\ntask: agnews\ndata: {prepared_dir: p}\nmodel: {name_or_path: m}\nstages:\n  - name: a\n    train:\n"
        "      a: &a [x, x, x, x, x, x, x, x, x, x]\n      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n      f: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"),
        ["train", str(t / "bomb.yaml")])[1], ["bomb.yaml: stages.0.train.f:", "aliases expand"]),
    ("alias-recursive", lambda t: ((t / "rec.yaml").write_text("a: &a [*a]\n"), ["validate", str(t / "rec.yaml")])[1],
     ["rec.yaml"]),
    ("stage-bad-key", lambda t: ["train", recipe(t, "stages:\n  - {name: s1, train: {learnig_rate: 1}}\n")],
     ["r.yaml", "stage 's1'", "`train.learnig_rate`: unknown key"]),
    ("stage-bad-name", lambda t: ["train", recipe(t, "stages:\n  - {name: 'a b'}\n")], ["`stages.0.name`"]),
    ("template-typo", lambda t: ["train", recipe(t, "model: {template: llama33}\n")],
     ["`model.template`", "did you mean 'llama3'"]),
    ("model-path-missing", lambda t: ["train", recipe(t, "model: {name_or_path: ./models/nope, tiny: null}\n")],
     ["`model.name_or_path`", "not found"]),
    ("adapter-missing", lambda t: ["train", recipe(t, "method: {finetuning_type: lora}\nmodel: {adapter_name_or_path: ./ad/x}\n")],
     ["`model.adapter_name_or_path`"]),
    ("val-size-zero", lambda t: ["train", recipe(t, "data: {val_size: 0}\n")], ["`data.val_size`"]),
    ("val-size-too-big", lambda t: ["prepare", recipe(t, "data: {val_size: 5000, test: null}\n")],
     ["r.yaml", "data.val_size", "leaves no rows"]),
    ("val-size-and-validation", lambda t: ["prepare", recipe(t, f"data: {{val_size: 0.1, validation: {t / 'data.csv'}}}\n")],
     ["data.val_size", "also given"]),
    ("trust-remote-code-word", lambda t: ["train", recipe(t, "model: {trust_remote_code: maybe}\n")],
     ["`model.trust_remote_code`"]),
    ("override-no-equals", lambda t: ["train", recipe(t), "train.learning_rate"], ["not of the form key=value"]),
    ("override-through-scalar", lambda t: ["train", recipe(t), "name.x=1"], ["`name` is not a mapping"]),
    ("runs-dir-is-file", lambda t: ((t / "runsfile").write_text("x"), ["train", recipe(t, f"runs_dir: {t / 'runsfile'}\n")])[1],
     ["`runs_dir`"]),
    ("tiny-without-local-train", lambda t: ["train", recipe(t, "data: {train: hub:fancyzhx/ag_news:train}\n")],
     ["`model.tiny`"]),
    ("choice-on-ner", lambda t: ["train", recipe(t, "task: bionlp2004\neval: {mode: choice}\n")], ["`eval.mode`"]),
    ("pt-with-classification", lambda t: ["train", recipe(t, "train: {stage: pt}\n")], ["`train.stage`"]),
    ("neat-packing-pt", lambda t: ["train", recipe(t, "train: {packing: neat, stage: pt}\n")], ["`train.packing`"]),
    ("packing-word", lambda t: ["train", recipe(t, "train: {packing: tight}\n")], ["`train.packing`"]),
    # --- task YAMLs --------------------------------------------------------------------------
    ("task-yaml-syntax", lambda t: prep(t, task_yaml(t, append="labels: [a\n"), W(GOOD_CSV)(t)), ["t.yaml:", "not valid YAML"]),
    ("task-binary", lambda t: ((t / "t.yaml").write_bytes(b"\x00name"), prep(t, str(t / "t.yaml"), W(GOOD_CSV)(t)))[1],
     ["t.yaml", "binary"]),
    ("task-unknown-key", lambda t: prep(t, task_yaml(t, append="colour: red\n"), W(GOOD_CSV)(t)), ["t.yaml", "`colour`"]),
    ("task-kind", lambda t: prep(t, task_yaml(t, ("kind: classification", "kind: regression")), W(GOOD_CSV)(t)),
     ["t.yaml", "`kind`"]),
    ("task-one-label", lambda t: prep(t, task_yaml(t, ("labels: [World, Sports, Business, Sci/Tech]", "labels: [World]")),
                                      W(GOOD_CSV)(t)), ["t.yaml", "at least 2 labels"]),
    ("task-label-map-value", lambda t: prep(t, task_yaml(t, ('"1": World', '"1": Wrold')), W(GOOD_CSV)(t)),
     ["t.yaml", "sources.csv.label_map", "'Wrold' is not one of the labels"]),
    ("task-label-column", lambda t: prep(t, task_yaml(t, ("label_column: label\n    label_map: {\"1\"", "label_column: lable\n    label_map: {\"1\"")),
                                         W(GOOD_CSV)(t)), ["t.yaml", "sources.csv.label_column", "'lable'", "did you mean 'label'"]),
    ("task-input-column", lambda t: prep(t, task_yaml(t, ('input: "{title} {description}"', 'input: "{title} {body}"')),
                                         W(GOOD_CSV)(t)), ["t.yaml", "sources.csv.input", "'body'"]),
    ("task-required-typo", lambda t: prep(t, task_yaml(t, ("required: [title]", "required: [titel]")), W(GOOD_CSV)(t)),
     ["t.yaml", "sources.csv.required", "'titel'"]),
    ("task-id-column", lambda t: prep(t, task_yaml(t, ("required: [title]", "required: [title]\n    id_column: ticket")),
                                      W(GOOD_CSV)(t)), ["t.yaml", "sources.csv.id_column"]),
    ("task-step", lambda t: prep(t, task_yaml(t, ("steps: [strip, number_or_label, take_first]", "steps: [strip, number_or_lable]")),
                                 W(GOOD_CSV)(t)), ["t.yaml", "`extraction.steps", "unknown extraction step 'number_or_lable'"]),
    ("task-regex-step", lambda t: prep(t, task_yaml(t, ("steps: [strip, number_or_label, take_first]", "steps: ['regex:(unclosed']")),
                                       W(GOOD_CSV)(t)), ["t.yaml", "not a valid regular expression"]),
    ("task-metric", lambda t: prep(t, task_yaml(t, ("metrics: [accuracy, macro_f1]", "metrics: [acuracy]")), W(GOOD_CSV)(t)),
     ["t.yaml", "'acuracy' is not a classification metric"]),
    ("task-prompt-placeholder", lambda t: prep(t, task_yaml(t, ('v1: "Classify', 'v1: "{text} Classify')), W(GOOD_CSV)(t)),
     ["t.yaml", "placeholder {text} is unknown"]),
    ("task-prompt-default", lambda t: prep(t, task_yaml(t, ("default: v2", "default: v7")), W(GOOD_CSV)(t)),
     ["t.yaml", "prompts.default 'v7'"]),
    ("task-target-placeholder", lambda t: prep(t, task_yaml(t, ('target: "{index}: {label}"', 'target: "{name}"')),
                                               W(GOOD_CSV)(t)), ["t.yaml", "target: placeholder {name}"]),
    ("task-encoding", lambda t: prep(t, task_yaml(t, ("    required: [title]\n  hub", "    required: [title]\n    encoding: utf-9\n  hub")),
                                     W(GOOD_CSV)(t)), ["t.yaml", "unknown text encoding 'utf-9'"]),
    ("task-label-map-typo-majority", lambda t: prep(t, task_yaml(t, ('label_map: {"1": World, "2": Sports, "3": Business, "4": Sci/Tech}',
                                                                     'label_map: {"01": World, "02": Sports, "03": Business, "04": Sci/Tech}')),
                                                    W(GOOD_CSV)(t)), ["t.yaml", "sources.csv.label_map", "'1' x10"]),
    ("task-label-map-typo-skip", lambda t: prep(t, task_yaml(t, ('"2": Sports', '"5": Sports')), W(GOOD_CSV)(t),
                                                "--skip-malformed", "--max-malformed", "0.5"),
     ["f.csv:2", "would leave no 'Sports' rows"]),
    # --- data files ---------------------------------------------------------------------------
    ("class-out-of-range", lambda t: prep(t, "agnews", W('"1","a","b"\n"5","c","d"\n' + GOOD_CSV)(t)),
     ["f.csv:2", "'5' is not one of 1, 2, 3, 4"]),
    ("wrong-column-count", lambda t: prep(t, "agnews", W(GOOD_CSV + '"1","only two"\n')(t)),
     ["f.csv:41", "expected 3 columns"]),
    ("unterminated-quote", lambda t: prep(t, "agnews", W('"1","a","b"\n"2","open,c\n' + GOOD_CSV)(t)),
     ["f.csv:2", "unterminated quote"]),
    ("unterminated-quote-at-eof", lambda t: prep(t, "agnews", W(GOOD_CSV + '"1","tail","x\n')(t)),
     ["f.csv:41", "runs to the end of the file"]),
    ("undecodable-row", lambda t: ((t / "f.csv").write_bytes(GOOD_CSV.encode() + b'"1","caf\xe9","x"\n'),
                                   prep(t, "agnews", str(t / "f.csv")))[1], ["f.csv:41", "not valid utf-8"]),
    ("empty-file", lambda t: prep(t, "agnews", W("")(t)), ["f.csv", "no usable rows"]),
    ("all-empty-titles", lambda t: prep(t, "agnews", W('"1","","x"\n"2","","y"\n')(t)), ["f.csv", "no usable rows", "empty 2"]),
    ("skip-over-limit", lambda t: prep(t, "agnews", W('"9","a","b"\n' * 3 + GOOD_CSV)(t), "--skip-malformed"),
     ["f.csv:1", "more than --max-malformed 1%"]),
    ("jsonl-not-json", lambda t: prep(t, "shopbench", W('{"task_type": "generation"\n')(t, "s.json")), ["s.json:1", "not valid JSON"]),
    ("at-lines-no-separator", lambda t: prep(t, "financial_phrasebank",
                                             W("good text@positive\nno separator here\n" + "x@neutral\n" * 30)(t, "fpb.txt")),
     ["fpb.txt:2", "no '@' separator"]),
    ("iob2-no-tab", lambda t: prep(t, "bionlp2004", W("IL-2\tB-protein\ngene\n\nx\tO\n")(t, "n.iob2")), ["n.iob2:2", "token<TAB>tag"]),
    ("out-is-file", lambda t: ((t / "outfile").write_text("x"), ["prepare", "--task", "agnews", "--test", W(GOOD_CSV)(t),
                                                                 "--out", str(t / "outfile")])[1], ["outfile", "not a folder"]),
    ("out-is-cwd", lambda t: ["prepare", "--task", "agnews", "--test", W(GOOD_CSV)(t), "--out", "."],
     ["contains the current directory"]),
    ("out-foreign-folder", lambda t: ((t / "mine").mkdir(), (t / "mine" / "thesis.txt").write_text("x"),
                                      ["prepare", "--task", "agnews", "--test", W(GOOD_CSV)(t), "--out", str(t / "mine")])[2],
     ["mine", "holds other files"]),
    ("corrupt-dataset-info", lambda t: ((t / "out").mkdir(), (t / "out" / "dataset_info.json").write_text("{bad"),
                                        prep(t, "agnews", W(GOOD_CSV)(t)))[2], ["dataset_info.json", "not valid JSON"]),
    ("corrupt-manifest", lambda t: ((t / "out").mkdir(), (t / "out" / "manifest.json").write_text("[1,"),
                                    prep(t, "agnews", W(GOOD_CSV)(t)))[2], ["manifest.json", "not valid JSON"]),
    # --- command-line misuse ------------------------------------------------------------------
    ("prepare-nothing", lambda t: ["prepare"], ["give a recipe"]),
    ("prepare-no-sources", lambda t: ["prepare", "--task", "agnews", "--out", str(t / "o")], ["no data sources"]),
    ("prepare-samples-word", lambda t: prep(t, "agnews", W(GOOD_CSV)(t), "--max-samples", "test=abc"), ["--max-samples"]),
    ("prepare-samples-split", lambda t: prep(t, "agnews", W(GOOD_CSV)(t), "--max-samples", "dev=5"), ["--max-samples", "dev=5"]),
    ("prepare-samples-zero", lambda t: prep(t, "agnews", W(GOOD_CSV)(t), "--max-samples", "test=0"), ["--max-samples"]),
    ("prepare-val-size-negative", lambda t: prep(t, "agnews", W(GOOD_CSV)(t), "--val-size", "-1"), ["--val-size"]),
    ("prepare-strategy", lambda t: prep(t, "agnews", W(GOOD_CSV)(t), "--sample-strategy", "random"), ["--sample-strategy"]),
    ("prepare-max-malformed", lambda t: prep(t, "agnews", W(GOOD_CSV)(t), "--max-malformed", "2"), ["--max-malformed"]),
    ("prepare-unknown-task", lambda t: prep(t, "agnewz", W(GOOD_CSV)(t)), ["--task", "did you mean 'agnews'"]),
    ("prepare-format", lambda t: prep(t, "agnews", W(GOOD_CSV)(t), "--format", "xml"), ["f.csv", "no source format 'xml'"]),
    ("eval-missing-run", lambda t: ["eval", str(t / "nope")], ["nope", "run directory not found"]),
    ("eval-prepared-folder", lambda t: (fake_run(t), ["eval", str(t / "prepared")])[1],
     ["prepared", "prepared-data folder"]),
    ("eval-limit-zero", lambda t: ["eval", str(fake_run(t)), "--limit", "0"], ["--limit"]),
    ("eval-limit-negative", lambda t: ["eval", str(fake_run(t)), "--limit", "-1"], ["--limit"]),
    ("eval-batch-zero", lambda t: ["eval", str(fake_run(t)), "--batch-size", "0"], ["--batch-size"]),
    ("eval-mode", lambda t: ["eval", str(fake_run(t)), "--mode", "foo"], ["--mode 'foo'"]),
    ("eval-engine", lambda t: ["eval", str(fake_run(t)), "--engine", "onnx"], ["--engine 'onnx'"]),
    ("eval-split", lambda t: ["eval", str(fake_run(t)), "--split", "dev"], ["--split 'dev'"]),
    ("eval-split-absent", lambda t: ["eval", str(fake_run(t)), "--split", "validation"], ["manifest.json", "no 'validation' split"]),
    ("eval-out-is-file", lambda t: ((t / "o.txt").write_text("x"), ["eval", str(fake_run(t)), "--out", str(t / "o.txt")])[1],
     ["o.txt", "not a folder"]),
    ("eval-run-no-model", lambda t: (lambda r: ((r / "model" / "config.json").unlink(), ["eval", str(r)])[1])(fake_run(t)),
     ["model", "no trained model"]),
    ("predictions-without-task", lambda t: ["eval", "--predictions", W("{}")(t, "p.jsonl"), "--out", str(t / "o")],
     ["--predictions needs --task"]),
    ("predictions-unknown-task", lambda t: ["eval", "--predictions", W('{"id": "a", "predict": "x"}\n')(t, "p.jsonl"),
                                            "--task", "nope", "--out", str(t / "o")], ["--task", "unknown task 'nope'"]),
    ("predictions-missing", lambda t: ["eval", "--predictions", str(t / "p.jsonl"), "--task", "agnews", "--out", str(t / "o")],
     ["p.jsonl", "not found"]),
    ("predictions-not-json", lambda t: ["eval", "--predictions", W('{"id": 1, "predict": "x"}\nnot json\n')(t, "p.jsonl"),
                                        "--task", "agnews", "--out", str(t / "o")], ["p.jsonl:2", "not valid JSON"]),
    ("predictions-out-file", lambda t: ((t / "o").write_text("x"), ["eval", "--predictions", W('{"label": "World", "predict": "x"}\n')(t, "p.jsonl"),
                                                                    "--task", "agnews", "--out", str(t / "o")])[1], ["not a folder"]),
    ("predictions-task-bad-step", lambda t: ["eval", "--predictions", W('{"label": "World", "predict": "x"}\n')(t, "p.jsonl"), "--task",
                                             task_yaml(t, ("steps: [strip, number_or_label, take_first]", "steps: [strip, guess]")),
                                             "--out", str(t / "o")], ["t.yaml", "unknown extraction step 'guess'"]),
    ("export-not-run", lambda t: ["export", str(t)], ["not a run directory"]),
    ("export-bad-checkpoint", lambda t: ["export", str(fake_run(t)), "--checkpoint", "foo"], ["no checkpoint 'foo'"]),
    ("resume-prepared-folder", lambda t: (fake_run(t), ["train", "--resume", str(t / "prepared")])[1], ["prepared-data folder"]),
    ("resume-missing", lambda t: ["train", "--resume", str(t / "gone")], ["gone", "not found"]),
    ("compare-not-evals", lambda t: ["compare", str(t), str(t)], ["no metrics.json"]),
    ("compare-corrupt-metrics", lambda t: ((t / "e").mkdir(), (t / "e" / "metrics.json").write_text("{"), ["compare", str(t / "e"), str(t / "e")])[2],
     ["metrics.json", "not valid JSON"]),
    ("unknown-command", lambda t: ["trian"], ["No such command 'trian'"]),
    ("unknown-option", lambda t: ["train", "--fast"], ["No such option"]),
    ("tasks-show-unknown", lambda t: ["tasks", "show", "agnewz"], ["unknown task 'agnewz'"]),
    ("tiny-model-text-missing", lambda t: ["tiny-model", str(t / "m"), "--text", str(t / "none.txt")], ["none.txt", "not found"]),
    ("runs-missing", lambda t: ["runs", str(t / "nope")], ["nope", "runs folder not found"]),
    ("validate-missing", lambda t: ["validate", str(t / "v.yaml")], ["v.yaml", "not found"]),
    ("virtual-tokens-huge", lambda t: ["validate", recipe(t, "method: {finetuning_type: prompt_tuning, "
                                       "num_virtual_tokens: 1000000}\n")], ["`method.num_virtual_tokens` 1000000"]),
    ("virtual-tokens-fill-cutoff", lambda t: ["train", recipe(t, "method: {finetuning_type: prompt_tuning, "
                                              "num_virtual_tokens: 256}\ntrain: {cutoff_len: 256}\n")],
     ["`method.num_virtual_tokens` 256", "`train.cutoff_len` 256"]),
    ("class-weights-inf", lambda t: ["validate", recipe(t, "method: {head: sequence_classification, finetuning_type: "
                                     "lora, class_weights: [.inf, 1.0]}\n")], ["`method.class_weights.0`", "finite"]),
    ("runs-dir-newline", lambda t: ["validate", recipe(t, 'runs_dir: "runs\\nx"\n')], ["`runs_dir`", "folder path"]),
    ("checkpoints-superscript", lambda t: (lambda run: ((run / "model" / "checkpoint-2").mkdir(),
                                                        ["eval", str(run), "--checkpoints", "\u00b2"])[1])(fake_run(t)),
     ["--checkpoints '\u00b2'", "expected all or steps"]),
    ("symlink-loop-out", lambda t: ((t / "a").symlink_to(t / "b"), (t / "b").symlink_to(t / "a"),
                                    prep(t, "agnews", W(GOOD_CSV)(t, "d.csv"))[:-2] + ["--out", str(t / "a")])[2],
     ["a symlink loop"]),
    ("eval-base-model-missing", lambda t: ["eval", recipe(t, "model: {name_or_path: someone/not-cached-model, "
                                                            "tiny: null}\n"), "--base"],
     ["`model.name_or_path` 'someone/not-cached-model': not a local folder"]),
    ("out-is-a-file", lambda t: ((t / "f").write_text("x"), ["synth", str(t / "f" / "sub")])[1],
     ["exists and is not a folder"]),
]


@pytest.mark.parametrize("setup, expected", [(s, e) for _, s, e in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(setup, expected, tmp_path, monkeypatch, capfd):
    work = tmp_path / "w"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = setup(work)
    before = snapshot(work)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert exc.value.code == 2, (out, err)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines[0]
    for part in expected:
        assert part in lines[0], (part, lines[0])
    assert snapshot(work) == before


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 80
