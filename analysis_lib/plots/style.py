"""The house style and reproducible figure saving.

Figures go to :func:`figures_dir`: ``$ANALYSIS_LIB_FIGURES`` when it is set, else ``figures/`` at
the project root. :func:`save` writes each file atomically and strips the metadata that would
change from one run to the next (dates, matplotlib's version), so re-running a notebook that
draws the same figure rewrites the same bytes and leaves ``git diff`` quiet.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import seaborn as sns
from matplotlib.figure import Figure

from .. import io as _io
from .. import quick_mode

__all__ = ["FIGURES_ENV_VAR", "SavedFigures", "figures_dir", "save", "set_style"]

#: Environment variable that, when set, names the folder :func:`figures_dir` returns.
FIGURES_ENV_VAR = "ANALYSIS_LIB_FIGURES"

_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_FORMAT_RE = re.compile(r"[A-Za-z0-9]+")

# Metadata that removes run-dependent entries (dates, matplotlib's version) per output format.
# A value of None tells matplotlib to leave the key out.
_STABLE_METADATA: dict[str, dict[str, str | None]] = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None},
    "svg": {"Date": None, "Creator": None},
}

_MAX_LAYOUT_PASSES = 4

_RC = {
    "savefig.dpi": 180,
    "figure.dpi": 100,
    "figure.constrained_layout.use": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    # Embed TrueType fonts in PDF/PS (text stays editable and searchable).
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    # Fixed salt so the ids in SVG output do not change from run to run.
    "svg.hashsalt": "analysis_lib",
}


def set_style() -> None:
    """Apply the house style: seaborn's ``whitegrid`` theme in the ``notebook`` context with the
    colour-blind-safe ``colorblind`` palette, constrained layout, no top/right spines and a
    180 dpi ``savefig`` resolution.

    ``sns.set_theme`` starts from matplotlib's defaults, so calling this any number of times
    gives the same settings (it is idempotent); it also undoes earlier changes to ``rcParams``.
    """
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", rc=_RC)


def figures_dir() -> Path:
    """The folder figures are saved to, created if missing.

    ``$ANALYSIS_LIB_FIGURES`` when it is set and not empty; a relative value is taken relative
    to the project root (so ``ANALYSIS_LIB_FIGURES=build/test-figures`` means the same folder
    whatever the kernel's working directory is), or to the current working directory when there
    is no project root. Without the variable: ``figures/`` at the project root (the folder with
    the ``pyproject.toml`` above the ``analysis_lib`` package), or ``./figures`` when the package
    is installed elsewhere; but with ``QUICK=1`` (:func:`analysis_lib.quick_mode`) and no variable,
    ``build/quick-figures/`` there instead, so that a quick run, in JupyterLab or anywhere, never
    overwrites the committed figures of a full run.

    Returns:
        The folder, an absolute ``Path``.

    Raises:
        OSError: the folder cannot be created.
    """
    root = _io.project_root()
    base = root if root is not None else Path.cwd()
    env = os.environ.get(FIGURES_ENV_VAR, "").strip()
    if env:
        folder = base / Path(env).expanduser()
    else:
        folder = base / "build" / "quick-figures" if quick_mode() else base / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class SavedFigures(list):
    """The list of paths :func:`save` returns. It is a plain ``list`` of ``Path`` objects, but it
    shows only the file names, so a notebook cell ending in ``plots.save(...)`` does not put
    machine-specific absolute paths into the notebook's outputs."""

    def __repr__(self) -> str:
        """``SavedFigures(['name.png', 'name.pdf'])``."""
        return f"{type(self).__name__}({[Path(p).name for p in self]!r})"

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        """IPython's display: the same as ``repr``."""
        printer.text(repr(self))


def _settle_layout(fig: Figure, max_passes: int = _MAX_LAYOUT_PASSES) -> None:
    """Draw ``fig`` without rendering (which runs its layout engine) until no axes moves, at most
    ``max_passes`` times."""
    previous = None
    for _ in range(max_passes):
        fig.draw_without_rendering()
        positions = [tuple(ax.get_position().bounds) for ax in fig.get_axes()]
        if positions == previous or fig.get_layout_engine() is None:
            return
        previous = positions


def save(
    fig: Figure, name: str, *, formats: Sequence[str] = ("png", "pdf"), **savefig_kwargs
) -> list[Path]:
    """Save ``fig`` as ``figures_dir() / f"{name}.{fmt}"`` for each format and return the paths
    (a :class:`SavedFigures` list, whose repr shows only the file names).

    Args:
        fig: the matplotlib figure.
        name: the file stem, made of letters, digits, ``_`` and ``-`` only (no folders, no
            extension).
        formats: the file formats (matplotlib format names such as ``"png"``, ``"pdf"``,
            ``"svg"``), in the order the returned paths follow.
        **savefig_kwargs: passed on to :meth:`Figure.savefig` (e.g. ``bbox_inches="tight"``);
            a ``metadata`` dict is merged over the stable defaults.

    Metadata that changes between runs is left out (PNG ``Software``; PDF ``CreationDate``,
    ``ModDate``, ``Creator`` and ``Producer``; SVG ``Date`` and ``Creator``), so saving the same
    figure again writes the same bytes. The layout (e.g. constrained layout) is computed once and
    shared by all formats. Every file is rendered in memory first and then written atomically
    (temporary file in the same folder + ``os.replace``): a failure or an interruption never
    leaves a half-written figure behind.

    Returns:
        A :class:`SavedFigures` list of the written paths, one per format.

    Raises:
        ValueError: ``name`` is not a simple file stem, or a format is not a plain extension.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"Invalid name: {name!r} (expected a file stem of letters, digits, '_' and '-')"
        )
    if isinstance(formats, str):
        formats = (formats,)
    formats = [str(fmt).lower() for fmt in formats]
    for fmt in formats:
        if not _FORMAT_RE.fullmatch(fmt):
            raise ValueError(f"Invalid formats entry: {fmt!r} (expected e.g. 'png' or 'pdf')")
    user_metadata = savefig_kwargs.pop("metadata", None) or {}

    folder = figures_dir()
    # Settle the layout (constrained layout can move things on a second pass, e.g. with
    # colorbars), then keep it off while rendering, so every format gets the same layout and
    # saving the same figure again gives the same bytes.
    _settle_layout(fig)
    engine = fig.get_layout_engine()
    if engine is not None:
        fig.set_layout_engine("none")
    try:
        rendered = []
        for fmt in dict.fromkeys(formats):  # drop duplicates, keep the order
            buf = io.BytesIO()
            metadata = {**_STABLE_METADATA.get(fmt, {}), **user_metadata}
            fig.savefig(buf, format=fmt, metadata=metadata or None, **savefig_kwargs)
            rendered.append((folder / f"{name}.{fmt}", buf.getvalue()))
    finally:
        if engine is not None:
            fig.set_layout_engine(engine)
    for path, data in rendered:
        _io.write_atomically(path, data)
    return SavedFigures(path for path, _ in rendered)
