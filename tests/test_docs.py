"""The documentation holds together: no merge-conflict markers in any tracked text file; every
relative link and `#anchor` of README.md, docs/*.md, CHANGELOG.md and benchmarks/README.md
resolves (anchors as GitHub makes them from headings); README.md is a front door: at most 200
lines, with the findings in its first 60; its taste of the API runs; the guide's `dvc exp show`
recipe fits 100 columns; CITATION.cff names the paper and pyproject.toml's version."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from fragile_neurons.reporting import report

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "CHANGELOG.md",
    ROOT / "benchmarks" / "README.md",
]
README_LINES, FINDINGS_BY = 200, 60

# Git's conflict markers (written here so that no line of this file starts with one)
MARKERS = ("<" * 7 + " ", "=" * 7, ">" * 7 + " ")


def conflict_markers(text: str) -> list[int]:
    """The 1-based numbers of the lines that are a merge-conflict marker: `<<<<<<< ...`,
    `=======` alone, `>>>>>>> ...`."""
    return [
        number
        for number, line in enumerate(text.splitlines(), 1)
        if line.startswith((MARKERS[0], MARKERS[2])) or line.rstrip("\r") == MARKERS[1]
    ]


def tracked_text_files() -> list[Path]:
    """The files git tracks in this checkout that are text (no NUL byte in their first 8 KiB)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True)
    if listed.returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout")
    files = [ROOT / name for name in listed.stdout.decode().split("\0") if name]
    found = []
    for path in files:
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                if b"\0" not in f.read(8192):
                    found.append(path)
    return found


def test_the_marker_finder_finds_each_marker_and_nothing_else():
    text = "\n".join(
        ["a", MARKERS[0] + "HEAD", "ours", MARKERS[1], "theirs", MARKERS[2] + "branch", "b"]
    )
    assert conflict_markers(text) == [2, 4, 6]
    assert conflict_markers("Title\n" + "=" * 8 + "\n" + " " + MARKERS[0] + "x\n== x ==\n") == []


def test_no_tracked_text_file_holds_a_merge_conflict_marker():
    found = {}
    for path in tracked_text_files():
        lines = conflict_markers(path.read_text(errors="replace"))
        if lines:
            found[str(path.relative_to(ROOT))] = lines
    assert not found, f"unresolved merge conflicts (file: lines): {found}"


# --- links -------------------------------------------------------------------------------------

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)"
)
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def prose_lines(text: str, spans: bool = False) -> list[tuple[int, str]]:
    """(number, line) of the lines outside fenced code blocks, inline code spans blanked unless
    `spans`."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)[0] * len(opening.group(1))
        elif fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
        else:
            blank = line if spans else CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
            lines.append((number, blank))
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text (markup dropped) lowercased, every character
    but letters, digits, `_`, `-` and spaces dropped, spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file, repeated ones numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text(), spans=True):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        name = f"{base}-{seen[base]}" if base in seen else base
        seen[base] = seen.get(base, 0) + 1
        found.add(name)
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every inline and reference link and image outside code."""
    found = []
    for number, line in prose_lines(path.read_text()):
        found += [(number, m.group(1)) for m in INLINE_LINK.finditer(line)]
        reference = REFERENCE.match(line)
        if reference:
            found.append((number, reference.group(1)))
    return found


def broken(path: Path, target: str, root: Path = ROOT) -> str | None:
    """Why a link target of `path` does not resolve within `root`, or None (external links are
    not checked)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
        return None  # https:, mailto:, ...
    file, _, anchor = target.partition("#")
    destination = (path.parent / unquote(file)).resolve() if file else path
    if file.startswith("/") or not destination.exists():
        return f"no file {file}"
    if root not in destination.parents and destination != root:
        return f"{file} lies outside the repository"
    if anchor and destination.suffix == ".md" and unquote(anchor) not in anchors(destination):
        return f"no heading with the anchor #{anchor} in {destination.relative_to(root)}"
    return None


def test_the_link_checker_resolves_as_github_does(tmp_path):
    assert slug("Parameters (`params.yaml`)") == "parameters-paramsyaml"
    assert slug("The paper's ResNet-18 configurations") == "the-papers-resnet-18-configurations"
    assert slug("AutoAttack: the masking check") == "autoattack-the-masking-check"
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Part\n\n## Part\n\n## Its `code`\n\n"
        "```bash\n# not a heading\n[x](nowhere.md)\n```\n\n"
        "[a](#part-1) [b](#title) `[c](missing.md)` [d](other.md#Title) [e](https://x.y/z)\n"
        "[f](#not-a-heading) [g](page.md#part) ![h](img.png)\n\n[ref]: missing.md\n"
    )
    (tmp_path / "other.md").write_text("# Title\n")
    assert anchors(page) == {"title", "part", "part-1", "its-code"}
    problems = [(t, why) for _, t in links(page) if (why := broken(page, t, tmp_path))]
    assert problems == [
        ("other.md#Title", "no heading with the anchor #Title in other.md"),
        ("#not-a-heading", "no heading with the anchor #not-a-heading in page.md"),
        ("img.png", "no file img.png"),
        ("missing.md", "no file missing.md"),
    ]


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_relative_link_and_anchor_resolves(path):
    problems = [
        f"{path.relative_to(ROOT)}:{number}: ({target}) {why}"
        for number, target in links(path)
        if (why := broken(path, target))
    ]
    assert not problems, "\n".join(problems)


# --- the front door ----------------------------------------------------------------------------


def test_the_readme_is_a_front_door_with_the_findings_first():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    assert lines[2:6] == [
        "```bash",
        "make repro   # first use creates .venv and installs everything, fetches missing "
        "datasets, then runs dvc repro",
        "make test    # first use creates .venv and installs everything, then runs the test suite",
        "```",
    ]
    assert report.BEGIN in lines and report.END in lines, "the generated findings' markers"
    begin, end = lines.index(report.BEGIN), lines.index(report.END)
    assert begin < end < FINDINGS_BY, f"the findings end on line {end + 1}, not by {FINDINGS_BY}"
    findings = lines[begin + 1 : end]
    assert any(line.startswith("| claim | model | primary endpoint |") for line in findings)
    assert sum("**" in line for line in findings if line.startswith("- ")) >= 2  # the verdicts


def test_the_citation_names_the_paper_and_this_version_of_the_software():
    import yaml

    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert citation["type"] == "software" and citation["version"] == version.group(1)
    (paper,) = citation["references"]
    assert paper["title"] == "Adversarial Robustness in Deep Learning: Attacks on Fragile Neurons"
    assert [a["family-names"] for a in paper["authors"]] == ["Pravin", "Martino", "Nicosia", "Ojha"]


# --- the `dvc exp show` recipe ------------------------------------------------------------------


def recipe() -> str:
    """The first bash block of docs/guide.md's section "Experiments on one screen"."""
    text = (ROOT / "docs" / "guide.md").read_text()
    section = text.split("\n### Experiments on one screen\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)


def test_the_exp_show_recipe_fits_100_columns_on_a_seed_sweep(tmp_path):
    """A small synthetic sweep (the committed headlines as the baseline, and experiments of each
    run that move them, saved with `dvc exp save`): the guide's recipe gives a row per
    experiment with the primary endpoints' columns, in at most 100 columns."""
    bin_dir = Path(sys.executable).parent
    if shutil.which("column") is None or not (bin_dir / "dvc").exists():
        pytest.skip("needs dvc beside this Python and `column` (util-linux or bsdextrautils)")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env |= {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def run(*command: str) -> str:
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        return done.stdout

    shutil.copy(ROOT / "params.yaml", tmp_path)
    headlines = sorted(ROOT.glob("metrics/*/*/*.json"))
    for path in headlines:
        (tmp_path / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / path.relative_to(ROOT))
    names = "".join(f"  - {p.relative_to(ROOT)}\n" for p in headlines)
    (tmp_path / "dvc.yaml").write_text(f"metrics:\n{names}params:\n  - params.yaml\n")
    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "baseline")
    params = (tmp_path / "params.yaml").read_text()
    for run_name, seed in (("mnist", 1), ("cifar10", 1), ("mnist", 2)):
        (tmp_path / "params.yaml").write_text(params.replace("seed: 0", f"seed: {seed}", 1))
        for path in (tmp_path / "metrics" / run_name).glob("*/*.json"):
            fields = json.loads(path.read_text())
            moved = {k: v + 0.01 * seed if isinstance(v, float) else v for k, v in fields.items()}
            path.write_text(json.dumps(moved))
        run("dvc", "exp", "save", "-q", "-n", f"seed-{run_name}-{seed}")
        run("git", "checkout", "-q", "--", ".")
    lines = run("bash", "-c", recipe()).splitlines()
    assert lines[0].split() == [
        "Experiment", "rev", "cifar10", "excess_ref", "cifar10", "pgd", "mnist", "excess_ref",
        "mnist", "pgd", "seed",
    ]  # fmt: skip
    experiments = sorted(line.split()[0] for line in lines[3:])
    assert experiments == ["seed-cifar10-1", "seed-mnist-1", "seed-mnist-2"]
    assert max(map(len, lines)) <= 100, "\n".join(lines)


def test_the_readme_s_taste_of_the_api_runs(capsys):
    """The README's Python block runs as written (seeded, one torch thread) and prints the scan's
    summary; docs/api.md's full example is tests/test_api.py's."""
    torch = pytest.importorskip("torch")
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    try:
        exec(compile(code, "README.md (A taste)", "exec"), {"__name__": "readme"})
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "fragile: [" in out and "robust: [" in out and "share" in out
