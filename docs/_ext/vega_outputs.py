"""Vega-Lite outputs of the notebooks (the kernel-free explorers) drawn in the book.

A notebook cell that displays a Vega-Lite chart saves it as an ``application/vnd.vegalite.v5+json``
output (see ``analysis_lib.plots.explorers``): JupyterLab draws it with its own copy of Vega, with
no kernel and even in an untrusted notebook. MyST-NB has no renderer for it, so this extension
adds one: the output becomes an empty ``div.vega-output`` followed by its specification in a
``<script type="application/json">``, and a page that has one loads the book's copies of Vega,
Vega-Lite and vega-embed (``_static/vendor``, see ``offline_book.py``) and ``_static/
vega_outputs.js``, which draws each one. The scripts come before require.js (which MyST-NB loads
for the widgets of notebook 02), so that their UMD builds define globals instead of anonymous
AMD modules.
"""

from __future__ import annotations

import json

from docutils import nodes
from myst_nb.core import render
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

VEGALITE_MIMETYPE = "application/vnd.vegalite.v5+json"
#: What a page with a Vega-Lite output loads, in order (relative to _static).
SCRIPTS = (
    "vendor/vega/vega.min.js",
    "vendor/vega-lite/vega-lite.min.js",
    "vendor/vega-embed/vega-embed.min.js",
    "vega_outputs.js",
)
#: Before MyST-NB's require.js and widget manager (priority 500, Sphinx's default).
PRIORITY = 300


class VegaLiteOutputs:
    """A MyST-NB mime renderer plugin (``myst_nb.core.render.MimeRenderPlugin``) for Vega-Lite
    outputs: preferred to their plain-text stand-in in HTML."""

    mime_priority_overrides = (("html", VEGALITE_MIMETYPE, 5),)

    @staticmethod
    def handle_mime(renderer, data, inline: bool):
        if inline or data.mime_type != VEGALITE_MIMETYPE:
            return None
        spec = data.content if isinstance(data.content, dict) else json.loads(data.content)
        text = json.dumps(spec, separators=(",", ":"), ensure_ascii=False)
        text = text.replace("</", "<\\/")  # nothing in it may close the <script>
        html = (
            '<div class="vega-output"></div>'
            f'<script type="application/json" class="vega-spec">{text}</script>'
        )
        return [nodes.raw("", html, format="html", classes=["output", "vega-lite"])]


def register(app: Sphinx) -> None:
    """Add the plugin to MyST-NB's (cached) list of mime renderer plugins, which it otherwise
    reads from installed packages' entry points only."""
    plugins = render.load_mime_renders()
    if not isinstance(plugins, list):
        raise ExtensionError("vega_outputs: MyST-NB's mime renderer plugins are not a list")
    if VegaLiteOutputs not in plugins:
        plugins.append(VegaLiteOutputs)


def add_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Load Vega and the drawing script on the pages that have a Vega-Lite output."""
    if 'class="vega-output"' in context.get("body", ""):
        for script in SCRIPTS:
            app.add_js_file(script, priority=PRIORITY)


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", register)
    app.connect("html-page-context", add_scripts)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
