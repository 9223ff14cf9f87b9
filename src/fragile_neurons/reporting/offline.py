"""An HTML template for `dvc plots show --html-template` that renders without internet.

DVC's own page loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline its plots stay blank.
This template inlines them instead, from the JavaScript bundle that vl-convert-python (a
dependency) ships, and draws every plot as SVG; `make setup` writes it:

    python -m fragile_neurons.reporting.offline .venv/offline-plots.html
    dvc plots show --html-template .venv/offline-plots.html
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..storage.io import write_with

VEGA_LITE = "5"  # the major version of the specs DVC writes ($schema: vega-lite/v5.json)
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot (offline: Vega {vega}, Vega-Lite {vega_lite}, Vega-Embed {embed})</title>
    <script>
{bundle}
    </script>
    <script>
        // SVG, not canvas: crisp at any zoom, and every legend entry is text in the page
        const embedOnCanvas = window.vegaEmbed;
        window.vegaEmbed = (el, spec, opt) =>
            embedOnCanvas(el, spec, Object.assign({{renderer: "svg"}}, opt));
    </script>
    <style>
        table {{ border-spacing: 15px; }}
        img {{ max-width: 100%; height: auto; }}  /* a wide figure shrinks, never clipped */
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def page() -> str:
    """The template: DVC's page with the libraries inlined, and its `{plot_divs}` and
    `{refresh_tag}` placeholders (no `{scripts}`: DVC fills that with the CDN's tags)."""
    import vl_convert

    versions = [
        v for v in vl_convert.get_vegalite_versions() if v.lstrip("v").startswith(VEGA_LITE)
    ]
    vl_version = versions[-1]
    bundle = vl_convert.javascript_bundle(vl_version=vl_version).replace("</script", "<\\/script")
    head = (
        PAGE.replace("{vega}", vl_convert.get_vega_version())
        .replace("{vega_lite}", vl_version)
        .replace("{embed}", vl_convert.get_vega_embed_version())
        .replace("{{", "{")
        .replace("}}", "}")
    )
    return head.replace("{bundle}", bundle)  # last: the bundle's text is not searched


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fragile_neurons.reporting.offline", description=__doc__.splitlines()[0]
    )
    parser.add_argument("path", help="where to write the template (e.g. .venv/offline-plots.html)")
    args = parser.parse_args(argv)
    try:
        text = page()
    except ImportError:
        print("error: vl-convert-python is not installed; `pip install -e .`", file=sys.stderr)
        sys.exit(2)
    path = Path(args.path)
    if not path.parent.is_dir():
        print(f"error: {path.parent}: no such folder", file=sys.stderr)
        sys.exit(2)
    write_with(path, lambda p: p.write_text(text))


if __name__ == "__main__":
    main()
