"""report.html in a real headless browser (Chromium): no horizontal overflow at 1400 px and
no broken image.  Skipped, with the reason, where no Chromium is installed
(Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rtopt.outputs.compare import compare, read_table, write_table
from rtopt.outputs.report import render

REPO_ROOT = Path(__file__).resolve().parents[1]
HYPO = REPO_ROOT / "instances" / "classic-mizuta-hypo.toml"
WIDTH = 1400
"""The width at which a tester saw the instance navigation run off screen."""

BROWSER = next((b for b in (shutil.which(n) for n in ("chromium", "chromium-browser",
                                                      "google-chrome", "chrome")) if b), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no headless Chromium installed "
                                                        "(Debian: apt-get install chromium)")

PROBE = """<script>
window.addEventListener('load', function () {
  var de = document.documentElement, imgs = Array.prototype.slice.call(document.images);
  var r = {scrollWidth: de.scrollWidth, clientWidth: de.clientWidth, images: imgs.length,
           broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                       .map(function (i) { return i.alt; }),
           navHeight: document.querySelector('nav').getBoundingClientRect().height};
  var pre = document.createElement('pre');
  pre.id = 'rtopt-probe';
  pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script>"""
"""Measures the page after load and writes the figures into the DOM for --dump-dom."""


def measure(page: Path, width: int = WIDTH) -> dict:
    """Load ``page`` (a copy with :data:`PROBE` injected) in headless Chromium at ``width``."""
    probe = page.with_name(page.stem + ".probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    # --virtual-time-budget lets the load event fire before the DOM is dumped; the timeout
    # only bounds a browser that hangs (a normal run takes one or two seconds)
    cp = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu",
                         f"--window-size={width},1000", "--virtual-time-budget=5000",
                         "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                        timeout=120)
    m = re.search(r'<pre id="rtopt-probe">(.*?)</pre>', cp.stdout, re.S)
    assert m, f"no measurement from the browser (exit {cp.returncode}): {cp.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """One real run, plus rows for instances with long names (no plan files: quick), so that
    the navigation has more than one line of links at 1400 px."""
    out = tmp_path_factory.mktemp("browser") / "out"
    compare([HYPO], ["exhaustive"], out, report=False)
    rows = read_table(out / "results.csv")
    extra = [{**rows[0], "instance": f"a-rather-long-instance-name-number-{k}-in-the-navigation",
              "plan_file": ""} for k in range(6)]
    write_table(rows + extra, out / "results.csv")
    assert render(out) == []
    return out / "report.html"


def test_report_fits_1400_px_and_every_image_loads(report):
    m = measure(report)
    assert m["images"] >= 2  # performance profiles and the plan figure
    assert m["broken"] == []
    assert m["scrollWidth"] <= m["clientWidth"] <= WIDTH, m
    assert m["navHeight"] > 40, m  # the links wrapped onto more lines instead of overflowing


def test_the_probe_sees_overflow(report, tmp_path):
    """The measurement can fail: the navigation as it was (links that cannot wrap) overflows."""
    page = tmp_path / "old-nav.html"
    page.write_text(report.read_text().replace(
        "</style>", "nav { display: block; } nav a { white-space: nowrap; margin-right: 14px; }"
                    "</style>"))
    m = measure(page)
    assert m["scrollWidth"] > WIDTH, m
