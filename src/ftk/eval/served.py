"""`ftk eval --engine openai`: a model behind any OpenAI-compatible server (llama.cpp, vLLM, Ollama, a
hosted API) answers the recipe's prompts; the answers go through the same extraction and metrics.

Which endpoint: when the recipe's tokenizer is here (a local model folder, or one in the Hugging Face
cache), ftk renders each prompt itself, exactly as for its own engine (LLaMA-Factory's template, the
record fitted to cutoff_len, in-context examples as earlier turns), and sends the text to the
*completions* endpoint, so a server with the same tokenizer sees the same prompt ids; the server's
`usage.prompt_tokens` is compared with ftk's count for every item. Otherwise (a hosted model) the task
prompt goes to the *chat* endpoint as a user turn, and the server applies its own template. Which one
was used is in metrics.json (`served.api`).

Requests: greedy (temperature 0), bounded concurrency, the `openai` client's retries with backoff for
429 / 5xx / timeouts / resets, a malformed answer asked again; every answer appended to
predictions.jsonl at once (fsync'd), so an interrupted or partly failed eval asks only for the rest
next time. A request that still fails costs its item (counted wrong, as invalid, with its reason in
metrics.json; the command exits 1 after writing the reports); 401 / 403 / 404 stop the run at once.
The API key is read from the environment variable named by --api-key-env, never written anywhere.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ftk.data.records import user_content
from ftk.data.task import TaskSpec
from ftk.errors import FtkError
from ftk.eval.predictions import PredictionsFile, base_row

APIS = ("auto", "completions", "chat")
NO_KEY = "none"  # local servers take any key; the openai client needs one


@dataclass(frozen=True)
class ServedModel:
    base_url: str
    model: str
    api_key_env: str | None = None
    api: str = "auto"
    concurrency: int = 4
    timeout: float = 120.0
    max_retries: int = 2

    def api_key(self) -> str:
        return os.environ.get(self.api_key_env, "") if self.api_key_env else NO_KEY


def check_served(s: ServedModel) -> None:
    """Options of a served model, checked before anything is loaded or written."""
    parts = urlsplit(s.base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FtkError(f"--base-url {s.base_url!r}: expected http(s)://HOST[:PORT]/v1")
    if parts.username or parts.password or "key" in parts.query.lower() or "token" in parts.query.lower():
        raise FtkError("--base-url carries a credential: give the key through an environment variable "
                       "(--api-key-env VAR) so that it is written nowhere")
    if not s.model.strip():
        raise FtkError("--model: the served model's name is empty")
    if s.api not in APIS:
        raise FtkError(f"--api {s.api!r}: expected {', '.join(APIS)}")
    if s.api_key_env is not None and not os.environ.get(s.api_key_env):
        raise FtkError(f"--api-key-env {s.api_key_env}: the variable is not set (export it first)")


def local_tokenizer(model_path: str, *, trust_remote_code: bool = False):
    """The recipe's tokenizer when it is here (a folder, or the Hugging Face cache); else None."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError):
        return None


def resolve_api(s: ServedModel, model_path: str, trust_remote_code: bool = False):
    """(api, tokenizer or None): completions where ftk can render the prompts itself."""
    tok = local_tokenizer(model_path, trust_remote_code=trust_remote_code) if s.api != "chat" else None
    if s.api == "completions" and tok is None:
        raise FtkError(f"--api completions: ftk renders the prompts with the recipe's tokenizer, and {model_path!r} "
                       "has none here (use --api chat)")
    return ("completions" if tok is not None else "chat"), tok


@dataclass
class Request:
    id: str
    prompt: str | None  # completions: the rendered prompt text
    messages: list[dict] | None  # chat
    n_ids: int | None  # ftk's prompt token count (completions)
    truncated: bool


def build_requests(todo: list[dict], *, api: str, tokenizer, template_name: str, task: TaskSpec,
                   cutoff_len: int | None, prompt_template: str | None, shots, room_records: list[dict]):
    """(requests, max_tokens, stop strings, prompts whose text does not re-encode to the same ids)."""
    from ftk.eval.predict import answer_room, max_new_tokens_for

    if api == "chat":
        turns = []
        for s in shots:
            turns += [{"role": "user", "content": user_content(s)}, {"role": "assistant", "content": s["output"]}]
        reqs = [Request(r["id"], None, turns + [{"role": "user", "content": user_content(r)}], None, False)
                for r in todo]
        return reqs, (64 if task.is_classification else 512), [], 0
    from ftk.train.prompts import Prompter, load_template

    tmpl = load_template(tokenizer, template_name)
    prompter = Prompter(tokenizer, tmpl, cutoff_len, prompt_template, shots)
    room = answer_room(task, prompter, room_records, cutoff_len)
    auto_bos = _adds_bos(tokenizer)
    reqs, differ = [], 0
    for r in todo:
        ids, truncated = prompter.prompt_ids(r, room)
        body = ids[1:] if auto_bos and ids[:1] == [tokenizer.bos_token_id] else ids
        text = tokenizer.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        differ += tokenizer(text, add_special_tokens=True).input_ids != ids
        reqs.append(Request(r["id"], text, None, len(ids), bool(truncated)))
    stops = list(dict.fromkeys([*getattr(tmpl, "stop_words", []), *([tokenizer.eos_token] if tokenizer.eos_token
                                                                      else [])]))
    return reqs, max_new_tokens_for(task, tokenizer, room_records), stops, differ


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("a", add_special_tokens=True).input_ids
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def predict_served(records: list[dict], out_dir: Path, served: ServedModel, *, api: str, tokenizer,
                   template: str, task: TaskSpec, cutoff_len: int | None, prompt_template: str | None,
                   shots=(), max_new_tokens: int | None = None, progress: bool = True) -> tuple[dict, dict]:
    """Ask the server for every record not yet answered in out_dir/predictions.jsonl. Returns
    (every row by id, failed ones as empty invalid answers with `failed`; what happened)."""
    out = PredictionsFile(out_dir / "predictions.jsonl")
    todo = out.todo(records)
    others = sorted({row.get("engine", "hf") for row in out.done.values()} - {"openai"})
    if others:
        raise FtkError(f"holds predictions made by engine {others[0]}; --engine openai would report them as its own "
                       "(evaluate into another folder with --out)", path=out.path)
    if out.done and progress:
        print(f"[ftk] reusing {len(records) - len(todo)} of {len(records)} answers already in {out.path}"
              + (f"; asking for the other {len(todo)}" if todo else ""), flush=True)
    reqs, mnt, stops, differ = build_requests(todo, api=api, tokenizer=tokenizer, template_name=template, task=task,
                                              cutoff_len=cutoff_len, prompt_template=prompt_template, shots=shots,
                                              room_records=records)
    mnt = max_new_tokens or mnt
    failures: dict[str, tuple[str, str]] = {}
    counted = {"server_prompt_tokens_differ": 0, "server_prompt_tokens_unknown": 0}
    if reqs:
        with out:
            asyncio.run(_ask_all(reqs, served, api, mnt, stops, out, failures, counted, {r["id"]: r for r in todo},
                                 progress, total=len(records)))
    preds = dict(out.done)
    for rid, (reason, _) in failures.items():
        preds[rid] = {"id": rid, "predict": "", "engine": "openai", "failed": reason}
    if not failures:
        out.finish(records)
    info = {"api": api, "base_url": served.base_url, "model": served.model, "concurrency": served.concurrency,
            "max_tokens": mnt, "stop": stops, "asked": len(reqs), "answered": len(reqs) - len(failures),
            "failed": dict(Counter(reason for reason, _ in failures.values()).most_common()),
            "failed_examples": [f"{rid}: {msg}" for rid, (_, msg) in list(failures.items())[:3]],
            "prompt_text_reencodes_differently": differ if api == "completions" else None,
            "prompts_fitted_to_cutoff_len": api == "completions", **counted}
    return preds, info


def _completion_text(resp, api: str) -> tuple[str, str | None, int | None]:
    from ftk.data.llm.client import BadAnswer, answer_of

    if api == "chat":
        text, finish, usage = answer_of(resp)
        return text, finish, usage.get("prompt_tokens")
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise BadAnswer("not a completion (no choices)")
    text = getattr(choices[0], "text", None)
    if not isinstance(text, str):
        raise BadAnswer("a choice without text")
    usage = getattr(resp, "usage", None)
    n = getattr(usage, "prompt_tokens", None)
    finish = getattr(choices[0], "finish_reason", None)
    return text, finish if isinstance(finish, str) else None, n if isinstance(n, int) and n >= 0 else None


async def _ask_all(reqs, served: ServedModel, api: str, mnt: int, stops: list[str], out: PredictionsFile,
                   failures: dict, counted: dict, records: dict, progress: bool, *, total: int) -> None:
    import openai

    from ftk.data.llm.client import BadAnswer, Stop, reason_of, scrub
    from ftk.progress import CountScreen

    secrets = [served.api_key()] if served.api_key_env else []
    client = openai.AsyncOpenAI(base_url=served.base_url, api_key=served.api_key() or NO_KEY,
                                max_retries=served.max_retries, timeout=served.timeout)
    sem = asyncio.Semaphore(served.concurrency)
    stopped: list[str] = []
    deadline = served.timeout * (served.max_retries + 1) + 5

    async def ask(req: Request):
        last: BaseException | None = None
        for _ in range(served.max_retries + 1):
            try:
                if api == "chat":
                    resp = await client.chat.completions.create(model=served.model, messages=req.messages,
                                                                temperature=0, max_tokens=mnt)
                else:
                    resp = await client.completions.create(model=served.model, prompt=req.prompt, temperature=0,
                                                           max_tokens=mnt, stop=stops or None)
                return _completion_text(resp, api)
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                raise Stop(f"{served.base_url} answered HTTP {exc.status_code} to {api} for model {served.model!r}: "
                           f"{scrub(str(exc), secrets)[:160]}") from None
            except (openai.APIStatusError, openai.APIConnectionError):
                raise  # the client retried what is worth retrying
            except (openai.APIError, BadAnswer, ValueError, TypeError, AttributeError, KeyError) as exc:
                last = exc
        raise last if last is not None else BadAnswer("no answer")

    with CountScreen(f"eval openai ({api})", total, total - len(reqs), enabled=progress) as bar:
        async def one(req: Request) -> None:
            async with sem:
                if stopped:
                    return
                try:
                    text, finish, n_prompt = await asyncio.wait_for(ask(req), deadline)
                except Stop as exc:
                    stopped.append(str(exc))
                    return
                except Exception as exc:  # this item's failure, never the run's
                    failures[req.id] = (reason_of(exc), scrub(f"{type(exc).__name__}: {exc}", secrets)[:200])
                    bar.update(1)
                    return
            row = base_row(records[req.id])
            row.update({"engine": "openai", "predict": text, "finish_reason": finish, "prompt_tokens": n_prompt})
            if req.truncated:
                row["truncated"] = True
            if req.n_ids is not None:
                if n_prompt is None:
                    counted["server_prompt_tokens_unknown"] += 1
                elif n_prompt != req.n_ids:
                    counted["server_prompt_tokens_differ"] += 1
            out.add([row])
            bar.update(1)

        try:
            await asyncio.gather(*(one(r) for r in reqs))
        finally:
            await client.close()
    if stopped:
        raise FtkError(f"{stopped[0]}; stopped (answers so far are kept in {out.path})")


async def preflight(served: ServedModel) -> None:
    """The server answers and takes the key, before any output is made."""
    import openai

    client = openai.AsyncOpenAI(base_url=served.base_url, api_key=served.api_key() or NO_KEY, max_retries=0,
                                timeout=min(served.timeout, 20))
    try:
        await client.models.list()
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        raise FtkError(f"{served.base_url} refused the key (HTTP {exc.status_code})"
                       + (f" in ${served.api_key_env}" if served.api_key_env else " (set --api-key-env)")) from None
    except (openai.NotFoundError, openai.APIStatusError):
        pass  # some servers have no /models or fail it; the requests decide
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        raise FtkError(f"--base-url {served.base_url} is unreachable ({type(exc).__name__}); is the server up?") \
            from None
    finally:
        await client.close()
