"""Reading calendars with Mozilla's ical.js (Thunderbird's parser) through Node, for the
parse-back tests: the `icaljs` fixture (tests/js with ical.js installed) and read_events."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

JS = Path(__file__).resolve().parent / "js"


@pytest.fixture(scope="session")
def icaljs() -> Path:
    """tests/js with ical.js installed (npm ci from its lock file when node_modules is missing).
    Without Node the test is skipped locally and fails on CI, where it is required."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Node.js and npm are required on CI to read calendars with ical.js (issue 13)")
        pytest.skip("Node.js/npm not installed: the ical.js (Thunderbird) reading is not checked")
    if not (JS / "node_modules" / "ical.js" / "package.json").exists():
        subprocess.run([npm, "ci", "--prefix", str(JS), "--no-audit", "--no-fund"],
                       check=True, capture_output=True, timeout=300)
    return JS


def read_events(js: Path, body: bytes) -> dict[str, Any]:
    """One calendar as ical.js reads it: {"calendar": {...}, "events": {uid: {...}}}, the
    events' start and end as aware UTC datetimes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "calendar.ics"
        path.write_bytes(body)
        proc = subprocess.run(["node", str(js / "read_events.mjs"), str(path)],
                              capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    (read,) = json.loads(proc.stdout).values()
    for event in read["events"].values():
        for key in ("start", "end"):
            event[key] = datetime.fromisoformat(event[key].replace("Z", "+00:00"))
    return read  # type: ignore[no-any-return]
