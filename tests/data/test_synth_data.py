"""`ftk synth-data` against a real OpenAI-compatible server on the loopback interface: LLaMA-Factory's
own `llamafactory-cli api` serving the tiny model (started and stopped here), behind a fault-injecting
proxy for the retry test. A fake API key checks that no written file holds it."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from ftk.cli.main import main

pytestmark = pytest.mark.slow
FAKE_KEY = "sk-ftk-test-" + "7f3a9c2e51d04b8b"  # never real; must appear in no written file
FTK = Path(sys.executable).parent / "ftk"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory, tiny_model):
    """`llamafactory-cli api` on 127.0.0.1 serving the tiny model, greedy by default, key-protected."""
    tmp = tmp_path_factory.mktemp("api")
    cfg = tmp / "api.yaml"
    cfg.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_model), "template": "llama3",
                                   "infer_backend": "huggingface", "trust_remote_code": False}))
    port = free_port()
    env = dict(os.environ, API_HOST="127.0.0.1", API_PORT=str(port), API_KEY=FAKE_KEY, API_MODEL_NAME="tiny",
               PYTHONWARNINGS="ignore")
    log = open(tmp / "api.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "llamafactory-cli"), "api", str(cfg)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError((tmp / "api.log").read_text()[-3000:])
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/v1/models", headers={"Authorization": f"Bearer {FAKE_KEY}"})
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the API server did not come up: " + (tmp / "api.log").read_text()[-3000:])
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


class FaultyProxy:
    """Forwards to the API server; a seeded 20% of chat requests get 429 or 500, others a small delay."""

    def __init__(self, target_port: int, seed: int = 0):
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.injected = 0
        self.forwarded = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _forward(self, body: bytes | None):
                conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.getheader("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    roll, delay = proxy.rng.random(), proxy.rng.random() * 0.05
                if roll < 0.2:
                    with proxy.lock:
                        proxy.injected += 1
                    code = 429 if roll < 0.1 else 500
                    msg = json.dumps({"error": {"message": "injected", "type": "injected"}}).encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(msg)))
                    if code == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                time.sleep(delay)
                with proxy.lock:
                    proxy.forwarded += 1
                self._forward(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def write_spec(tmp: Path, synth_dir: Path, url: str, *, requests: int = 50, name: str = "agnews_synth", **extra) -> Path:
    spec = {
        "name": name, "task": "agnews", "format": "csv",
        "endpoints": [{"base_url": url, "model": "tiny", "api_key_env": "FTK_TEST_API_KEY"}],
        "seeds": {"file": str(synth_dir / "train.csv"), "k": 2},
        "template": "Write {n} new {label} news items like these, one per line, separated by ###.\n{examples}\n",
        "example": "{title} | {description}",
        "split": "###",
        "item": r"^\s*(?P<title>[^\n]{3,200}?)\s*(?:\n(?P<description>.*))?$",
        "fields": {"label": "{label_raw}"},
        "requests": requests, "concurrency": 4, "temperature": 0, "max_tokens": 40, "seed": 3,
        "near_duplicate_rouge_l": 0.7, "leakage": [str(synth_dir / "test.csv")],
        # The random-init tiny model never ends an answer: every one is cut by max_tokens, so its one item is
        # partial and dropped (cut_by_max_tokens) and few or none are kept. These tests prove requests,
        # retries, the cache and resume; what is kept, and min_items' refusal, is proven against a scripted
        # server in test_synth_hostile.py.
        "min_items": 0,
    }
    spec.update(extra)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("FTK_TEST_API_KEY", FAKE_KEY)


def _run(spec: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(FTK), "synth-data", str(spec), "--out", str(out)], capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, FTK_TEST_API_KEY=FAKE_KEY))


def _no_key_anywhere(folder: Path):
    for p in folder.rglob("*"):
        if p.is_file():
            assert FAKE_KEY.encode() not in p.read_bytes(), p


def test_fifty_requests_at_concurrency_four_validated_and_cleaned(tmp_path, synth_dir, api_server):
    out = tmp_path / "out"
    # The tiny model is random-init: greedy it writes only line breaks, sampled it writes words.
    spec = write_spec(tmp_path, synth_dir, api_server, temperature=1.0)
    proc = _run(spec, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    empty = m["requests"].pop("empty")
    assert m["requests"].pop("final").startswith("a well-formed answer with any text is final")
    assert m["requests"] == {"planned": 50, "answered": 50, "failed": 0, "failed_by_reason": {}, "failures": {}}
    it = m["items"]
    assert empty < 25 and it["parsed"] >= 50 - empty and it["parsed"] == it["valid"] + sum(it["rejected"].values())
    assert it["kept"] == it["valid"] - sum(it["cleaning"].values()) == m["output"]["rows"]
    assert m["tokens"]["prompt"] > 0 and m["tokens"]["completion"] > 0
    data = out / m["output"]["file"]
    assert hashlib.sha256(data.read_bytes()).hexdigest() == m["output"]["sha256"]
    assert b"\x00" not in data.read_bytes()  # a sampled random model writes NUL bytes: refused, counted
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").open()]
    assert len(rejects) == sum(it["rejected"].values()) and all("reason" in r for r in rejects)
    assert m["endpoints"] == [{"base_url": api_server, "model": "tiny", "weight": 1.0, "api_key_env": "FTK_TEST_API_KEY"}]
    assert f"requests 50/50 answered ({empty} with no item)" in proc.stdout and "items" in proc.stdout
    _no_key_anywhere(out)
    if m["output"]["rows"]:  # the output is a source `ftk prepare` reads as it is
        prep = subprocess.run([str(FTK), "prepare", "--task", "agnews", "--train", str(data), "--out",
                               str(tmp_path / "prepared")], capture_output=True, text=True)
        assert prep.returncode == 0, prep.stderr
        assert json.loads((tmp_path / "prepared" / "manifest.json").read_text())["splits"]["train"]["rows_read"] == m["output"]["rows"]
    again = _run(spec, out)  # cached: nothing asked again
    assert again.returncode == 0 and "(50 cached)" in again.stdout
    assert json.loads((out / "manifest.json").read_text())["output"]["sha256"] == m["output"]["sha256"]


def test_injected_429_and_500_are_retried_and_nothing_is_lost_or_duplicated(tmp_path, synth_dir, api_server):
    port = int(api_server.rsplit(":", 1)[1].split("/")[0])
    proxy = FaultyProxy(port, seed=11)
    try:
        out = tmp_path / "out"
        url = f"http://127.0.0.1:{proxy.port}/v1"
        proc = _run(write_spec(tmp_path, synth_dir, url, name="faulty"), out)
    finally:
        proxy.close()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proxy.injected >= 5  # the faults really happened
    m = json.loads((out / "manifest.json").read_text())
    assert m["requests"]["answered"] == 50 and m["requests"]["failed"] == 0
    keys = [json.loads(line)["key"] for line in (out / "cache.jsonl").open()]
    assert len(keys) == len(set(keys)) == 50  # each request once
    assert proxy.forwarded == 50 + 0  # every forwarded request was answered and cached exactly once


def test_kill_9_then_rerun_gives_the_uninterrupted_output(tmp_path, synth_dir, api_server):
    spec = write_spec(tmp_path, synth_dir, api_server, name="killed", concurrency=2)
    ref = tmp_path / "ref"
    assert _run(spec, ref).returncode == 0
    out = tmp_path / "out"
    proc = subprocess.Popen([str(FTK), "synth-data", str(spec), "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, FTK_TEST_API_KEY=FAKE_KEY))
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "cache.jsonl").exists() and len((out / "cache.jsonl").read_text().splitlines()) >= 10:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    cached = len((out / "cache.jsonl").read_text().splitlines())
    assert 10 <= cached < 50 and not (out / "manifest.json").exists()
    assert _run(spec, out).returncode == 0
    rows = [json.loads(line) for line in (out / "cache.jsonl").read_text().splitlines() if line.strip()]
    assert len({r["key"] for r in rows}) == 50 and len(rows) == 50  # each request once
    ref_m, got_m = (json.loads((d / "manifest.json").read_text()) for d in (ref, out))
    assert got_m["output"]["sha256"] == ref_m["output"]["sha256"]
    assert (out / got_m["output"]["file"]).read_bytes() == (ref / ref_m["output"]["file"]).read_bytes()
    _no_key_anywhere(out)


@pytest.mark.parametrize("change, expected", [
    ({"task": "agnewz"}, "unknown task 'agnewz'"),
    ({"endpoints": [{"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "FTK_UNSET_KEY_VAR"}]},
     "FTK_UNSET_KEY_VAR is not set"),
    ({"endpoints": [{"base_url": "http://127.0.0.1:{port}/v1", "model": "m", "api_key_env": "FTK_TEST_API_KEY"}]},
     "is unreachable"),
    ({"template": "Write {count} items: {examples}"}, "placeholder {count} is unknown"),
    ({"template": "Write items {examples"}, "not a valid format string"),
    ({"item": "(?P<title>.+"}, "not a valid regular expression"),
    ({"item": "(?P<headline>.+)"}, "headline is not a raw column"),
], ids=["unknown-task", "missing-key-variable", "unreachable", "template-placeholder", "template-braces",
        "item-regex", "item-column"])
def test_bad_specs_are_one_line_exit_2_and_write_nothing(tmp_path, synth_dir, capfd, change, expected):
    dead = free_port()  # nothing listens here
    change = json.loads(json.dumps(change).replace("{port}", str(dead)))
    spec = write_spec(tmp_path, synth_dir, f"http://127.0.0.1:{dead}/v1", **change)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["synth-data", str(spec), "--out", str(out)])
    o, e = capfd.readouterr()
    lines = [line for line in (o + e).splitlines() if line.strip()]
    assert exc.value.code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert str(spec) in lines[0]
    assert not out.exists()
