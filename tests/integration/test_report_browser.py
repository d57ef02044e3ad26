"""Issue 35: the HTML report as a browser shows it. A real headless Chromium (the OS package
``chromium-headless-shell``, installed by ``make test`` like the Xvfb packages) opens the report offline: every image
loads (all embedded), no script error, the worst images first, and a screenshot that is not blank."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")

#: appended to a copy of the report: the page's own account of what loaded, written into the DOM Chromium dumps
CHECK = """<script>
window.__errors = window.__errors || [];
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const external = [...document.querySelectorAll('[src],[href]')].map(e => e.getAttribute('src') || e.getAttribute('href'))
    .filter(u => u && !u.startsWith('data:') && !u.startsWith('#'));
  document.body.setAttribute('data-check', JSON.stringify({images: imgs.length, broken, external, errors: window.__errors}));
});
</script>"""
CATCH = "<script>window.__errors=[];window.addEventListener('error',e=>window.__errors.push(String(e.message||e.type)),true);</script>"


def _browser() -> str:
    found = next((b for b in map(shutil.which, BROWSERS) if b), None)
    assert found, "no headless Chromium: make test installs chromium-headless-shell (apt)"
    return found


def _chromium(*args: str) -> subprocess.CompletedProcess:
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
           "--virtual-time-budget=15000", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_the_report_loads_whole_and_offline_in_a_real_browser(tmp_path):
    data, report = tmp_path / "data", tmp_path / "report"
    run = [sys.executable, "-m", "unetkit"]
    subprocess.run([*run, "synth", str(data), "--n", "3", "--size", "192", "--style", "nucleoli", "--seed", "2"],
                   check=True, capture_output=True)  # fmt: skip
    done = subprocess.run([*run, "evaluate", "nuclei", str(data), "--out", str(tmp_path / "pred"), "--report",
                           str(report), "--no-progress"], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = (report / "index.html").read_text(encoding="utf-8")
    harness = tmp_path / "check.html"
    harness.write_text(page.replace("<head>", "<head>" + CATCH, 1).replace("</body>", CHECK + "</body>", 1))
    dom = _chromium("--dump-dom", harness.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r"data-check=\"([^\"]*)\"", dom.stdout)
    assert found, dom.stdout[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"'))
    assert check["images"] >= 3 + 3 and not check["broken"], check  # thumbnails, full views, plots, crops
    assert not check["external"] and not check["errors"], check  # self-contained, offline; no script error
    shot = tmp_path / "report.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1280,1600", (report / "index.html").as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    picture = np.asarray(Image.open(shot).convert("RGB"))
    assert picture.shape[:2] == (1600, 1280) and picture.std() > 10  # a page, not a blank window
    import os

    if os.environ.get("UNETKIT_DOCS_SCREENSHOTS") == "1":
        from pathlib import Path

        Image.fromarray(picture).save(Path(__file__).resolve().parents[2] / "docs" / "report.png")
