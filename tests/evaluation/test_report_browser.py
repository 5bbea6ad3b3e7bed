"""The report really renders: headless Chromium loads it offline, runs a check in the page, and screenshots it.

Chromium is Debian's `chromium` package, which `make test` installs (scripts/setup-system.sh) where it can. The
test skips, with the reason printed as a warning, only when Chromium is missing and could not have been installed:
no apt-get, or neither root nor password-less sudo. Where the set-up could have installed it, a missing Chromium
fails the test (a broken install step must not hide as a skip).
"""

import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from brainllm.evaluation import metrics as M
from brainllm.evaluation.evaluate import EvalConfig
from brainllm.evaluation.report import build_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars"]

CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var loaded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var cond = document.querySelector('table.conditions');
  var condRows = document.querySelectorAll('table.conditions tbody tr').length;
  var input = document.querySelector('input.filter');
  input.value = 'st03-1';
  brainllmFilter(input, 'samples-0');
  var shown = Array.prototype.slice.call(document.getElementById('samples-0').tBodies[0].rows)
      .filter(function (r) { return r.style.display !== 'none'; }).length;
  var out = document.createElement('pre');
  out.textContent = 'CHECK images=' + imgs.length + ' loaded=' + loaded + ' condrows=' + condRows +
      ' condheight=' + Math.round(cond.getBoundingClientRect().height) + ' filtered=' + shown;
  document.body.appendChild(out);
});
</script>"""


def _can_be_root() -> bool:
    """Root, or sudo without a password: what scripts/setup-system.sh needs to install Chromium."""
    if os.geteuid() == 0:
        return True
    if not shutil.which("sudo"):
        return False
    return subprocess.run(["sudo", "-n", "true"], capture_output=True, timeout=10).returncode == 0


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if not shutil.which("apt-get"):
        reason = "headless Chromium is not installed and apt-get is not available: the report was not rendered"
    elif not _can_be_root():
        reason = ("headless Chromium is not installed, and apt-get needs root (not root, no password-less sudo): "
                  "the report was not rendered; `sudo apt-get install --no-install-recommends chromium` adds it")
    else:
        pytest.fail("Chromium is not installed although apt-get could install it: run `bash scripts/setup-system.sh`"
                    " (the install step of `make test` and `make demo` runs it when it creates .venv).")
    warnings.warn(reason, stacklevel=2)
    pytest.skip(reason)


def _run(browser: str, args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(fake_runs, tmp_path):
    browser = _browser()
    page = build_report(fake_runs[:2], tmp_path / "rep", metric_config=M.MetricConfig(semantic=False),
                        config=EvalConfig(n_boot=300, n_permutations=1000))
    html = page.read_text(encoding="utf-8")
    n_images = html.count("<img ")
    checked = tmp_path / "rep" / "checked.html"
    checked.write_text(html.replace("</body>", CHECK + "</body>"), encoding="utf-8")

    out = _run(browser, ["--virtual-time-budget=10000", "--dump-dom", checked.as_uri()], tmp_path / "profile1")
    found = re.search(r"CHECK (images=\d+ loaded=\d+ condrows=\d+ condheight=\d+ filtered=\d+)", out.stdout)
    assert found, f"no check marker in the DOM; chromium stderr:\n{out.stderr[-3000:]}"
    fields = dict(item.split("=") for item in found.group(1).split())
    assert int(fields["images"]) == n_images > 0
    assert int(fields["loaded"]) == n_images  # every embedded PNG decoded with a non-zero natural width
    assert int(fields["condrows"]) >= 2 * 13  # both runs' condition tables have their metric rows
    assert int(fields["condheight"]) > 100  # and take space on the page
    assert int(fields["filtered"]) == 1  # the sample filter leaves the one matching row
    assert "bleu1_per_sample" in out.stdout and "st00-0" in out.stdout

    shot = tmp_path / "shot.png"
    out = _run(browser, ["--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()], tmp_path / "profile2")
    assert shot.is_file(), out.stderr[-3000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[0] == 2400 and pixels.shape[1] == 1280
    ink = np.mean(np.abs(pixels - 1.0).sum(axis=-1) > 0.3)  # fraction of clearly non-white pixels
    assert ink > 0.02, f"the screenshot is (almost) blank: {ink:.4f} non-white"
    colours = len(np.unique((pixels[::4, ::4] * 15).round(), axis=0))
    assert colours > 20  # text, table shading and coloured plots, not a flat page
