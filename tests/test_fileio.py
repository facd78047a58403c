"""fileio.output_to: library output (file descriptors 1 and 2) goes to a log; on an error its tail
comes back to the terminal. Run in a child process: the terminal there is real file descriptors."""

import subprocess
import sys

import pytest

CHILD = """
import os, sys
from ftk.fileio import output_to
log = sys.argv[1]
try:
    with output_to(log):
        os.write(1, b"from a C library\\n")
        print("from python", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        if sys.argv[2] == "fail":
            raise RuntimeError("boom")
except RuntimeError:
    print("caught")
print("after")
"""


def _child(tmp_path, mode):
    log = tmp_path / "sub" / "build.log"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(log), mode], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc, log


def test_output_to_catches_fd_level_writes_and_restores(tmp_path):
    proc, log = _child(tmp_path, "ok")
    assert proc.stdout == "after\n" and proc.stderr == ""
    assert log.read_text() == "from a C library\nfrom python\nto stderr\n"


def test_output_to_shows_the_tail_on_error(tmp_path):
    proc, log = _child(tmp_path, "fail")
    assert "from a C library\nfrom python\nto stderr" in proc.stderr  # the log's tail, back on the terminal
    assert proc.stdout == "caught\nafter\n"


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_outputs_follow_the_users_umask(tmp_path, mask):
    """Atomic writes went through mkstemp and came out 0600 whatever the umask; now as open() makes them."""
    import os

    from ftk.fileio import staged_dir, write_json

    old = os.umask(mask)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
        with staged_dir(tmp_path / "folder") as stage:
            (stage / "f.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "folder" / "f.txt").stat().st_mode & 0o777 == 0o666 & ~mask
