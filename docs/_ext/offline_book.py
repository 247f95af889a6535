"""A book that works offline: every script, style sheet, font and math renderer is served from the
book's own ``_static/vendor`` folder.

- The npm packages of ``docs/package.json`` (installed by ``npm ci`` into ``docs/node_modules``,
  which ``make book`` runs) are copied into ``_static/vendor``: MathJax 3 with its fonts,
  require.js and the ipywidgets HTML manager (which bundles the built-in widgets and their
  icon font) for the widgets saved in a notebook, and Font Awesome 4 for the buttons of
  matplotlib's JavaScript animations, and Vega, Vega-Lite and vega-embed for the kernel-free
  explorers (``vega_outputs.py``). ``conf.py`` points Sphinx and MyST-NB at these copies.
- A notebook output that links a known CDN asset (matplotlib's animations link Font Awesome from
  a CDN) is pointed at the copy instead.
- After the build, every page and style sheet is read: an asset (a script, style sheet, image,
  font, frame) that would be fetched from another host is a build warning naming the page.
  Links to other pages (``<a href>``) are not assets and stay as they are.
"""

from __future__ import annotations

import posixpath
import re
import shutil
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

VENDOR = "_static/vendor"

#: What is copied from ``docs/node_modules`` into ``_static/vendor``: (source, destination).
COPIES = (
    ("mathjax/es5/tex-mml-chtml.js", "mathjax/tex-mml-chtml.js"),
    # loaded on demand by the component above: TeX extensions, fonts, menu and accessibility
    ("mathjax/es5/input", "mathjax/input"),
    ("mathjax/es5/output/chtml", "mathjax/output/chtml"),
    ("mathjax/es5/ui", "mathjax/ui"),
    ("mathjax/es5/a11y", "mathjax/a11y"),
    ("mathjax/es5/sre", "mathjax/sre"),
    ("mathjax/LICENSE", "mathjax/LICENSE"),
    ("requirejs/require.js", "requirejs/require.js"),
    ("@jupyter-widgets/html-manager/dist/embed-amd.js", "jupyter-widgets/embed-amd.js"),
    # its licence (BSD-3-Clause) and version
    ("@jupyter-widgets/html-manager/package.json", "jupyter-widgets/package.json"),
    ("font-awesome/css", "font-awesome/css"),
    ("font-awesome/fonts", "font-awesome/fonts"),
    ("font-awesome/README.md", "font-awesome/README.md"),  # its licences (fonts: OFL, CSS: MIT)
    # Vega, Vega-Lite and vega-embed (BSD-3-Clause) for the kernel-free explorers, which the
    # notebooks save as Vega-Lite outputs (docs/_ext/vega_outputs.py draws them)
    ("vega/build/vega.min.js", "vega/vega.min.js"),
    ("vega/LICENSE", "vega/LICENSE"),
    ("vega-lite/build/vega-lite.min.js", "vega-lite/vega-lite.min.js"),
    ("vega-lite/LICENSE", "vega-lite/LICENSE"),
    ("vega-embed/build/vega-embed.min.js", "vega-embed/vega-embed.min.js"),
    ("vega-embed/LICENSE", "vega-embed/LICENSE"),
)
#: Files that the HTML manager's style sheet loads relative to its script (its icon font).
WIDGET_FONTS = ("*.woff2", "*.woff", "*.ttf", "*.eot", "*.svg")

#: CDN assets that notebook outputs link, and the vendored copy that replaces each.
CDN_REPLACEMENTS = (
    (
        re.compile(r"https?://[^\"'\s>]*/font-awesome/4\.\d+\.\d+/css/font-awesome(?:\.min)?\.css"),
        "font-awesome/css/font-awesome.min.css",
    ),
)

# An asset fetched from another host: a tag's src, a <link>'s href (a style sheet, an icon, a
# preload), a srcset, or a url()/@import in CSS. <a href> is a link to a page, not an asset.
_REMOTE_ASSET = re.compile(
    r"""<(?!a[\s>])[a-z][a-z0-9-]*\b[^>]*?\s(?:src|srcset|data|poster|href)\s*=\s*["']?\s*"""
    r"""(?:https?:)?//""",
    re.IGNORECASE,
)
_REMOTE_CSS = re.compile(r"""(?:url\(\s*["']?|@import\s+["'])(?:https?:)?//""", re.IGNORECASE)


def _node_modules(app: Sphinx) -> Path:
    return Path(app.confdir) / "node_modules"


def check_node_modules(app: Sphinx) -> None:
    """Refuse to build without the npm packages: the pages would load nothing."""
    if app.builder.format != "html":
        return
    missing = [src for src, _ in COPIES if not (_node_modules(app) / src).exists()]
    if missing:
        raise ExtensionError(
            f"the book's JavaScript packages are not installed ({', '.join(missing)} missing in "
            f"{_node_modules(app)}): run `npm ci` in docs/ (`make book` does)"
        )


def point_outputs_at_copies(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """Replace links to CDN assets in raw HTML outputs with links to the vendored copies."""
    if app.builder.format != "html":
        return
    static = posixpath.relpath(VENDOR, posixpath.dirname(docname) or ".")
    for node in list(doctree.findall(nodes.raw)):
        if "html" not in node.get("format", "").split():
            continue
        text = node.astext()
        new = text
        for pattern, local in CDN_REPLACEMENTS:
            new = pattern.sub(f"{static}/{local}", new)
        if new != text:
            node.replace_self(nodes.raw(node.rawsource, new, format=node["format"]))


def copy_vendored(app: Sphinx, exception: Exception | None) -> None:
    """Copy the npm packages' files into ``_static/vendor`` and check that no page or style
    sheet fetches an asset from another host."""
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    vendor = out / VENDOR
    for src, dst in COPIES:
        source, target = _node_modules(app) / src, vendor / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)
    dist = _node_modules(app) / "@jupyter-widgets/html-manager/dist"
    for pattern in WIDGET_FONTS:
        for font in dist.glob(pattern):
            shutil.copyfile(font, vendor / "jupyter-widgets" / font.name)
    for page in sorted(out.rglob("*.html")):
        if _REMOTE_ASSET.search(page.read_text(encoding="utf-8")):
            logger.warning(
                "%s loads an asset from another host; the book must work offline",
                page.relative_to(out),
                type="offline",
            )
    for sheet in sorted((out / "_static").rglob("*.css")):
        if _REMOTE_CSS.search(sheet.read_text(encoding="utf-8", errors="replace")):
            logger.warning(
                "%s loads an asset from another host; the book must work offline",
                sheet.relative_to(out),
                type="offline",
            )


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", lambda app: check_node_modules(app))
    app.connect("doctree-resolved", point_outputs_at_copies)
    app.connect("build-finished", copy_vendored)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
