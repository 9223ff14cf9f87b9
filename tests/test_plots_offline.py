"""`dvc plots show` renders without internet: the page of the offline template (offline.py)
inlines Vega, Vega-Lite and Vega-Embed, and headless Chromium draws every Vega plot of the
committed plots with it; the series of a plot have colours of their own."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def browser() -> str:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if not found:
        pytest.skip("no headless Chromium here (Debian: apt-get install chromium; .ci/run does)")
    return found


def headless(browser: str, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=30000"]  # fmt: skip
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """`dvc plots show --html-template <offline template>` of a copy of the committed plots."""
    from fragile_neurons.reporting import offline

    repo = tmp_path_factory.mktemp("plots")
    for name in ("dvc.yaml", "params.yaml", "plots"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, repo / name)
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=repo, check=True)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    offline.main([str(repo / "offline.html")])
    show = [str(BIN / "dvc"), "plots", "show", "--html-template", "offline.html", "-o", "out"]
    subprocess.run(show, cwd=repo, check=True, capture_output=True)
    return repo / "out" / "index.html"


def test_the_page_needs_no_network(page):
    text = page.read_text()
    assert "window.vegaEmbed=" in text  # the libraries, inlined
    assert not re.search(r"<script[^>]+src=", text), "a script is loaded from elsewhere"


def test_every_vega_plot_draws_offline(page, browser, tmp_path):
    plots = re.findall(r"vegaEmbed\('#([^']+)'", page.read_text())
    assert len(plots) >= 14  # 7 per default run
    dom = headless(browser, "--dump-dom", page.as_uri()).stdout
    for plot in plots:
        start = dom.index(f'id="{plot}"')
        end = min([dom.index(f'id="{p}"') for p in plots if dom.index(f'id="{p}"') > start]
                  or [len(dom)])  # fmt: skip
        drawn = dom[start:end]
        assert 'class="marks"' in drawn or "<canvas" in drawn, f"{plot} did not draw"
        assert 'role="graphics-symbol"' in drawn or "<canvas" in drawn, f"{plot} has no marks"


def test_a_screenshot_shows_coloured_series(page, browser, tmp_path):
    import numpy as np
    from matplotlib.colors import rgb_to_hsv
    from matplotlib.image import imread

    shot = tmp_path / "plots.png"
    headless(browser, "--window-size=1600,2400", f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), "no screenshot"
    hsv = rgb_to_hsv(imread(shot)[..., :3])
    coloured = hsv[(hsv[..., 1] > 0.4) & (hsv[..., 2] > 0.3)]
    hues, _ = np.histogram(coloured[:, 0], bins=12, range=(0, 1))
    assert (hues > 300).sum() >= 3, f"fewer than 3 series colours: {hues}"
