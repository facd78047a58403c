"""Requests to OpenAI-compatible endpoints with the `openai` package's async client: concurrency
bounded by a semaphore, the client's own retries with backoff (429, 5xx, timeouts, connection
errors), and every finished request appended to `cache.jsonl` (flushed, fsync'd) under its key, so
a killed run loses only the requests in flight and a re-run asks only for the missing ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from ftk.errors import FtkError

CACHE = "cache.jsonl"


def read_cache(path: Path) -> dict[str, dict]:
    """Finished requests by key (a torn last line from a crash is ignored)."""
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "key" in row:
                done[row["key"]] = row
    return done


class Progress:
    """requests done / failed, items kept, tokens in/out: a live line on a terminal, else a line per
    tenth of the requests."""

    def __init__(self, total: int, done: int, *, out=None):
        self.total, self.done, self.failed, self.kept, self.tok_in, self.tok_out = total, done, 0, 0, 0, 0
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
        return (f"requests {self.done}/{self.total} ({self.failed} failed)  items kept {self.kept}  "
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


async def run_requests(ld, requests: list, cache_path: Path, on_answer) -> dict:
    """Ask every request not in the cache; `on_answer(cached row)` -> items kept (for the progress
    line). Returns the failures (index -> message) of requests that still failed after retries."""
    import openai

    done = read_cache(cache_path)
    todo = [r for r in requests if r.key not in done]
    spec = ld.spec
    progress = Progress(len(requests), len(requests) - len(todo))
    for row in done.values():
        progress.kept += on_answer(row)
        progress.tok_in += row.get("usage", {}).get("prompt_tokens") or 0
        progress.tok_out += row.get("usage", {}).get("completion_tokens") or 0
    clients = {}
    failures: dict[int, str] = {}
    sem = asyncio.Semaphore(spec.concurrency)
    with open(cache_path, "a", encoding="utf-8") as cache:
        async def one(req) -> None:
            key = (req.endpoint.base_url, req.endpoint.api_key_env)
            if key not in clients:
                clients[key] = _client(req.endpoint, spec)
            async with sem:
                try:
                    resp = await clients[key].chat.completions.create(
                        model=req.endpoint.model, messages=list(req.messages), temperature=spec.temperature,
                        max_tokens=spec.max_tokens, seed=spec.seed + req.index)
                except openai.APIError as exc:
                    failures[req.index] = f"{type(exc).__name__}: {str(exc)[:200]}"
                    progress.failed += 1
                    progress.update()
                    return
            usage = resp.usage
            row = {"key": req.key, "index": req.index, "base_url": req.endpoint.base_url,
                   "model": req.endpoint.model, "label": req.label,
                   "text": resp.choices[0].message.content if resp.choices else "",
                   "finish_reason": resp.choices[0].finish_reason if resp.choices else None,
                   "usage": {"prompt_tokens": getattr(usage, "prompt_tokens", None),
                             "completion_tokens": getattr(usage, "completion_tokens", None)}}
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
    return failures
