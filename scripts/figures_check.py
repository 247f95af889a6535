"""Check that a fresh run of the notebooks regenerates the committed results (issue #25).

Usage::

    python scripts/figures_check.py [RUN] [--against git:REV | DIR] [--config TOML]
                                    [--rtol R] [--atol A] [--pixel-threshold T]
                                    [--pixel-fraction F] [--json]

This script owns the regeneration check: it compares the *checked outputs* of two runs of the
notebooks, and the PNG figures they wrote, and lists every difference beyond a stated tolerance.
A run is ``git:REV`` (the ``notebooks/*.ipynb`` and ``figures/*`` committed at REV in this
repository) or a folder: a project folder (its ``notebooks/`` and ``figures/``) or a notebooks
folder (with ``figures/`` beside it). RUN is the fresh run (default: this working tree, e.g.
after ``make figures``); ``--against`` is the reference (default ``git:HEAD``).

* Cells are matched by position; a cell whose source (or type) differs is reported as such and
  its outputs are not compared. Checked outputs of a code cell: ``stdout`` streams (consecutive
  ones joined), the ``text/plain`` of results and displays, pandas tables in ``text/html`` (their
  cells, labelled by row and column, instead of the ``text/plain`` twin) and errors. Not checked:
  execution counts, metadata, ``stderr``, ``image/*``, vega-lite, widget views (model ids), and
  other HTML (a JavaScript animation) beyond its ``text/plain``. A path to an image or PDF is
  compared by its file name only (where a run keeps its figures does not matter).
* Text is split into numbers, words and single symbols. Numbers (``1e-05``, ``2,998,501``,
  ``-0.03``, the 327 of ``327x``) are compared by value, ``|a - b| <= atol + rtol * max(|a|,
  |b|)``, so ``0.5`` equals ``0.50`` but ``0.056`` differs from ``0.0561`` at the default rtol;
  every other token must be equal.
* PNG figures are compared by pixels: same size, and at most a fraction ``pixel_fraction`` of the
  pixels may have a channel differing by more than ``pixel_threshold`` (0-255). Other figure
  files (PDF) cannot be compared this way; each must be named in the configuration with the
  reason, and only its presence is checked. A figure (or notebook) that only one run has is
  always a difference.

What may differ is said in one place, ``figures/regeneration.toml`` (``--config``): the default
tolerances; ``[[figure]]`` entries (``pattern``, a glob of figure file names, ``reason`` and an
optional ``max_fraction``): figures that may differ; ``[[output]]`` entries (``notebook`` glob,
optional ``cell`` index and table ``column``, ``rtol`` / ``atol``, ``reason``): looser
tolerances for outputs known to vary. A difference that an entry allows is still listed, as
allowed, with the entry's reason. Exit status: 0 when every difference is allowed, 1 when any is
not, 2 for a bad argument or configuration.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import hashlib
import io
import json
import math
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "figures" / "regeneration.toml"
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
PIXEL_SUFFIXES = (".png",)
DEFAULTS = {"rtol": 1e-6, "atol": 1e-12, "pixel_threshold": 1, "pixel_fraction": 0.0}
MAX_SHOWN = 80  # characters of a token span or a source line shown in the report


class UsageError(Exception):
    """A bad command-line argument or configuration; the message names it."""

    def __init__(self, argument: str, message: str):
        super().__init__(f"{argument}: {message}")
        self.argument = argument


def _shorten(text: str, limit: int = MAX_SHOWN) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Runs: where the notebooks and figures come from


@dataclass
class Run:
    """One run of the notebooks: file name -> bytes of its notebooks and of its figures."""

    label: str
    notebooks: dict[str, bytes]
    figures: dict[str, bytes]


def _is_figure(name: str) -> bool:
    return name.lower().endswith(FIGURE_SUFFIXES)


def _git(*args: str, stdin: bytes | None = None) -> bytes:
    """The output of a read-only git command in the project's repository."""
    proc = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), *args], input=stdin, capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode(errors="replace").strip() or f"git {args[0]} failed")
    return proc.stdout


def _git_blobs(shas: list[str]) -> list[bytes]:
    """The contents of the blobs ``shas``, read by one ``git cat-file --batch``."""
    out = _git("cat-file", "--batch", stdin="".join(f"{s}\n" for s in shas).encode())
    blobs, pos = [], 0
    for sha in shas:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        if len(header) != 3 or header[1] != b"blob":
            raise RuntimeError(f"git cat-file: unexpected answer for {sha}: {out[pos:end]!r}")
        size = int(header[2])
        blobs.append(out[end + 1 : end + 1 + size])
        pos = end + 1 + size + 1  # the content is followed by a newline
    return blobs


def git_run(rev: str) -> Run:
    """The notebooks and figures committed at ``rev`` in the project's repository (git errors
    raise RuntimeError or OSError)."""
    _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    entries = []  # (folder, name, sha)
    for line in _git("ls-tree", "-z", rev, "--", "notebooks/", "figures/").split(b"\0"):
        if not line:
            continue
        meta, path = line.decode().split("\t", 1)
        _mode, kind, sha = meta.split()
        folder, _, name = path.partition("/")
        if kind == "blob" and (
            name.endswith(".ipynb") if folder == "notebooks" else _is_figure(name)
        ):
            entries.append((folder, name, sha))
    blobs = _git_blobs([sha for _, _, sha in entries])
    run = Run(f"git:{rev}", {}, {})
    for (folder, name, _), blob in zip(entries, blobs, strict=True):
        (run.notebooks if folder == "notebooks" else run.figures)[name] = blob
    return run


def folder_run(path: Path, argument: str) -> Run:
    """A run on disk: a project folder (``notebooks/``, ``figures/``) or a notebooks folder
    (``figures/`` beside it)."""
    if (path / "notebooks").is_dir():
        notebooks, figures = path / "notebooks", path / "figures"
    elif path.is_dir() and any(path.glob("*.ipynb")):
        notebooks, figures = path, path.parent / "figures"
    else:
        raise UsageError(
            argument,
            f"{str(path)!r} is neither git:REV nor a folder of notebooks (a project folder "
            "with notebooks/, or a folder of .ipynb files)",
        )
    run = Run(str(path), {}, {})
    run.notebooks = {p.name: p.read_bytes() for p in sorted(notebooks.glob("*.ipynb"))}
    if figures.is_dir():
        run.figures = {
            p.name: p.read_bytes() for p in sorted(figures.iterdir()) if _is_figure(p.name)
        }
    return run


def open_run(spec: str, argument: str) -> Run:
    """The run named by ``spec`` (``git:REV`` or a folder) on the command line's ``argument``."""
    if spec.startswith("git:"):
        if not spec[4:]:
            raise UsageError(argument, "git: needs a revision, e.g. git:HEAD")
        try:
            return git_run(spec[4:])
        except (RuntimeError, OSError) as exc:
            detail = f" ({_shorten(exc)})" if str(exc) else ""
            raise UsageError(argument, f"{spec} is not a commit of {PROJECT_ROOT}{detail}") from exc
    return folder_run(Path(spec), argument)


# ---------------------------------------------------------------------------------------------
# The configuration: figures/regeneration.toml


@dataclass(frozen=True)
class FigureRule:
    """Figures (a glob of file names) that may differ, and why."""

    pattern: str
    reason: str
    max_fraction: float | None = None


@dataclass(frozen=True)
class OutputRule:
    """Looser tolerances for the numbers of some outputs, and why."""

    notebook: str
    reason: str
    rtol: float = 0.0
    atol: float = 0.0
    cell: int | None = None
    column: str | None = None

    def covers(self, notebook: str, cell: int, column: str | None) -> bool:
        """Whether the rule applies to a number of ``notebook``'s cell ``cell`` (table column
        ``column``, None outside tables)."""
        return (
            fnmatch.fnmatchcase(notebook, self.notebook)
            and (self.cell is None or self.cell == cell)
            and (self.column is None or self.column == column)
        )


@dataclass
class Config:
    """The tolerances and the allowed differences."""

    path: str
    rtol: float = DEFAULTS["rtol"]
    atol: float = DEFAULTS["atol"]
    pixel_threshold: int = DEFAULTS["pixel_threshold"]
    pixel_fraction: float = DEFAULTS["pixel_fraction"]
    figures: list[FigureRule] = field(default_factory=list)
    outputs: list[OutputRule] = field(default_factory=list)

    def figure_rule(self, name: str) -> FigureRule | None:
        """The first ``[[figure]]`` entry whose pattern matches the file name ``name``."""
        return next((r for r in self.figures if fnmatch.fnmatchcase(name, r.pattern)), None)


def _number(value, where: str, *, maximum: float = math.inf) -> float:
    """``value`` as a float in [0, maximum], else a ValueError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{where} must be a number, got {value!r}")
    if not 0 <= value <= maximum:
        bounds = ">= 0" if maximum == math.inf else f"between 0 and {maximum:g}"
        raise ValueError(f"{where} must be {bounds}, got {value!r}")
    return float(value)


def _text(table: dict, key: str, where: str, *, required: bool = True) -> str | None:
    value = table.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value


def _check_keys(table, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} (known: {sorted(allowed)})")


def _figure_rule(entry, where: str) -> FigureRule:
    _check_keys(entry, {"pattern", "reason", "max_fraction"}, where)
    fraction = entry.get("max_fraction")
    return FigureRule(
        _text(entry, "pattern", where),
        _text(entry, "reason", where),
        None if fraction is None else _number(fraction, f"{where}: max_fraction", maximum=1),
    )


def _output_rule(entry, where: str) -> OutputRule:
    keys = {"notebook", "cell", "column", "rtol", "atol", "reason"}
    _check_keys(entry, keys, where)
    if "rtol" not in entry and "atol" not in entry:
        raise ValueError(f"{where}: give 'rtol' and/or 'atol'")
    cell = entry.get("cell")
    if cell is not None and (isinstance(cell, bool) or not isinstance(cell, int) or cell < 0):
        raise ValueError(f"{where}: 'cell' must be a cell index (an integer >= 0), got {cell!r}")
    return OutputRule(
        notebook=_text(entry, "notebook", where),
        reason=_text(entry, "reason", where),
        rtol=_number(entry.get("rtol", 0.0), f"{where}: rtol"),
        atol=_number(entry.get("atol", 0.0), f"{where}: atol"),
        cell=cell,
        column=_text(entry, "column", where, required=False),
    )


def parse_config(data: dict, path: str) -> Config:
    """A Config from the parsed TOML ``data`` (ValueError names what is wrong)."""
    _check_keys(data, {"defaults", "figure", "output"}, "top level")
    defaults = data.get("defaults", {})
    _check_keys(defaults, set(DEFAULTS), "[defaults]")
    config = Config(path)
    config.rtol = _number(defaults.get("rtol", config.rtol), "[defaults] rtol")
    config.atol = _number(defaults.get("atol", config.atol), "[defaults] atol")
    threshold = defaults.get("pixel_threshold", config.pixel_threshold)
    config.pixel_threshold = int(_number(threshold, "[defaults] pixel_threshold", maximum=255))
    fraction = defaults.get("pixel_fraction", config.pixel_fraction)
    config.pixel_fraction = _number(fraction, "[defaults] pixel_fraction", maximum=1)
    for key, parse, target in (
        ("figure", _figure_rule, config.figures),
        ("output", _output_rule, config.outputs),
    ):
        entries = data.get(key, [])
        if not isinstance(entries, list):
            raise ValueError(f"'{key}' must be an array of tables: [[{key}]]")
        target.extend(parse(e, f"[[{key}]] entry {i + 1}") for i, e in enumerate(entries))
    return config


def load_config(path: Path, argument: str = "--config") -> Config:
    """The configuration in the TOML file at ``path``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return parse_config(data, str(path))
    except FileNotFoundError as exc:
        raise UsageError(argument, f"no such file: {path}") from exc
    except (tomllib.TOMLDecodeError, ValueError, OSError) as exc:
        raise UsageError(argument, f"{path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Checked outputs, as tokens


@dataclass(frozen=True)
class Token:
    """A number (``value`` set) or any other token of an output, with where it was found."""

    text: str
    value: float | None
    where: str
    column: str | None = None  # the table column, for the tolerances of [[output]] entries

    @property
    def key(self) -> str:
        """What must be equal for two tokens to line up: any number, or the same text."""
        return "\0number" if self.value is not None else self.text


_NUMBER = r"(?<![\w.])[-+−]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(rf"(?P<number>{_NUMBER})|(?P<word>[^\W\d]\w*)|(?P<other>\S)")
_FIGURE_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\w.~-]*[/\\])+([\w.-]+\.(?:png|pdf|svg|jpe?g))\b")


def tokenize(text: str, where: str, column: str | None = None) -> list[Token]:
    """The tokens of ``text``: numbers (with their value), words and single symbols."""
    tokens = []
    for m in _TOKEN.finditer(_FIGURE_PATH.sub(r"\1", text)):
        number = m.group("number")
        value = float(number.replace(",", "").replace("−", "-")) if number else None
        tokens.append(Token(m.group(0), value, where, column))
    return tokens


def tokenize_lines(text: str, kind: str) -> list[Token]:
    """The tokens of a text output, each placed by its line (number and a snippet)."""
    tokens = []
    for n, line in enumerate(text.splitlines(), start=1):
        tokens += tokenize(line, f'{kind} line {n} "{_shorten(line.strip(), 50)}"')
    return tokens


def _span(value: str | None) -> int:
    return int(value) if value and value.isdigit() and int(value) > 0 else 1


class _TableParser(HTMLParser):
    """The rows of the HTML tables in a document: (table, section, [(tag, text, rows, cols)])."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows: list[tuple[int, str, list[tuple[str, str, int, int]]]] = []
        self.tables, self.section, self.skip = 0, "tbody", 0
        self.cell: list | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script"):
            self.skip += 1
        elif tag == "table":
            self.tables, self.section = self.tables + 1, "tbody"
        elif tag in ("thead", "tbody", "tfoot"):
            self.section = tag
        elif tag == "tr":
            self.rows.append((self.tables, self.section, []))
        elif tag in ("th", "td") and self.rows:
            spans = dict(attrs)
            self.cell = [tag, [], _span(spans.get("rowspan")), _span(spans.get("colspan"))]

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self.skip = max(0, self.skip - 1)
        elif tag in ("th", "td") and self.cell is not None:
            tag_, parts, rowspan, colspan = self.cell
            self.rows[-1][2].append((tag_, " ".join("".join(parts).split()), rowspan, colspan))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None and not self.skip:
            self.cell[1].append(data)


def _grid(rows: list[list[tuple[str, str, int, int]]]) -> list[list[tuple[str, str, bool]]]:
    """The rows with row- and column-spans filled in: (tag, text, is a spanned copy)."""
    grid, pending = [], {}  # (row, column) -> the cell a rowspan carries there
    for r, cells in enumerate(rows):
        out, c, i = [], 0, 0
        while i < len(cells) or any(k[0] == r and k[1] >= c for k in pending):
            if (r, c) in pending:
                out.append(pending.pop((r, c)))
                c += 1
            elif i >= len(cells):
                out.append(("td", "", True))
                c += 1
            else:
                tag, text, rowspan, colspan = cells[i]
                i += 1
                for dc in range(colspan):
                    out.append((tag, text, dc > 0))
                    for dr in range(1, rowspan):
                        pending[(r + dr, c + dc)] = (tag, text, True)
                c += colspan
        grid.append(out)
    return grid


def table_tokens(html: str) -> list[Token]:
    """The tokens of the HTML tables in ``html`` (pandas' ``to_html`` layout): header cells,
    row labels, and data cells placed by their row label and column label."""
    parser = _TableParser()
    parser.feed(html)
    parser.close()
    tokens = []
    for t in range(1, parser.tables + 1):
        rows = [(section, cells) for table, section, cells in parser.rows if table == t]
        grid = _grid([cells for _, cells in rows])
        header = [g for (section, _), g in zip(rows, grid, strict=True) if section == "thead"]
        width = max((len(g) for g in grid), default=0)
        columns = [
            " / ".join(dict.fromkeys(g[j][1] for g in header if j < len(g) and g[j][1])) or str(j)
            for j in range(width)
        ]
        prefix = f"table {t} " if parser.tables > 1 else "table "
        for (section, _), g in zip(rows, grid, strict=True):
            label = " / ".join(text for tag, text, _ in g if tag == "th" and text)
            for j, (tag, text, spanned) in enumerate(g):
                if spanned or not text:
                    continue
                if section == "thead" or tag == "th":
                    tokens += tokenize(
                        text, prefix + ("header" if section == "thead" else "row label")
                    )
                else:
                    where = f"{prefix}row {label!r}, column {columns[j]!r}"
                    tokens += tokenize(text, where, column=columns[j])
    return tokens


def _joined(text: str | list[str] | None) -> str:
    """A notebook's multi-line string (saved as a string or a list of lines) as one string."""
    return "".join(text) if isinstance(text, list) else text or ""


def checked_outputs(cell: dict) -> list[tuple[str, list[Token]]]:
    """The checked outputs of a code cell, in order: (kind, tokens); see the module docstring."""
    found: list[list] = []  # [kind, text]
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            if out.get("name") != "stdout":
                continue
            if found and found[-1][0] == "stdout":
                found[-1][1] += _joined(out.get("text"))
            else:
                found.append(["stdout", _joined(out.get("text"))])
        elif kind in ("execute_result", "display_data"):
            data = out.get("data", {})
            html = _joined(data.get("text/html"))
            if "<table" in html:
                found.append(["table", html])
            elif "text/plain" in data:
                found.append(["text/plain", _joined(data["text/plain"])])
        elif kind == "error":
            found.append(["error", f"{out.get('ename', '')}: {out.get('evalue', '')}"])
    return [
        (kind, table_tokens(text) if kind == "table" else tokenize_lines(text, kind))
        for kind, text in found
    ]


# ---------------------------------------------------------------------------------------------
# Differences


@dataclass
class Difference:
    """One difference between the runs; ``allowed`` when regeneration.toml covers it."""

    what: str  # number, text, outputs, source differs, cell only in ..., notebook, figure ...
    name: str  # the notebook's or the figure's file name
    old: str = ""
    new: str = ""
    cell: int | None = None
    source: str = ""  # the first line of the cell's source
    where: str = ""
    detail: str = ""
    fraction: float | None = None  # of a figure's pixels changed
    allowed: bool = False
    reason: str = ""

    def line(self) -> str:
        """The report's line for this difference."""
        status = "allowed" if self.allowed else "DIFF   "
        text = f"{status} {self.name}"
        if self.cell is not None:
            text += f" cell {self.cell} `{self.source}`"
        text += f": {self.what}"
        if self.old or self.new:
            text += f" {self.old or '(none)'} → {self.new or '(none)'}"
        if self.where:
            text += f" in {self.where}"
        if self.detail:
            text += f" ({self.detail})"
        if self.allowed:
            text += f" [allowed: {self.reason}]"
        return text


def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    return a == b or abs(a - b) <= atol + rtol * max(abs(a), abs(b))


def _judge_number(a: Token, b: Token, where: tuple[str, int], config: Config) -> dict | None:
    """None when the numbers agree within the default tolerance; else what the report says:
    the relative difference, and whether an [[output]] entry allows it (its reason)."""
    if _close(a.value, b.value, config.rtol, config.atol):
        return None
    rel = abs(a.value - b.value) / max(abs(a.value), abs(b.value))
    verdict = {
        "detail": f"relative difference {rel:.2g}; rtol {config.rtol:g}, atol {config.atol:g}"
    }
    for rule in config.outputs:
        if rule.covers(*where, a.column) and _close(a.value, b.value, rule.rtol, rule.atol):
            return verdict | {"allowed": True, "reason": rule.reason}
    return verdict


def compare_tokens(
    old: list[Token], new: list[Token], where: tuple[str, int], config: Config
) -> Iterator[dict]:
    """The differences between two token lists of one output (``where``: notebook, cell): a
    number beyond tolerance, or a span of other tokens replaced, removed or added."""
    a_keys, b_keys = [t.key for t in old], [t.key for t in new]
    blocks = (
        [("equal", 0, len(old), 0, len(new))]
        if a_keys == b_keys
        else difflib.SequenceMatcher(None, a_keys, b_keys, autojunk=False).get_opcodes()
    )
    for op, i1, i2, j1, j2 in blocks:
        if op != "equal":
            spot = old[i1] if i1 < i2 else (new[j1] if j1 < j2 else None)
            yield {
                "what": "text",
                "old": _shorten(" ".join(t.text for t in old[i1:i2])),
                "new": _shorten(" ".join(t.text for t in new[j1:j2])),
                "where": spot.where if spot else "",
            }
            continue
        for a, b in zip(old[i1:i2], new[j1:j2], strict=True):
            verdict = None if a.value is None else _judge_number(a, b, where, config)
            if verdict is not None:
                yield {"what": "number", "old": a.text, "new": b.text, "where": a.where} | verdict


def _first_line(source: str) -> str:
    """The cell's first line that says something (not blank, not an nbval marker)."""
    lines = [s for s in source.splitlines() if s.strip() and not s.startswith("# NBVAL_")]
    return _shorten(lines[0] if lines else "", 60)


def _source_difference(name: str, index: int, old: dict, new: dict) -> Difference:
    """A cell whose type or source differs: its first differing line, and the sources' hashes."""
    a, b = old["source"].splitlines(), new["source"].splitlines()
    opcodes = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    _, i1, i2, j1, j2 = next((op for op in opcodes if op[0] != "equal"), ("", 0, 0, 0, 0))
    digest = [hashlib.sha256(c["source"].encode()).hexdigest()[:12] for c in (old, new)]
    types = (
        "" if old["cell_type"] == new["cell_type"] else f"{old['cell_type']} → {new['cell_type']}; "
    )
    return Difference(
        "source differs",
        name,
        _shorten(" ⏎ ".join(a[i1:i2])),
        _shorten(" ⏎ ".join(b[j1:j2])),
        cell=index,
        source=_first_line(new["source"]),
        where=f"source line {i1 + 1}" if a[i1:i2] else f"source after line {i1}",
        detail=f"{types}sha256 {digest[0]} → {digest[1]}; outputs not compared",
    )


def compare_cell(name: str, index: int, old: dict, new: dict, config: Config) -> list[Difference]:
    """The differences between the cells at ``index`` of notebook ``name`` in the two runs."""
    if old["cell_type"] != new["cell_type"] or old["source"] != new["source"]:
        return [_source_difference(name, index, old, new)]
    if old["cell_type"] != "code":
        return []
    source = _first_line(old["source"])
    a, b = checked_outputs(old), checked_outputs(new)
    found = []
    a_kinds, b_kinds = [k for k, _ in a], [k for k, _ in b]
    if a_kinds != b_kinds:
        found.append(
            Difference("outputs", name, ", ".join(a_kinds), ", ".join(b_kinds), index, source)
        )
    matcher = difflib.SequenceMatcher(None, a_kinds, b_kinds, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op != "equal":
            continue
        for (_, ta), (_, tb) in zip(a[i1:i2], b[j1:j2], strict=True):
            for d in compare_tokens(ta, tb, (name, index), config):
                found.append(Difference(d.pop("what"), name, cell=index, source=source, **d))
    return found


def read_cells(data: bytes) -> list[dict]:
    """The cells of a notebook file (nbformat 4), each source joined into one string. Plain JSON
    reading: importing nbformat costs seconds (its validator's optional format checkers)."""
    nb = json.loads(data.decode("utf-8"))
    if not isinstance(nb, dict) or nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
        raise ValueError("not a notebook in nbformat 4")
    cells = [dict(c) for c in nb["cells"]]
    for c in cells:
        c["source"], c["cell_type"] = _joined(c.get("source")), c.get("cell_type", "")
    return cells


def compare_notebook(
    name: str, old: bytes, new: bytes, config: Config
) -> tuple[list[Difference], int]:
    """The differences between two versions of the notebook ``name``, and the number of cells
    compared (in full even when the bytes are equal: a self-check exercises every step)."""
    try:
        a, b = read_cells(old), read_cells(new)
    except (ValueError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        return [Difference("notebook", name, detail=f"unreadable: {_shorten(exc)}")], 0
    found = []
    for index in range(max(len(a), len(b))):
        if index >= len(a) or index >= len(b):
            gone = index >= len(b)
            found.append(
                Difference(
                    "cell only in the " + ("reference" if gone else "fresh run"),
                    name,
                    cell=index,
                    source=_first_line((a if gone else b)[index]["source"]),
                )
            )
            continue
        found += compare_cell(name, index, a[index], b[index], config)
    return found, min(len(a), len(b))


def compare_notebooks(ref: Run, fresh: Run, config: Config) -> tuple[list[Difference], int]:
    """The differences between the notebooks of the two runs, notebook by notebook, and the
    number of cells compared."""
    found, n_cells = [], 0
    for name in sorted(ref.notebooks.keys() | fresh.notebooks.keys()):
        if name not in fresh.notebooks or name not in ref.notebooks:
            side = "reference" if name in ref.notebooks else "fresh run"
            found.append(Difference("notebook", name, detail=f"only in the {side}"))
            continue
        diffs, cells = compare_notebook(name, ref.notebooks[name], fresh.notebooks[name], config)
        found, n_cells = found + diffs, n_cells + cells
    return found, n_cells


# ---------------------------------------------------------------------------------------------
# Figures


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGBA"), dtype=np.int16)


def pixel_difference(old: bytes, new: bytes, threshold: int) -> tuple[str, str, int, int]:
    """(old size, new size, pixels whose channels differ by more than ``threshold``, pixels)."""
    a, b = _pixels(old), _pixels(new)
    sizes = [f"{x.shape[1]}x{x.shape[0]}" for x in (a, b)]
    if a.shape != b.shape:
        return sizes[0], sizes[1], a.shape[0] * a.shape[1], a.shape[0] * a.shape[1]
    changed = int(np.count_nonzero(np.abs(a - b).max(axis=2) > threshold))
    return sizes[0], sizes[1], changed, a.shape[0] * a.shape[1]


def compare_figure(name: str, old: bytes, new: bytes, config: Config) -> Difference | None:
    """The difference between two PNGs of the figure ``name``, or None."""
    if old == new:
        return None
    try:
        old_size, new_size, changed, total = pixel_difference(old, new, config.pixel_threshold)
    except Exception as exc:  # not a readable image
        return Difference("figure", name, detail=f"unreadable image: {_shorten(exc)}")
    if old_size != new_size:
        diff, fraction = Difference("figure size", name, old_size, new_size, fraction=1.0), 1.0
    else:
        fraction = changed / total if total else 0.0
        if fraction <= config.pixel_fraction:
            return None
        detail = (
            f"{100 * fraction:.3g}% of pixels changed: {changed:,} of {total:,} differ by more "
            f"than {config.pixel_threshold}/255 in a channel, tolerance "
            f"{100 * config.pixel_fraction:.3g}%"
        )
        diff = Difference("figure", name, detail=detail, fraction=fraction)
    rule = config.figure_rule(name)
    if rule is not None and (rule.max_fraction is None or fraction <= rule.max_fraction):
        diff.allowed, diff.reason = True, rule.reason
    return diff


def compare_figures(ref: Run, fresh: Run, config: Config) -> tuple[list[Difference], dict]:
    """The differences between the figures of the two runs, and what was (not) compared."""
    found, counts = [], {"png_compared": 0, "png_identical": 0, "not_compared": {}}
    for name in sorted(ref.figures.keys() | fresh.figures.keys()):
        rule = config.figure_rule(name)
        if name not in fresh.figures or name not in ref.figures:
            side = "reference" if name in ref.figures else "fresh run"
            found.append(Difference("figure", name, detail=f"only in the {side}"))
        elif not name.lower().endswith(PIXEL_SUFFIXES):
            if rule is None:
                detail = "no pixel comparison for this format: name it in the config, with why"
                found.append(Difference("figure not compared", name, detail=detail))
            else:
                counts["not_compared"].setdefault((rule.pattern, rule.reason), []).append(name)
        else:
            counts["png_compared"] += 1
            counts["png_identical"] += ref.figures[name] == fresh.figures[name]
            diff = compare_figure(name, ref.figures[name], fresh.figures[name], config)
            if diff is not None:
                found.append(diff)
    return found, counts


# ---------------------------------------------------------------------------------------------
# The report and the command line


def build_report(ref: Run, fresh: Run, config: Config) -> dict:
    """The whole comparison as a JSON-ready dict."""
    diffs, n_cells = compare_notebooks(ref, fresh, config)
    figure_diffs, counts = compare_figures(ref, fresh, config)
    diffs += figure_diffs
    failing = sum(not d.allowed for d in diffs)
    return {
        "fresh": fresh.label,
        "against": ref.label,
        "config": config.path,
        "ok": failing == 0,
        "differences": [asdict(d) for d in diffs],
        "not_compared": [
            {"pattern": p, "reason": r, "files": files}
            for (p, r), files in counts["not_compared"].items()
        ],
        "summary": {
            "notebooks": len(ref.notebooks.keys() | fresh.notebooks.keys()),
            "cells": n_cells,
            "png_compared": counts["png_compared"],
            "png_byte_identical": counts["png_identical"],
            "differences": failing,
            "allowed": len(diffs) - failing,
        },
    }


def format_report(report: dict) -> str:
    """The readable report: one line per difference, the files not compared, a summary."""
    lines = [f"figures check: {report['fresh']} against {report['against']} ({report['config']})"]
    lines += [Difference(**d).line() for d in report["differences"]]
    for group in report["not_compared"]:
        lines.append(
            f"not compared: {len(group['files'])} file(s) matching {group['pattern']!r} "
            f"({group['reason']})"
        )
    s = report["summary"]
    lines.append(
        f"summary: {s['notebooks']} notebook(s) ({s['cells']} cells), {s['png_compared']} PNG "
        f"figure(s) ({s['png_byte_identical']} byte-identical): {s['differences']} "
        f"difference(s) not covered by the config, {s['allowed']} allowed "
        f"({s['seconds']:.1f} s) -> {'OK' if report['ok'] else 'FAILED'}"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (argparse exits with status 2 on an unknown option)."""
    parser = argparse.ArgumentParser(
        description="Compare a fresh run of the notebooks (checked outputs and PNG figures) "
        "with a reference run; what may differ is listed in figures/regeneration.toml."
    )
    parser.add_argument(
        "run",
        nargs="?",
        default=str(PROJECT_ROOT),
        help="the fresh run: a project folder, a notebooks folder (figures/ beside it) or "
        "git:REV (default: this working tree)",
    )
    parser.add_argument(
        "--against",
        default="git:HEAD",
        help="the reference run: git:REV of this repository or a folder (default: git:HEAD)",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the TOML file")
    parser.add_argument("--rtol", type=float, help="the default relative tolerance of numbers")
    parser.add_argument("--atol", type=float, help="the default absolute tolerance of numbers")
    parser.add_argument(
        "--pixel-threshold", type=int, help="channel difference (0-255) a pixel may have"
    )
    parser.add_argument(
        "--pixel-fraction", type=float, help="fraction of a PNG's pixels that may change"
    )
    parser.add_argument("--json", action="store_true", help="print a machine-readable report")
    return parser.parse_args(argv)


def _apply_overrides(config: Config, args: argparse.Namespace) -> None:
    """The command line's tolerances over the config's defaults, each checked."""
    for option, attr, maximum in (
        ("--rtol", "rtol", math.inf),
        ("--atol", "atol", math.inf),
        ("--pixel-threshold", "pixel_threshold", 255),
        ("--pixel-fraction", "pixel_fraction", 1),
    ):
        value = getattr(args, attr)
        if value is None:
            continue
        try:
            checked = _number(value, option, maximum=maximum)
        except ValueError as exc:
            raise UsageError(option, str(exc).removeprefix(f"{option} ")) from exc
        setattr(config, attr, type(getattr(config, attr))(checked))


def main(argv: list[str] | None = None) -> int:
    """Run the check; return the exit status (0 ok, 1 differences, 2 bad arguments)."""
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        config = load_config(args.config)
        _apply_overrides(config, args)
        fresh = open_run(args.run, "RUN")
        ref = open_run(args.against, "--against")
    except UsageError as exc:
        print(f"figures_check.py: error: {exc}", file=sys.stderr)
        return 2
    report = build_report(ref, fresh, config)
    report["summary"]["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(report, indent=1, ensure_ascii=False) if args.json else format_report(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
