"""The README's real-model table is exactly what `python scripts/real_results.py` rebuilds from the
committed per-item results in results/real/ (every figure recomputed from the items; no training)."""

import subprocess
import sys

from conftest import REPO

BEGIN, END = "<!-- real-results:begin -->", "<!-- real-results:end -->"


def test_the_readme_table_is_rebuilt_from_the_committed_results():
    published = sorted((REPO / "results" / "real").glob("*/study.json"))
    assert published, "no published study in results/real/"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "real_results.py")], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.count(BEGIN) == 1 and readme.count(END) == 1
    block = readme.split(BEGIN)[1].split(END)[0]
    assert block.strip() == proc.stdout.strip(), "README's real-model table differs from the rebuilt one: " \
        "run `python scripts/real_results.py` and paste its output between the markers"
    for p in published:  # every published study has a row in the table
        assert f"| {p.parent.name}" in block
