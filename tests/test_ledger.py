"""The farm machine's ledger across worker processes (``executors/ledger.py``): real processes, real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestrator.executors.ledger import Entry, Ledger

PUBLISH = """
import os, sys
from pathlib import Path
from orchestrator.executors.ledger import Entry, Ledger
Ledger(Path(sys.argv[1])).publish("run-1", Entry(key="theirs", owner=os.getpid(), need=300, rss=120, started_at=5.0,
                                                 cpu=0.5, stopping=False))
print("published", flush=True)
sys.stdin.read()  # alive until the test closes stdin
"""


def test_each_process_sees_the_others_builds_while_they_live(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger")
    mine = Entry(key="mine", owner=os.getpid(), need=100, rss=0, started_at=1.0, cpu=None, stopping=False)
    ledger.publish("run-1", mine)
    other = subprocess.Popen([sys.executable, "-c", PUBLISH, str(tmp_path / "ledger")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline() == "published\n"
        (theirs,) = ledger.others("run-1")
        assert theirs == Entry(key="theirs", owner=other.pid, need=300, rss=120, started_at=5.0, cpu=0.5,
                               stopping=False)
        assert ledger.others("run-2") == []  # another run's builds are that run's
    finally:
        other.communicate("")
    assert ledger.others("run-1") == []  # its process is gone: so are its builds
    owners = [path.name.split("-", 1)[0] for path in (tmp_path / "ledger" / "run-1").iterdir()]
    assert owners == [str(os.getpid())]  # the dead process's file went with it
    ledger.withdraw("run-1", "mine")
    ledger.end_run("run-1")
    assert not (tmp_path / "ledger" / "run-1").exists()
