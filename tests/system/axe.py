"""axe-core, Deque's accessibility engine, run inside the page under test: `axe_source` (the
script, installed from tests/js's lock file when missing) and `assert_accessible`.

The pages' Content-Security-Policy allows only the app's own scripts, so axe is not added as a
<script> tag (Chromium would refuse it, and the tab counts a refusal as a failure); Playwright's
evaluate runs it through the DevTools protocol, which a page's CSP does not govern.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

JS = Path(__file__).resolve().parents[1] / "js"
AXE = JS / "node_modules" / "axe-core" / "axe.min.js"
# WCAG 2.1 A and AA, the level the pages are held to.
RUN = """async () => {
  const tags = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];
  const result = await axe.run(document, {runOnly: {type: "tag", values: tags}});
  return result.violations.map(v => v.id + ": " + v.help + " — " +
                               v.nodes.slice(0, 3).map(n => n.target.join(" ")).join(", "));
}"""


@pytest.fixture(scope="session")
def axe_source() -> str:
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            if os.environ.get("CI") or os.environ.get("CALSYNC_CI"):
                pytest.fail("npm is required on CI to install axe-core for the accessibility checks")
            pytest.skip("npm not installed: the pages' accessibility is not checked")
        subprocess.run([npm, "ci", "--prefix", str(JS), "--no-audit", "--no-fund"],
                       check=True, capture_output=True, timeout=300)
    return AXE.read_text(encoding="utf-8")


def assert_accessible(page: Any, source: str) -> None:
    """No WCAG 2.1 AA violation that axe-core finds on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(source + "\n;undefined")  # a script, not a function to call
    violations = page.evaluate(RUN)
    assert violations == [], f"{page.url}: " + "\n".join(violations)
