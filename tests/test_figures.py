"""Every figure of the pipeline is saved as PNG at 200 dpi or more and as SVG beside it
(io.save_figure), the same bytes when drawn twice, with its legends outside every axes (the data
areas and colour bars). `check_saved` and `legends_overlapping_axes` are what each figure's own
test checks; here, save_figure itself and the published names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402
from PIL import Image  # noqa: E402

from fragile_neurons.storage import io, paths  # noqa: E402

MIN_DPI = 200


def legends_overlapping_axes(fig) -> list[str]:
    """'legend <title> over axes <k>' for every legend (the figure's and each axes') whose drawn
    extent overlaps an axes' extent: none for a figure whose legends stand outside the data."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    assert legends, "no legend to check"
    found = []
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for k, ax in enumerate(fig.axes):
            overlap = Bbox.intersection(box, ax.get_window_extent(renderer))
            if overlap is not None and overlap.width > 0.5 and overlap.height > 0.5:
                found.append(f"legend {legend.get_title().get_text()!r} over axes {k}")
    return found


def check_saved(make_figure: Callable[[], object], folder: Path, name: str) -> tuple[Path, Path]:
    """Draw and save the figure `make_figure` returns twice (io.save_figure, as the stages do):
    each time a PNG at MIN_DPI or more and an SVG beside it, byte for byte the same both times.
    The paths of the PNG and the SVG."""
    saved = []
    for attempt in ("first", "second"):
        png = folder / attempt / f"{name}.png"
        io.save_figure(png, make_figure())
        svg = png.with_suffix(".svg")
        saved.append((png.read_bytes(), svg.read_bytes()))
    assert saved[0] == saved[1], "equal plots must give equal bytes"
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert min(image.info["dpi"]) >= MIN_DPI - 0.01  # pHYs: pixels per metre, rounded
    svg_bytes = saved[1][1]
    assert svg_bytes.startswith(b"<?xml") and b"<svg" in svg_bytes
    assert b"Matplotlib v" not in svg_bytes and b"<dc:date>" not in svg_bytes
    return png, svg


def _figure():
    """Lines (clipped to the axes: the SVG names each clip path by a hashed id), an image and a
    legend outside the axes."""
    fig, ax = plt.subplots(figsize=(3, 2), layout="constrained")
    ax.plot([0, 1, 2], [0, 1, 0.5], label="a line")
    ax.imshow(np.arange(12.0).reshape(3, 4), extent=(0, 2, 0, 1))
    fig.legend(loc="outside right upper")
    return fig


def test_save_figure_writes_png_and_svg_the_same_bytes_twice(tmp_path):
    png, svg = check_saved(_figure, tmp_path, "figure")
    assert sorted(p.name for p in png.parent.iterdir()) == ["figure.png", "figure.svg"]
    assert b"clip-path" in svg.read_bytes()  # ids that a random salt would change
    with Image.open(png) as image:
        assert image.size[0] >= 2.5 * MIN_DPI  # most of the 3-inch-wide figure, cropped
    fig = _figure()
    io.save_figure(tmp_path / "same.png", fig)
    io.save_figure(tmp_path / "again.png", fig)  # the same figure saved twice
    for suffix in (".png", ".svg"):
        same = (tmp_path / "same").with_suffix(suffix).read_bytes()
        assert (tmp_path / "again").with_suffix(suffix).read_bytes() == same


def test_save_figure_wants_a_png_path(tmp_path):
    with pytest.raises(ValueError, match="name.png and name.svg"):
        io.save_figure(tmp_path / "figure.svg", _figure())
    assert not list(tmp_path.iterdir())


def test_the_legend_check_sees_a_legend_inside_the_axes():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="a line")
    ax.legend(loc="upper left")
    assert legends_overlapping_axes(fig) == ["legend '' over axes 0"]
    assert legends_overlapping_axes(_figure()) == []


def test_every_published_figure_is_published_as_png_and_svg():
    for stage, names in paths.PUBLISHED.items():
        figures = {Path(n).stem for n in names if Path(n).suffix in (".png", ".svg")}
        assert {f"{f}{s}" for f in figures for s in (".png", ".svg")} <= set(names), stage
