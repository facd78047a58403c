"""`ftk eval --engine openai` against a scripted OpenAI-compatible server (127.0.0.1, no model): the
recipe's prompts rendered by ftk go to the completions endpoint token-equal to ftk's own; the chat
endpoint when asked; answers scored by the same extraction and metrics; 429 / 500 / malformed answers
cost only their items (exit 1, reports written, a re-run asks only for those); 401 and an unreachable
server stop with one line; no key in any file."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from conftest import ftk_here, run_ftk, tiny_recipe
from scripted_server import completion, text_completion

KEY = "sk-served-" + "93b1c7e25a4d"  # never real: must appear in no written file nor on the screen


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, synth_dir, tiny_model):
    tmp = tmp_path_factory.mktemp("served")
    return tiny_recipe(tmp, synth_dir, tiny_model, "eval: {limit: 24}\n")


def _tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def answering(tok, label="Sports", fail=lambda prompt: False):
    """A server that answers `label` to every prompt, with the prompt's true token count."""
    def behave(n, body):
        if "prompt" in body:
            if fail(body["prompt"]):
                return 500, "application/json", b'{"error": {"message": "boom"}}'
            return 200, "application/json", text_completion(label, prompt_tokens=len(tok(body["prompt"]).input_ids))
        return 200, "application/json", completion(label)
    return behave


def _eval(recipe, url, out, *extra):
    return ftk_here("eval", recipe, "--base", "--engine", "openai", "--base-url", url, "--model", "m",
                    "--out", out, *extra, cwd=out.parent)


def test_completions_get_ftks_own_prompts_and_the_same_scoring(recipe, tiny_model, serve, tmp_path):
    tok = _tokenizer(tiny_model)
    prompts = []
    server = serve(lambda n, body: (prompts.append(body["prompt"]), answering(tok)(n, body))[1])
    out = tmp_path / "served"
    proc = _eval(recipe, server.url, out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    s = m["served"]
    assert s["api"] == "completions" and s["answered"] == 24 and s["failed"] == {}
    assert s["server_prompt_tokens_differ"] == 0 and s["prompt_text_reencodes_differently"] == 0
    assert all(p.endswith("/completions") and "chat" not in p for p in server.paths)
    # the prompts are exactly the ids ftk's own engine evaluates with
    from ftk.eval.evaluate import split_records
    from ftk.eval.predict import answer_room
    from ftk.train.prompts import Prompter, load_template

    prepared = Path(json.loads((out / "metrics.json").read_text())["run_dir"])
    manifest = json.loads((prepared / "manifest.json").read_text())
    data_dir = Path(manifest["recipe"]["data"]["prepared_dir"])
    records, _ = split_records(data_dir, "test", limit=24)
    prompter = Prompter(tok, load_template(tok, "llama3"), manifest["recipe"]["train"]["cutoff_len"])
    from ftk.data.task import load_task

    room = answer_room(load_task("agnews"), prompter, records, prompter.cutoff_len)
    want = sorted(tuple(prompter.prompt_ids(r, room)[0]) for r in records)
    assert sorted(tuple(tok(p).input_ids) for p in prompts) == want
    # scored as any eval: every answer is "Sports"
    gold = [json.loads(line)["gold"] for line in (out / "items.jsonl").read_text().splitlines()]
    assert m["accuracy"] == pytest.approx(sum(g == "Sports" for g in gold) / 24) and m["n"] == 24
    assert m["invalid_rate"] == 0 and m["engine"] == "openai" and m["model"] == f"m at {server.url}"


def test_the_chat_endpoint_when_asked(recipe, serve, tmp_path):
    server = serve(lambda n, body: (200, "application/json", completion("The topic is World.")))
    out = tmp_path / "chat"
    proc = _eval(recipe, server.url, out, "--api", "chat")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["served"]["api"] == "chat" and all(p.endswith("/chat/completions") for p in server.paths)
    assert m["served"]["prompts_fitted_to_cutoff_len"] is False
    assert m["per_class"]["World"]["recall"] == 1.0


def test_failed_requests_cost_their_items_and_a_rerun_asks_only_for_them(recipe, tiny_model, serve, tmp_path):
    tok = _tokenizer(tiny_model)
    bad = lambda prompt: zlib.crc32(prompt.encode()) % 4 == 0  # noqa: E731  the same prompts fail every time
    seen = set()

    def flaky(n, body):  # 429 first for every prompt (the client waits and asks again), then 500 for `bad`
        if body["prompt"] not in seen:
            seen.add(body["prompt"])
            return 429, "application/json", b'{"error": {"message": "slow down"}}', {"retry-after-ms": "5"}
        return answering(tok, fail=bad)(n, body)

    server = serve(flaky)
    out = tmp_path / "flaky"
    proc = _eval(recipe, server.url, out, "--timeout", "5")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "HTTP 500" in err[0] and "requests failed" in err[0]
    m = json.loads((out / "metrics.json").read_text())
    n_bad = m["served"]["failed"]["HTTP 500"]
    assert m["served"]["failed"] == {"HTTP 500": n_bad}  # each 429 was waited out and asked again
    assert 0 < n_bad < 24 and m["n"] == 24 and m["invalid_rate"] == pytest.approx(n_bad / 24)
    answered = (out / "predictions.jsonl").read_text().splitlines()
    assert len(answered) == 24 - n_bad  # failed items are not stored: the next run asks for them
    healthy = serve(answering(tok))
    proc = _eval(recipe, healthy.url, out)
    assert proc.returncode != 0 and "holds" in proc.stderr  # another server is another model: not mixed
    assert "different evaluation" in proc.stderr
    server.behave = answering(tok)  # the server is fixed
    calls = server.calls
    proc = _eval(recipe, server.url, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert server.calls - calls == n_bad
    m = json.loads((out / "metrics.json").read_text())
    assert m["served"]["failed"] == {} and m["invalid_rate"] == 0 and m["reused_rows"] == 24 - n_bad


def test_malformed_answers_are_asked_again_then_counted(recipe, serve, tmp_path):
    server = serve(lambda n, body: (200, "text/html", b"<html>gateway</html>"))
    out = tmp_path / "html"
    proc = _eval(recipe, server.url, out, "--timeout", "5")
    assert proc.returncode == 1 and "malformed answer" in proc.stderr
    assert json.loads((out / "metrics.json").read_text())["served"]["failed"] == {"malformed answer": 24}


def test_stops_and_bad_options_are_one_line(recipe, serve, tmp_path):
    """Through the installed script: 401 stops at once, an unreachable server and bad options exit 2;
    the key is in no output and no file."""
    server = serve(lambda n, body: (401, "application/json", json.dumps(
        {"error": {"message": f"invalid key {KEY}"}}).encode()))
    out = tmp_path / "auth"
    env = {"FTK_SERVED_KEY": KEY}
    base = ["eval", str(recipe), "--base", "--engine", "openai", "--model", "m"]
    proc = run_ftk(*base, "--base-url", server.url, "--api-key-env", "FTK_SERVED_KEY", "--out", str(out),
                   cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "401" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert KEY not in proc.stdout + proc.stderr
    assert not out.exists() or all(KEY not in p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    cases = [
        (["--base-url", "http://127.0.0.1:9/v1"], "unreachable"),
        (["--base-url", f"http://u:{KEY}@127.0.0.1:9/v1"], "credential"),
        (["--base-url", "ftp://x/v1"], "expected http(s)"),
        (["--base-url", server.url, "--mode", "choice"], "--engine openai generates"),
        (["--base-url", server.url, "--api-key-env", "FTK_NOT_SET_ANYWHERE"], "is not set"),
    ]
    for extra, words in cases:
        proc = run_ftk(*base, *extra, "--out", str(tmp_path / "x"), cwd=tmp_path, env=env)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (extra, proc.stderr)
        assert KEY not in proc.stderr
    proc = run_ftk("eval", str(recipe), "--base", "--base-url", server.url, cwd=tmp_path)
    assert proc.returncode == 2 and "go with --engine openai" in proc.stderr


@pytest.mark.slow
def test_a_served_model_is_a_study_base_row_and_compares(recipe, tiny_model, serve, tmp_path):
    import yaml

    tok = _tokenizer(tiny_model)
    server = serve(answering(tok, label="World"))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "served_rows", "recipe": str(recipe), "base": False, "overrides": ["train.max_steps=5"],
        "bases": [{"served": {"base_url": server.url, "model": "Hosted-LLM v2"}}],
        "baselines": ["majority"]}))
    out = tmp_path / "study"
    proc = ftk_here("study", "run", study, "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    rows = {r["trial"]: r for r in rep["rows"]}
    row = rows["base-generate-hosted-llm-v2"]
    assert row["what"] == "served model Hosted-LLM v2 (zero-shot generate, completions endpoint)" and row["base"]
    assert rep["strongest_base"] == "base-generate-hosted-llm-v2"
    (tuned,) = [r for r in rep["rows"] if not (r["base"] or r["baseline"])]  # the recipe itself, 5 steps
    assert tuned["vs_base"]["delta"] == pytest.approx(tuned["value"] - row["value"])
    # finished rows are reused: the same study again asks the server nothing
    calls = server.calls
    assert ftk_here("study", "run", study, "--out", out, cwd=tmp_path).returncode == 0 and server.calls == calls
    proc = ftk_here("compare", Path(row["eval_dir"]), Path(rows["baseline-majority"]["eval_dir"]), cwd=tmp_path)
    assert proc.returncode == 0 and "McNemar" in proc.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "b", "recipe": str(recipe), "bases": [
        {"mode": "choice", "served": {"base_url": server.url, "model": "m"}}]}))
    proc = ftk_here("study", "run", bad, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2 and "mode choice needs the model's own likelihoods" in proc.stderr
