import json
from collections import Counter

import pytest

from conftest import realdata
from ftk.data.dataset_info import update_dataset_info
from ftk.data.prepare import prepare
from ftk.data.records import read_records
from ftk.data.synth import to_csv, write_dataset
from ftk.data.task import load_task
from ftk.errors import FtkError

AG = load_task("agnews")


def test_csv_to_alpaca_records(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text('"3","Stocks up","Shares rose, then fell."\n"1","A ""quoted"" title","World news"\n')
    m = prepare(AG, {"test": str(src)}, tmp_path / "out")
    recs = read_records(tmp_path / "out" / "agnews_test.jsonl")
    assert recs[0] == {
        "id": "agnews-test-000000",
        "instruction": AG.prompt("v2"),
        "input": "Stocks up Shares rose, then fell.",
        "output": "3: Business",
        "label": "Business",
    }
    assert recs[1]["input"] == 'A "quoted" title World news'
    assert recs[1]["output"] == "1: World"
    split = m["splits"]["test"]
    assert split["rows"] == 2 and split["dataset"] == "agnews_test"
    assert split["label_counts"] == {"World": 1, "Sports": 0, "Business": 1, "Sci/Tech": 0}
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text())
    assert info["agnews_test"] == {"file_name": "agnews_test.jsonl", "formatting": "alpaca",
                                   "columns": {"prompt": "instruction", "query": "input", "response": "output"}}


def test_prompt_versions_and_unknown_version(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text('"2","Cup final","Team wins"\n')
    prepare(AG, {"test": str(src)}, tmp_path / "o", prompt_version="v3")
    assert "output only the number" in read_records(tmp_path / "o" / "agnews_test.jsonl")[0]["instruction"]
    with pytest.raises(FtkError, match="unknown prompt version 'v9'"):
        prepare(AG, {"test": str(src)}, tmp_path / "o2", prompt_version="v9")


def test_deterministic_bytes(tmp_path, synth_dir):
    a = prepare(AG, {"train": str(synth_dir / "train.csv")}, tmp_path / "a", val_size=0.1, seed=7,
                max_samples={"train": 500})
    b = prepare(AG, {"train": str(synth_dir / "train.csv")}, tmp_path / "b", val_size=0.1, seed=7,
                max_samples={"train": 500})
    for split in ("train", "validation"):
        assert a["splits"][split]["sha256"] == b["splits"][split]["sha256"]
        fa = (tmp_path / "a" / a["splits"][split]["file"]).read_bytes()
        assert fa == (tmp_path / "b" / b["splits"][split]["file"]).read_bytes()
    # max_samples.train applies before the validation split-off (as in S1: sample, then val_size).
    assert a["splits"]["train"]["rows"] == 450
    assert a["splits"]["validation"]["rows"] == 50
    c = prepare(AG, {"train": str(synth_dir / "train.csv")}, tmp_path / "c", val_size=0.1, seed=8,
                max_samples={"train": 500})
    assert c["splits"]["train"]["sha256"] != a["splits"]["train"]["sha256"]


def test_bad_class_index_names_file_and_line_and_writes_nothing(tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text('"1","a","b"\n"7","c","d"\n"2","e","f"\n')
    out = tmp_path / "out"
    with pytest.raises(FtkError) as exc:
        prepare(AG, {"test": str(src)}, out)
    msg = str(exc.value)
    assert f"{src}:2:" in msg and "label '7' is not one of 1, 2, 3, 4" in msg
    assert not out.exists()


def test_skip_malformed_counts_reasons(tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text('"1","a","b"\n"7","c","d"\n"2","x"\n"3","","desc"\n"4","t","d"\n')
    m = prepare(AG, {"test": str(src)}, tmp_path / "out", skip_malformed=True, max_malformed=0.5)
    s = m["splits"]["test"]
    assert s["rows"] == 2 and s["rows_read"] == 5  # every data row of the file, malformed ones included
    assert s["malformed"]["count"] == 2
    assert s["malformed"]["by_reason"] == {"wrong_column_count": 1, "unknown_label": 1}
    assert s["cleaning"] == {"empty": 1}  # an empty title is cleaning, not a malformed row
    assert s["malformed"]["first"][0].startswith(f"{src}:2:")


def test_missing_file_error(tmp_path):
    with pytest.raises(FtkError, match=r"nope\.csv: data file not found"):
        prepare(AG, {"test": str(tmp_path / "nope.csv")}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dataset_info_merge_keeps_other_entries(tmp_path, synth_dir):
    update_dataset_info(tmp_path, {"other_ds": {"file_name": "x.json"}})
    prepare(AG, {"test": str(synth_dir / "test.csv")}, tmp_path)
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert set(info) == {"other_ds", "agnews_test"}
    prepare(AG, {"train": str(synth_dir / "train.csv")}, tmp_path)
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert set(info) == {"other_ds", "agnews_test", "agnews_train"}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["splits"]) == {"train", "test"}


def test_synthetic_generator_is_seeded_and_balanced(tmp_path):
    from ftk.data.synth import generate

    rows = generate(400, seed=3)
    assert to_csv(rows) == to_csv(generate(400, seed=3))
    assert to_csv(rows) != to_csv(generate(400, seed=4))
    assert Counter(r[0] for r in rows) == {"1": 100, "2": 100, "3": 100, "4": 100}
    paths = write_dataset(tmp_path, n_train=40, n_test=8)
    assert paths["train"].read_text().count("\n") == 40


def test_real_agnews_test_counts(tmp_path):
    src = realdata("ag_news", "test.csv")
    m = prepare(AG, {"test": str(src)}, tmp_path)
    s = m["splits"]["test"]
    assert s["rows"] == 7600
    assert s["label_counts"] == {"World": 1900, "Sports": 1900, "Business": 1900, "Sci/Tech": 1900}
    assert s["malformed"]["count"] == 0
    recs = read_records(tmp_path / "agnews_test.jsonl")
    assert len({r["id"] for r in recs}) == 7600
    assert {r["output"] for r in recs} == {"1: World", "2: Sports", "3: Business", "4: Sci/Tech"}


def test_train_reprepares_when_the_recipe_data_changes(tmp_path, synth_dir):
    from conftest import REPO
    from ftk.recipe import load_recipe
    from ftk.train.run import ensure_prepared

    base = [f"data.train={synth_dir / 'train.csv'}", f"data.test={synth_dir / 'test.csv'}",
            f"data.prepared_dir={tmp_path / 'p'}"]
    r1 = load_recipe(REPO / "configs" / "agnews_tiny_cpu.yaml", base)
    m1 = ensure_prepared(r1)
    assert ensure_prepared(r1)["splits"]["train"]["sha256"] == m1["splits"]["train"]["sha256"]
    r2 = load_recipe(REPO / "configs" / "agnews_tiny_cpu.yaml", base + ["data.prompt_version=v3"])
    m2 = ensure_prepared(r2)
    assert m2["prompt_version"] == "v3" and m2["splits"]["train"]["sha256"] != m1["splits"]["train"]["sha256"]


def test_undecodable_bytes_are_malformed_rows_with_line(tmp_path):
    src = tmp_path / "bytes.csv"
    src.write_bytes(b'"1","good","row"\n"2","bad \xff\xfe byte","row"\n"3","fine","again"\n')
    with pytest.raises(FtkError, match=rf"{src}:2: bytes that are not valid utf-8"):
        prepare(AG, {"test": str(src)}, tmp_path / "o")
    with pytest.raises(FtkError, match=r"1 of 3 rows \(33.3%\) are malformed, more than --max-malformed 1%"):
        prepare(AG, {"test": str(src)}, tmp_path / "o", skip_malformed=True)
    m = prepare(AG, {"test": str(src)}, tmp_path / "o", skip_malformed=True, max_malformed=0.5)
    assert m["splits"]["test"]["rows"] == 2
    assert m["splits"]["test"]["malformed"]["by_reason"] == {"undecodable": 1}


def test_strict_stops_at_the_first_malformed_row(tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text('"1","a","b"\n"9","c","d"\n"8","e","f"\n"2","g","h"\n"3","i","j"\n"4","k","l"\n')
    with pytest.raises(FtkError) as exc:
        prepare(AG, {"test": str(src)}, tmp_path / "o", strict=True)
    assert f"{src}:2:" in str(exc.value) and "--strict" in str(exc.value)
    with pytest.raises(FtkError, match="2 malformed row"):  # the default counts them all first
        prepare(AG, {"test": str(src)}, tmp_path / "o")


def test_near_duplicates_by_rouge_l_match_rouge_score(tmp_path):
    from rouge_score import rouge_scorer, tokenize

    from ftk.data.cleaning import drop_near_duplicates, rouge_l_f
    from ftk.data.rows import Example

    texts = ["The red mug has a wide handle and holds hot tea",
             "The red mug has a wide handle and holds hot coffee",   # near duplicate of the first
             "Trail running shoes with a grippy sole",
             "A completely different sentence about laptops"]
    sc = rouge_scorer.RougeScorer(["rougeL"])
    for a in texts:
        for b in texts:
            ours = rouge_l_f(tokenize.tokenize(a, None), tokenize.tokenize(b, None))
            assert ours == pytest.approx(sc.score(a, b)["rougeL"].fmeasure, abs=1e-9)
    exs = [Example(line=i, input=t, target="x") for i, t in enumerate(texts)]
    kept, dropped = drop_near_duplicates(exs, 0.7)
    assert dropped == 1 and [e.line for e in kept] == [0, 2, 3]
    kept, dropped = drop_near_duplicates(exs, 0.95)
    assert dropped == 0
    from ftk.data.cleaning import drop_near_against

    kept, dropped = drop_near_against(exs[1:], exs[:1], 0.7)  # leakage: near the reference row only
    assert dropped == 1 and [e.line for e in kept] == [2, 3]
    kept, dropped = drop_near_against(exs, [], 0.7)
    assert dropped == 0 and len(kept) == 4


def test_an_unreachable_hub_is_one_line_in_seconds(tmp_path, monkeypatch):
    """No Hub (here: HF_ENDPOINT pointing at a closed port): one TCP probe decides, the Hub clients run
    offline (local cache only), and a dataset not in the cache is one line, exit 2, without the
    Hub clients' retry lines (5 retries, ~25-35 s before)."""
    import socket
    import time

    from conftest import ftk_here

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    t0 = time.monotonic()
    proc = ftk_here("prepare", "--task", "agnews", "--test", "hub:ag_news", "--out", tmp_path / "out")
    assert time.monotonic() - t0 < 20
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "the Hub is unreachable" in lines[0] and "'ag_news'" in lines[0], proc.stderr
    assert "Retry" not in proc.stdout + proc.stderr and not (tmp_path / "out").exists()
