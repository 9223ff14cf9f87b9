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


ROBUSTNESS = "mnist_robustness_under_pgd_white_box"


def legend_entries(dom: str, plot: str) -> set[str]:
    """The texts of one SVG plot of a dumped page (the offline page draws SVG)."""
    start = dom.index(f'id="{plot}"')
    end = dom.find("vegaEmbed", start)
    return set(re.findall(r"<text[^>]*>([^<]+)</text>", dom[start : end if end > 0 else None]))


def test_every_variant_has_its_legend_entry_and_no_revision_entry(page, browser):
    """`dvc plots show`: the robustness chart has every arm and the random draws (a line and a
    band from the lowest draw to the highest), and no legend says "workspace"."""
    dom = headless(browser, "--dump-dom", page.as_uri()).stdout
    texts = legend_entries(dom, ROBUSTNESS)
    arms = {"original", "hardened", "inverse", "compress_only", "amplify_only", "random"}
    assert arms <= texts, texts
    assert not any("workspace" in t or "revision" in t for t in texts), texts


@pytest.fixture(scope="module")
def diff_page(tmp_path_factory) -> Path:
    """`dvc plots diff HEAD` with the offline template, the workspace's PGD curves moved."""
    from fragile_neurons.reporting import offline

    repo = tmp_path_factory.mktemp("diff")
    for name in ("dvc.yaml", "params.yaml", "plots"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, repo / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=repo, check=True)
    shutil.rmtree(repo / ".dvc" / "plots", ignore_errors=True)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "plots"], cwd=repo, check=True)
    csv = repo / "plots" / "mnist" / "evaluate.csv"
    lines = csv.read_text().splitlines()
    head = lines[0].split(",")
    moved = [
        ",".join(
            f"{max(0.0, float(v) - 0.05):.4f}" if name.startswith("pgd_") else v
            for name, v in zip(head, line.split(","), strict=True)
        )
        for line in lines[1:]
    ]
    csv.write_text("\n".join([lines[0], *moved]) + "\n")
    offline.main([str(repo / "offline.html")])
    diff = [str(BIN / "dvc"), "plots", "diff", "HEAD", "--html-template", "offline.html"]
    subprocess.run([*diff, "-o", "out"], cwd=repo, check=True, capture_output=True)
    return repo / "out" / "index.html"


def test_plots_diff_tells_the_revisions_apart(diff_page, browser, tmp_path):
    """Each variant of each revision is a series of its own colour, named "<variant> @ HEAD"
    for the commit and plainly for the workspace."""
    dom = headless(browser, "--dump-dom", diff_page.as_uri()).stdout
    texts = legend_entries(dom, ROBUSTNESS)
    for arm in ("original", "hardened", "random", "compress_only"):
        assert {arm, f"{arm} @ HEAD"} <= texts, texts
    assert not any("workspace" in t for t in texts), texts
    shot = tmp_path / "diff.png"
    headless(browser, "--window-size=1600,2400", f"--screenshot={shot}", diff_page.as_uri())
    assert shot.is_file(), "no screenshot of the diff page"
