"""Every shipped CPU twin (configs/*_tiny.yaml) really runs here: prepare, train, eval.

A few steps each (the recipes' own settings otherwise), on the real files in ../shared/realdata.
"""

import json

import pytest

from conftest import REALDATA, REPO, run_ftk

pytestmark = pytest.mark.slow
TWINS = sorted((REPO / "configs").glob("*_tiny.yaml"))


@pytest.mark.parametrize("recipe", TWINS, ids=lambda p: p.stem)
def test_twin_runs(tmp_path, recipe):
    if not REALDATA.exists():
        pytest.skip("twins read ../shared/realdata")
    overrides = ["train.max_steps=2", "eval.limit=8", f"runs_dir={tmp_path / 'runs'}",
                 f"model.name_or_path={tmp_path / 'model'}", f"data.prepared_dir={tmp_path / 'prepared'}"]
    proc = run_ftk("train", recipe, *overrides)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "finished" and all(s["status"] == "finished" for s in m["stages"])
    proc = run_ftk("eval", run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "eval-test" / "metrics.json").read_text())
    assert metrics["n"] == 8
    assert 0.0 <= metrics["invalid_rate"] <= 1.0
