"""Requests to OpenAI-compatible endpoints with the `openai` package's async client: concurrency
bounded by a semaphore, the client's own retries with backoff (429, 5xx, timeouts, connection
errors), and every finished request appended to `cache.jsonl` (flushed, fsync'd) under its key, so
a killed run loses only the requests in flight and a re-run asks only for the missing ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

from ftk.errors import FtkError

CACHE = "cache.jsonl"


def _valid_row(row) -> bool:
    return (isinstance(row, dict) and isinstance(row.get("key"), str) and isinstance(row.get("index"), int)
            and isinstance(row.get("label"), str) and isinstance(row.get("text"), str)
            and isinstance(row.get("usage", {}), dict))


def read_cache_counted(path: Path) -> tuple[dict[str, dict], int]:
    """Finished requests by key, and the number of lines that could not be read (a torn last line from
    a crash, a damaged line): those are skipped and their requests asked again, never fatal."""
    done: dict[str, dict] = {}
    bad = 0
    if not path.is_file():
        return done, bad
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if _valid_row(row):
                done[row["key"]] = row
            else:
                bad += 1
    return done, bad


def read_cache(path: Path) -> dict[str, dict]:
    return read_cache_counted(path)[0]


def end_torn_line(path: Path) -> None:
    """A crash mid-write leaves a last line without its newline: end it, so the next answer appended
    starts a line of its own (it used to be glued to the torn one, and both were lost)."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")


class BadAnswer(Exception):
    """A 200 answer that is not a chat completion (HTML, broken JSON, no message, ...)."""


class Stop(Exception):
    """An answer that no other request would get differently (401, 403, 404): the run stops."""


def scrub(text: str, secrets: list[str]) -> str:
    """An error message as it may be stored or shown: API keys (the values of the spec's key
    variables, bearer tokens, api_key=...) replaced by ***."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = re.sub(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}", r"\1***", text)
    return re.sub(r"(?i)((?:api[_-]?key|authorization|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}", r"\1***", text)


def answer_of(resp) -> tuple[str, str | None, dict]:
    """(text, finish_reason, usage) of a chat completion, or BadAnswer saying what is wrong with it."""
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list):
        raise BadAnswer(f"not a chat completion ({type(resp).__name__})")
    if not choices:
        raise BadAnswer("no choices")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None) if message is not None else None
    if message is None or not isinstance(content, (str, type(None))):
        raise BadAnswer("a choice without a message")
    usage = getattr(resp, "usage", None)
    counts = {k: getattr(usage, k, None) for k in ("prompt_tokens", "completion_tokens")}
    counts = {k: v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None for k, v in counts.items()}
    reason = getattr(choices[0], "finish_reason", None)
    return content or "", reason if isinstance(reason, str) else None, counts


class Progress:
    """requests done / failed, items kept, tokens in/out: a live line on a terminal, else a line per
    tenth of the requests."""

    def __init__(self, total: int, done: int, *, out=None):
        self.total, self.done, self.failed, self.kept, self.tok_in, self.tok_out = total, done, 0, 0, 0, 0
        self.timed_out = 0
        self.out = out or sys.stdout
        self.start = time.monotonic()
        self.next_line = done + max(1, total // 10)
        self.live = None
        if self.out.isatty():
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            self._text = Text
            self.live = Live(Text(self.line()), console=Console(file=self.out), refresh_per_second=4)
            self.live.start()

    def line(self) -> str:
        s = int(time.monotonic() - self.start)
        late = f", {self.timed_out} past the deadline" if self.timed_out else ""
        return (f"requests {self.done}/{self.total} ({self.failed} failed{late})  items kept {self.kept}  "
                f"tokens in {self.tok_in:,} / out {self.tok_out:,}  elapsed {s // 60}:{s % 60:02d}")

    def update(self) -> None:
        if self.live is not None:
            self.live.update(self._text(self.line()))
        elif self.done + self.failed >= self.next_line or self.done + self.failed == self.total:
            print(self.line(), file=self.out, flush=True)
            self.next_line = self.done + self.failed + max(1, self.total // 10)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def _client(endpoint, spec):
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=endpoint.base_url, api_key=os.environ[endpoint.api_key_env],
                       max_retries=spec.max_retries, timeout=spec.timeout)


async def preflight(ld) -> None:
    """Each endpoint answers and accepts its key, before anything is written."""
    import openai

    seen = set()
    for i, e in enumerate(ld.spec.endpoints):
        if (e.base_url, e.api_key_env) in seen:
            continue
        seen.add((e.base_url, e.api_key_env))
        client = openai.AsyncOpenAI(base_url=e.base_url, api_key=os.environ[e.api_key_env], max_retries=1,
                                    timeout=min(ld.spec.timeout, 20))
        try:
            await client.models.list()
        except openai.AuthenticationError:
            raise FtkError(f"{e.base_url} refused the key in ${e.api_key_env} (401)", path=ld.path,
                           where=f"endpoints.{i}.api_key_env") from None
        except openai.NotFoundError:
            pass  # some servers have no /models; the chat endpoint decides
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise FtkError(f"endpoint {e.base_url} is unreachable ({type(exc).__name__}); is the server up?",
                           path=ld.path, where=f"endpoints.{i}.base_url") from None
        finally:
            await client.close()


def reason_of(exc: BaseException) -> str:
    """A failure's kind, short: what the terminal and the manifest count (`HTTP 500 x 3`)."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, asyncio.TimeoutError):
        return "deadline"
    if isinstance(exc, openai.APITimeoutError):
        return "read timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection error"
    if isinstance(exc, BadAnswer) and str(exc) == "empty answer":
        return "empty answer"
    return "malformed answer"


async def run_requests(ld, requests: list, cache_path: Path, on_answer) -> dict:
    """Ask every request not in the cache; `on_answer(cached row)` -> items kept (for the progress
    line). Only a valid, non-empty answer enters the cache (fsync'd per line); a malformed one is asked
    again (up to max_retries), then counted as failed with its reason; an empty one is not cached (the
    next run asks it again). Each request has a deadline for all its tries. 401 / 403 / 404 stop the
    run at once (Stop). Returns the failures: index -> (reason, message without keys)."""
    import openai

    done, _ = read_cache_counted(cache_path)
    todo = [r for r in requests if r.key not in done]
    spec = ld.spec
    secrets = [os.environ.get(e.api_key_env, "") for e in spec.endpoints]
    deadline = spec.deadline or spec.timeout * (spec.max_retries + 1)
    progress = Progress(len(requests), len(requests) - len(todo))
    wanted = {r.key for r in requests}
    for row in done.values():
        if row["key"] in wanted:
            progress.kept += on_answer(row)
            progress.tok_in += row.get("usage", {}).get("prompt_tokens") or 0
            progress.tok_out += row.get("usage", {}).get("completion_tokens") or 0
    clients = {}
    failures: dict[int, tuple[str, str]] = {}
    stopped: list[str] = []
    sem = asyncio.Semaphore(spec.concurrency)
    end_torn_line(cache_path)

    async def ask(req):
        key = (req.endpoint.base_url, req.endpoint.api_key_env)
        if key not in clients:
            clients[key] = _client(req.endpoint, spec)
        last: BaseException | None = None
        for _ in range(spec.max_retries + 1):
            try:
                resp = await clients[key].chat.completions.create(
                    model=req.endpoint.model, messages=list(req.messages), temperature=spec.temperature,
                    max_tokens=spec.max_tokens, seed=spec.seed + req.index)
                text, finish, usage = answer_of(resp)
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                raise Stop(f"{req.endpoint.base_url} answered HTTP {exc.status_code} to chat completions for model "
                           f"{req.endpoint.model!r} (key from ${req.endpoint.api_key_env}): "
                           f"{scrub(str(exc), secrets)[:200]}") from None
            except (openai.APIStatusError, openai.APIConnectionError) as exc:
                raise exc  # the client has retried what is worth retrying (429, 5xx, resets)
            except (openai.APIError, BadAnswer, ValueError, TypeError, AttributeError, KeyError) as exc:
                last = exc  # a malformed 200 answer: ask again
                continue
            if text == "":  # no token at all (a server fault): not cached, the next run asks again; a
                raise BadAnswer("empty answer")  # model's own whitespace or prose is an answer, and final
            return {"key": req.key, "index": req.index, "base_url": req.endpoint.base_url,
                    "model": req.endpoint.model, "label": req.label, "text": text, "finish_reason": finish,
                    "usage": usage}
        raise last if last is not None else BadAnswer("no answer")

    with open(cache_path, "a", encoding="utf-8") as cache:
        async def one(req) -> None:
            async with sem:
                if stopped:
                    return
                try:
                    row = await asyncio.wait_for(ask(req), deadline)
                except Stop as exc:
                    stopped.append(str(exc))
                    return
                except Exception as exc:  # this request's failure, never the run's
                    reason = reason_of(exc)
                    failures[req.index] = (reason, scrub(f"{type(exc).__name__}: {exc}", secrets)[:200])
                    progress.failed += 1
                    progress.timed_out += reason == "deadline"
                    progress.update()
                    return
            cache.write(json.dumps(row, ensure_ascii=False) + "\n")
            cache.flush()
            os.fsync(cache.fileno())
            progress.done += 1
            progress.kept += on_answer(row)
            progress.tok_in += row["usage"]["prompt_tokens"] or 0
            progress.tok_out += row["usage"]["completion_tokens"] or 0
            progress.update()

        try:
            await asyncio.gather(*(one(r) for r in todo))
        finally:
            progress.close()
            for c in clients.values():
                await c.close()
    if stopped:
        raise FtkError(f"{stopped[0]}; stopped, the other requests were not sent ({len(failures)} failed, "
                       f"{progress.done - (len(requests) - len(todo))} answered this run)", path=ld.path)
    return failures


def failure_counts(failures: dict[int, tuple[str, str]]) -> dict[str, int]:
    return dict(Counter(reason for reason, _ in failures.values()).most_common())
