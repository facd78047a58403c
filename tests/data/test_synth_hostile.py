"""`ftk synth-data` against a hostile OpenAI-compatible server (a scripted one on 127.0.0.1, no
model): malformed 200 answers, 401/404, empty answers, answers with no usable item, a damaged cache,
oversized answers, a server that drips bytes, answers cut by max_tokens, and a key in the URL. Each
costs the requests it spoils or ends the run with one line and a non-zero exit; never a traceback,
and the cache never makes a later run fail."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import yaml

from conftest import ftk_here
from scripted_server import completion

KEY = "sk-hostile-" + "5d2e8a71c9b04f36"  # never real; must appear in no written file nor on the screen
WORDS = ("market shares bank rally vote court storm league goal orbit chip patent merger budget drought "
         "tariff quarter engine vaccine senate striker probe satellite harvest festival").split()


def items_text(n: int, k: int = 3) -> str:
    """k well-formed items (title | description), distinct for every n."""
    rng = random.Random(n)
    return "\n###\n".join(f"{' '.join(rng.sample(WORDS, 3))} {n}-{j} | "
                          f"{' '.join(rng.sample(WORDS, 8))} number {n * 10 + j} today" for j in range(k))


def ok(n, body):
    return 200, "application/json", completion(items_text(body.get("seed", n)))


def spec_file(tmp: Path, synth_dir: Path, url: str, **extra) -> Path:
    spec = {"name": "hostile", "task": "agnews", "format": "csv",
            "endpoints": [{"base_url": url, "model": "m", "api_key_env": "FTK_HOSTILE_KEY"}],
            "seeds": {"file": str(synth_dir / "train.csv"), "k": 2},
            "template": "Write {n} {label} items like these:\n{examples}\n", "example": "{title} | {description}",
            "split": "###", "item": r"^\s*(?P<title>[^|\n]{3,200}?)\s*\|\s*(?P<description>[^\n]{10,})\s*$",
            "fields": {"label": "{label_raw}"}, "requests": 8, "concurrency": 2, "max_retries": 2, "timeout": 5,
            "seed": 0, "near_duplicate_rouge_l": None, **extra}
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def synth(spec: Path, out: Path, monkeypatch):
    monkeypatch.setenv("FTK_HOSTILE_KEY", KEY)
    proc = ftk_here("synth-data", spec, "--out", out, cwd=spec.parent)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert KEY not in proc.stdout + proc.stderr
    if out.exists():
        for p in out.rglob("*"):
            assert not p.is_file() or KEY.encode() not in p.read_bytes(), p
    return proc


def one_line_error(proc) -> str:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def cache_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "cache.jsonl").read_text().splitlines() if line.strip()]


MALFORMED = [
    (200, "application/json", b'{"id": "x", "choices": [{"index": 0, "message": {"content": "cut'),  # broken JSON
    (200, "text/html", b"<html><body>502 Bad Gateway</body></html>"),                            # an HTML page
    (200, "application/json", b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, '
                              b'"finish_reason": "stop"}]}'),                                   # no message
    (200, "application/json", b'{"id": "x", "object": "chat.completion", "choices": []}'),         # no choice
]


def test_malformed_answers_cost_a_retry_or_the_request_never_the_run(tmp_path, synth_dir, serve, monkeypatch):
    healthy = {"now": False}

    def behave(n, body):
        if healthy["now"]:
            return ok(n, body)
        if body.get("seed") == 5:  # request 5: malformed every time -> failed with its reason
            return MALFORMED[n % 4]
        if n < 4:  # the first answers are each kind of malformed once: asked again
            return MALFORMED[n]
        if n == 4:  # a non-integer usage is ignored, the answer kept
            return 200, "application/json", completion(items_text(body["seed"]), usage={"prompt_tokens": "many"})
        return ok(n, body)

    server = serve(behave)
    out = tmp_path / "out"
    spec = spec_file(tmp_path, synth_dir, server.url)
    proc = synth(spec, out, monkeypatch)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["requests"]["answered"] == 7 and m["requests"]["failed_by_reason"] == {"malformed answer": 1}
    assert "1 failed: malformed answer x 1" in proc.stdout
    assert sorted(r["index"] for r in cache_rows(out)) == [0, 1, 2, 3, 4, 6, 7]  # only valid answers are cached
    healthy["now"], calls = True, server.calls  # the server recovered: only the failed request is asked
    proc = synth(spec, out, monkeypatch)
    assert proc.returncode == 0, proc.stderr
    assert server.calls - calls == 1 and "(7 cached)" in proc.stdout
    assert json.loads((out / "manifest.json").read_text())["requests"]["answered"] == 8


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_not_found_stop_the_run_at_once(tmp_path, synth_dir, serve, monkeypatch, status):
    echo = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_request_error"}})
    server = serve(lambda n, body: (status, "application/json", echo.encode()))
    out = tmp_path / "out"
    proc = synth(spec_file(tmp_path, synth_dir, server.url, requests=40, concurrency=2), out, monkeypatch)
    line = one_line_error(proc)
    assert f"answered HTTP {status} to chat completions" in line and server.url in line and "stopped" in line
    assert server.calls <= 4  # not 40 requests (the client does not retry these)


def test_no_item_kept_fails_with_the_reasons_and_writes_no_data_file(tmp_path, synth_dir, serve, monkeypatch):
    server = serve(lambda n, body: (200, "application/json", completion("I am sorry, I cannot write news.")))
    out = tmp_path / "out"
    proc = synth(spec_file(tmp_path, synth_dir, server.url), out, monkeypatch)
    line = one_line_error(proc)
    assert "0 items kept, fewer than min_items 1" in line and "no_match 8" in line and "8/8 requests answered" in line
    assert not (out / "hostile.csv").exists()
    assert json.loads((out / "manifest.json").read_text())["output"]["rows"] == 0


def test_empty_answers_are_not_cached_and_asked_again_after_recovery(tmp_path, synth_dir, serve, monkeypatch):
    state = {"down": True}
    server = serve(lambda n, body: (200, "application/json", completion("")) if state["down"] else ok(n, body))
    out = tmp_path / "out"
    spec = spec_file(tmp_path, synth_dir, server.url)
    line = one_line_error(synth(spec, out, monkeypatch))
    assert "8 failed: empty answer x 8" in line
    assert cache_rows(out) == []
    state["down"] = False
    proc = synth(spec, out, monkeypatch)
    assert proc.returncode == 0, proc.stderr
    assert len(cache_rows(out)) == 8 and json.loads((out / "manifest.json").read_text())["requests"]["answered"] == 8


def test_torn_and_damaged_cache_lines_are_asked_again(tmp_path, synth_dir, serve, monkeypatch):
    server = serve(ok)
    out = tmp_path / "out"
    spec = spec_file(tmp_path, synth_dir, server.url)
    assert synth(spec, out, monkeypatch).returncode == 0
    first = json.loads((out / "manifest.json").read_text())["output"]["sha256"]
    lines = (out / "cache.jsonl").read_text().splitlines()
    lines[2] = '{"key": "broken'  # a damaged line in the middle
    torn = lines.pop()[:40]  # a kill during the last write: no newline
    (out / "cache.jsonl").write_text("\n".join(lines) + "\n" + torn)
    calls = server.calls
    proc = synth(spec, out, monkeypatch)
    assert proc.returncode == 0, proc.stderr
    assert "(6 cached; 2 unreadable cache lines skipped, their requests asked again)" in proc.stdout
    assert server.calls - calls == 2
    assert len({r["key"] for r in cache_rows_valid(out)}) == 8
    assert json.loads((out / "manifest.json").read_text())["output"]["sha256"] == first


def cache_rows_valid(out: Path) -> list[dict]:
    rows = []
    for line in (out / "cache.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def test_oversized_answers_are_bounded_and_counted(tmp_path, synth_dir, serve, monkeypatch):
    def behave(n, body):
        if body["seed"] == 0:
            return 200, "application/json", completion(items_text(1000, 500))  # 500 items asked 5
        if body["seed"] == 1:
            return 200, "application/json", completion("huge | " + "word " * 200_000)  # a 1 MB item
        return ok(n, body)

    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = synth(spec_file(tmp_path, synth_dir, serve(behave).url, max_items_per_answer=20), out, monkeypatch)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 60
    it = json.loads((out / "manifest.json").read_text())["items"]
    assert it["not_read"] == {"over_max_items_per_answer": 480} and it["rejected"]["too_long"] == 1


def test_a_dripping_server_meets_the_deadline(tmp_path, synth_dir, serve, monkeypatch):
    server = serve(lambda n, body: ("drip", 20) if body["seed"] == 3 else ok(n, body))
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = synth(spec_file(tmp_path, synth_dir, server.url, timeout=1, deadline=2, max_retries=0), out, monkeypatch)
    assert time.monotonic() - t0 < 15
    assert proc.returncode == 0, proc.stderr
    assert "1 failed: deadline x 1" in proc.stdout and "past the deadline" in proc.stdout


def test_an_answer_cut_by_max_tokens_loses_its_last_item(tmp_path, synth_dir, serve, monkeypatch):
    server = serve(lambda n, body: (200, "application/json", completion(items_text(body["seed"]), finish="length")))
    out = tmp_path / "out"
    assert synth(spec_file(tmp_path, synth_dir, server.url), out, monkeypatch).returncode == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["items"]["rejected"]["cut_by_max_tokens"] == 8 and m["items"]["kept"] == 16


@pytest.mark.parametrize("url", [f"http://user:{KEY}@127.0.0.1:9/v1", f"http://127.0.0.1:9/v1?api_key={KEY}"])
def test_a_key_in_the_url_is_refused(tmp_path, synth_dir, monkeypatch, url):
    out = tmp_path / "out"
    line = one_line_error(synth(spec_file(tmp_path, synth_dir, url), out, monkeypatch))
    assert "endpoints.0.base_url" in line and "api_key_env" in line
    assert not out.exists()


def test_an_absurd_request_count_is_refused_up_front(tmp_path, synth_dir, monkeypatch):
    out = tmp_path / "out"
    line = one_line_error(synth(spec_file(tmp_path, synth_dir, "http://127.0.0.1:9/v1", requests=100_000_000),
                                out, monkeypatch))
    assert "`requests`" in line and "100000" in line.replace(",", "")
    assert not out.exists()
