"""Headless Chromium (Debian's package) for the report tests: what a page looks like once
rendered, read from the rendered DOM, and a screenshot.

    facts = rendered_facts(Path("runs/quick/report.html"))   # images, tables, headings
    screenshot(Path("runs/quick/report.html"), Path("docs/report.png"))

    python tests/browser.py REPORT.html OUT.png      # the screenshots under docs/
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--allow-file-access-from-files"]  # fmt: skip
HARNESS = """<!doctype html><html><body><pre id=result>pending</pre>
<iframe id=page src="{src}" style="width:1200px;height:2000px"></iframe>
<script>
document.getElementById('page').addEventListener('load', () => {{
  const doc = document.getElementById('page').contentDocument;
  const images = [...doc.images].map(i => ({{alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                                             width: i.naturalWidth}}));
  const tables = [...doc.querySelectorAll('table')].map(t => ({{
    rows: t.rows.length, heading: (t.previousElementSibling || {{}}).textContent || ''}}));
  const headings = [...doc.querySelectorAll('h1, h2')].map(h => h.textContent);
  document.getElementById('result').textContent = JSON.stringify({{images, tables, headings,
    details: doc.querySelectorAll('details').length, title: doc.title}});
}});
</script></body></html>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], timeout: int = 120) -> str:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium() or "chromium", *FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              check=True).stdout  # fmt: skip


def rendered_facts(page: Path) -> dict:
    """Images (loaded or not, width), tables (rows, heading), headings, after rendering."""
    with tempfile.TemporaryDirectory() as tmp:
        harness = Path(tmp) / "harness.html"
        harness.write_text(HARNESS.format(src=page.resolve().as_uri()))
        dom = _run(["--virtual-time-budget=15000", "--dump-dom", harness.as_uri()])
    m = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    assert m and m.group(1) != "pending", "the page did not finish loading"
    text = m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
    return json.loads(text.replace("&gt;", ">"))


def screenshot(page: Path, out: Path, size: str = "1100,1600") -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={out.resolve()}", f"--window-size={size}", page.resolve().as_uri()])
    return out


if __name__ == "__main__":
    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
