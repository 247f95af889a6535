"""Sphinx configuration of the book: `make book` builds it into build/book/html.

The pages are the README's overview (docs/index.md includes it), the committed notebooks as they
were executed (docs/notebooks links to ../notebooks; nothing is re-run) and the API reference,
generated from the docstrings of every public name (docs/_ext/public_api.py). Everything the pages
load is served from the book itself (docs/_ext/offline_book.py).
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))

from public_api import public_api  # noqa: E402

project = "analysis_lib"
author = "the analysis_lib authors"
copyright = "the analysis_lib authors"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "offline_book",
    "vega_outputs",
]

root_doc = "index"
exclude_patterns = [
    "node_modules",
    "**/.ipynb_checkpoints",
    "_templates",
]
templates_path = ["_templates"]

# --- Notebooks: shown with the outputs they were committed with, never executed ---------------
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
# $$...$$ inside a paragraph is display math, as Jupyter renders it (notebook 08 has one)
myst_dmath_double_inline = True

# --- API reference: autosummary pages from the public ``__all__`` names ------------------------
autosummary_generate = True
autosummary_context = {"public_api": public_api("analysis_lib")}
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
python_maximum_signature_line_length = 90
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# --- HTML: pydata-sphinx-theme, every asset served from _static (see offline_book.py) ----------
html_theme = "pydata_sphinx_theme"
html_title = "analysis_lib"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_context = {"default_mode": "auto"}  # light or dark, as the reader's system prefers
html_show_sourcelink = False
html_copy_source = False
html_static_path = ["_static"]  # vega_outputs.js, which draws the kernel-free explorers

# MathJax 3, from the npm package copied into _static/vendor (a path relative to _static), with
# a stand-in for MathJax 2's Hub that ipywidgets calls (see the file)
mathjax_path = "vendor/mathjax/tex-mml-chtml.js"
mathjax_config_path = "_ext/mathjax_config.js"
# require.js and the ipywidgets HTML manager for the widget state saved in notebook 02. Its
# built-in widgets (controls, output) are bundled; any other widget module would be looked up
# beside it (relative to the notebook pages, in notebooks/), where there is none, never on a CDN.
nb_ipywidgets_js = {
    "vendor/requirejs/require.js": {},
    "vendor/jupyter-widgets/embed-amd.js": {
        "data-jupyter-widgets-cdn": "../_static/vendor/jupyter-widgets/",
    },
}
