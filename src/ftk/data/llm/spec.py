r"""A synthetic-data spec (`ftk synth-data SPEC.yaml`), and the requests it makes.

```yaml
name: agnews_synth
task: agnews                         # built-in task or task YAML (relative to this file)
format: csv                          # the task's raw source format the output is written in
endpoints:                           # OpenAI-compatible; the key is read from the NAMED variable
  - {base_url: "https://api.example.com/v1", model: some-model, api_key_env: EXAMPLE_API_KEY, weight: 2}
  - {base_url: "http://127.0.0.1:8000/v1", model: local, api_key_env: LOCAL_KEY, weight: 1}
seeds: {file: ../data/synth/agnews/train.csv, k: 3}   # k rows shown per request (seeded draw)
template: |                          # {examples} {k} {n} {labels} {label} (the request's label)
  Write {n} new {label} news items like these, separated by ###.
  {examples}
example: "{title} | {description}"  # one seed row as shown in {examples} (raw columns, {label})
split: "###"                         # an answer -> items
item: '^\s*(?P<title>[^|\n]+?)\s*\|\s*(?P<description>.+?)\s*$'   # an item -> raw columns
fields: {label: "{label_raw}"}       # columns not in the item: the request's label
requests: 200
concurrency: 8
temperature: 0.9
max_tokens: 512
seed: 0
near_duplicate_rouge_l: 0.7          # against each other, the seeds and the leakage files
leakage: [../data/synth/agnews/test.csv]
```

Requests are a pure function of the spec and seed: request i draws its endpoint (by weight), its
label and its seed examples from `random.Random(f"{seed}-{i}")`; its cache key hashes the endpoint,
model, messages and sampling settings (never the API key).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
from dataclasses import dataclass
from pathlib import Path

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from ftk.data.rows import Example
from ftk.data.sources import read_source
from ftk.data.task import TaskSpec, load_task
from ftk.errors import FtkError
from ftk.yamlio import read_model

TEMPLATE_FIELDS = {"examples", "k", "n", "labels", "label"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _no_credentials(url: str) -> str:
    """A base_url is written to the screen, the manifest and every cache row: no key may ride in it."""
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ValueError("holds credentials (user:key@host); give the key in the variable api_key_env names")
    secret = [k for k, _ in parse_qsl(parts.query) if re.search(r"key|token|secret|password|sig|auth", k, re.I)]
    if secret:
        raise ValueError(f"holds a credential in its query ({secret[0]}=...); give the key in the variable "
                         "api_key_env names")
    return url


class Endpoint(_Strict):
    base_url: Annotated[str, AfterValidator(_no_credentials)] = Field(pattern=r"^https?://\S+$")
    model: str = Field(min_length=1)
    api_key_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="the NAME of the variable with the key")
    weight: float = Field(1.0, gt=0)


class Seeds(_Strict):
    file: str
    k: int = Field(3, ge=1)
    format: str | None = None


class SynthSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    task: str
    format: str | None = Field(None, description="task source format of the output (default: the seeds')")
    endpoints: list[Endpoint] = Field(min_length=1)
    seeds: Seeds
    template: str
    system: str | None = None
    example: str = Field(description="how a seed row is shown: a format string over its raw columns and {label}")
    split: str = Field("###", min_length=1)
    item: str = Field(description="regular expression with named groups = the raw columns of an item")
    fields: dict[str, str] = Field(default_factory=dict, description="columns not in the item: "
                                   "{label} / {label_raw} (the request's label) or a literal")
    requests: int = Field(ge=1, le=100_000, description="at most 100,000 per spec (split a larger run)")
    items_per_request: int = Field(5, ge=1, description="{n} in the template")
    concurrency: int = Field(4, ge=1)
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(512, ge=1)
    timeout: float = Field(120.0, gt=0, description="seconds between reads of one answer")
    deadline: float | None = Field(None, gt=0, description="seconds for one request in all, retries included "
                                   "(default: timeout x (max_retries + 1))")
    max_retries: int = Field(6, ge=0)
    max_items_per_answer: int = Field(100, ge=1, description="items read from one answer; the rest are counted, not read")
    max_item_chars: int = Field(4000, ge=1, description="a longer item is rejected (too_long)")
    min_items: int = Field(1, ge=0, description="fewer items kept: the run fails (exit 2) with the reasons")
    seed: int = Field(0, ge=0)
    near_duplicate_rouge_l: float | None = Field(0.7, gt=0, le=1)
    leakage: list[str] = Field(default_factory=list, description="files (task raw format) items must not repeat")

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        names = _format_fields(v, "template")
        unknown = sorted(set(names) - TEMPLATE_FIELDS)
        if unknown:
            raise ValueError(f"placeholder {{{unknown[0]}}} is unknown (expected {', '.join(sorted(TEMPLATE_FIELDS))})")
        if "examples" not in names:
            raise ValueError("the template must show the seed examples: {examples}")
        return v

    @field_validator("item")
    @classmethod
    def _item(cls, v: str) -> str:
        try:
            rx = re.compile(v, re.S)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        if not rx.groupindex:
            raise ValueError("needs named groups, one per raw column, e.g. (?P<text>.+)")
        return v

    @model_validator(mode="after")
    def _fields(self) -> SynthSpec:
        for key, value in self.fields.items():
            bad = set(_format_fields(value, f"fields.{key}")) - {"label", "label_raw"}
            if bad:
                raise ValueError(f"fields.{key}: placeholder {{{sorted(bad)[0]}}} is unknown (expected {{label}} or {{label_raw}})")
        return self


def _format_fields(text: str, what: str) -> list[str]:
    try:
        return [n for _, n, _, _ in string.Formatter().parse(text) if n is not None]
    except ValueError as exc:
        raise ValueError(f"{what} is not a valid format string ({exc}); write a literal brace as {{{{ or }}}}") from None


@dataclass
class Loaded:
    spec: SynthSpec
    path: Path
    task: TaskSpec
    fmt: str
    seeds: list[Example]
    seed_rows: list[dict]  # the seed examples' raw columns (for {examples})
    leakage: list[Example]


def _rel(base: Path, p: str) -> str:
    return p if Path(p).is_absolute() else str(base / p)


def load_spec(path: str | Path) -> Loaded:
    """Read and check everything a run needs before it writes or asks anything (keys included)."""
    import os

    path = Path(path)
    spec = read_model(path, SynthSpec, "synthetic-data spec")
    base = path.parent
    try:
        task = load_task(_rel(base, spec.task) if spec.task.endswith((".yaml", ".yml")) else spec.task)
    except FtkError as exc:
        raise (exc if exc.path else FtkError(str(exc), path=path, where="task")) from None
    if not task.is_classification:
        raise FtkError(f"task {task.name!r} is {task.kind}; synthetic data is for classification tasks",
                       path=path, where="task")
    for i, e in enumerate(spec.endpoints):
        if not os.environ.get(e.api_key_env):
            raise FtkError(f"environment variable {e.api_key_env} is not set (it must hold the API key of "
                           f"{e.base_url})", path=path, where=f"endpoints.{i}.api_key_env")
    seeds_res = read_source(task, _rel(base, spec.seeds.file), "train", spec.seeds.format, keep_raw=True)
    if not seeds_res.examples:
        raise FtkError("no usable seed rows", path=_rel(base, spec.seeds.file))
    fmt = spec.format or spec.seeds.format or _format_of(task, Path(_rel(base, spec.seeds.file)))
    if fmt not in task.sources or task.sources[fmt].reader == "hub":
        raise FtkError(f"{fmt!r} is not a local source format of task {task.name!r} (expected one of "
                       f"{', '.join(k for k, s in task.sources.items() if s.reader != 'hub')})", path=path, where="format")
    columns = set(_columns(task, fmt))
    groups = set(re.compile(spec.item, re.S).groupindex)
    extra = (groups | set(spec.fields)) - columns
    if extra:
        raise FtkError(f"{', '.join(sorted(extra))} is not a raw column of format {fmt!r} (columns: "
                       f"{', '.join(_columns(task, fmt))})", path=path, where="item")
    missing = columns - groups - set(spec.fields)
    if missing:
        raise FtkError(f"raw column(s) {', '.join(sorted(missing))} come from neither `item` groups nor `fields`",
                       path=path, where="item")
    seed_rows = [ex.meta.get("raw", {}) for ex in seeds_res.examples]
    try:
        if seed_rows:
            spec.example.format(**shown(seed_rows[0], seeds_res.examples[0].label))
    except (KeyError, IndexError) as exc:
        raise FtkError(f"`example` names {exc} which is not a raw column (columns: {', '.join(_columns(task, fmt))})",
                       path=path, where="example") from None
    leak = [ex for f in spec.leakage for ex in read_source(task, _rel(base, f), "test").examples]
    return Loaded(spec, path, task, fmt, seeds_res.examples, seed_rows, leak)


def shown(raw: dict, label: str) -> dict:
    """A seed row's fields for `example`: its raw columns, {label} = the label name, {label_raw} = the
    raw value."""
    return {**raw, "label_raw": raw.get("label", label), "label": label}


def _format_of(task: TaskSpec, file: Path) -> str:
    from ftk.data.sources import pick_local_spec

    return pick_local_spec(task, file, None)[0]


def _columns(task: TaskSpec, fmt: str) -> list[str]:
    spec = task.sources[fmt]
    if spec.reader in ("csv", "tsv"):
        cols = list(spec.columns or [])
        if not cols:
            cols = sorted({*spec.fields(), *(spec.required or []), *([spec.label_column] if spec.label_column else [])})
        return cols
    if spec.reader == "at_lines":
        return ["text", "label"]
    if spec.reader == "text":
        return ["text"]
    return sorted({*spec.fields(), *(spec.required or []), *([spec.label_column] if spec.label_column else [])})


@dataclass(frozen=True)
class Request:
    index: int
    endpoint: Endpoint
    label: str
    messages: tuple
    key: str


def plan_requests(ld: Loaded) -> list[Request]:
    """Every request of the run: deterministic from the spec and its seed."""
    spec, task = ld.spec, ld.task
    weights = [e.weight for e in spec.endpoints]
    out = []
    for i in range(spec.requests):
        rng = random.Random(f"{spec.seed}-{i}")
        endpoint = rng.choices(spec.endpoints, weights=weights)[0]
        label = task.labels[i % len(task.labels)]
        same = [j for j, ex in enumerate(ld.seeds) if ex.label == label] or list(range(len(ld.seeds)))
        picks = rng.sample(same, min(spec.seeds.k, len(same)))
        examples = "\n".join(spec.example.format(**shown(ld.seed_rows[j], ld.seeds[j].label)) for j in picks)
        text = spec.template.format(examples=examples, k=len(picks), n=spec.items_per_request,
                                    labels=", ".join(task.labels), label=label)
        messages = (({"role": "system", "content": spec.system},) if spec.system else ()) + (
            {"role": "user", "content": text},)
        blob = json.dumps({"base_url": endpoint.base_url, "model": endpoint.model, "messages": messages,
                           "temperature": spec.temperature, "max_tokens": spec.max_tokens, "seed": spec.seed,
                           "index": i}, sort_keys=True)
        out.append(Request(i, endpoint, label, messages, hashlib.sha256(blob.encode()).hexdigest()[:20]))
    return out
