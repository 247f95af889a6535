"""Build the book (`make book`): a static HTML site of the README's overview, the committed
notebooks as they were executed (nothing is re-run) and the API reference, that works offline.

Usage::

    python scripts/build_book.py [--out DIR]

The default ``DIR`` is ``build/book/html``; Sphinx keeps its doctrees beside it
(``DIR/../doctrees``). First the JavaScript the pages load (MathJax, require.js, the ipywidgets
HTML manager, Font Awesome) is installed from the npm registry by ``npm ci`` into
``docs/node_modules``, as pinned by ``docs/package-lock.json`` (skipped when that install is
current); ``docs/conf.py`` copies it into the site. Then Sphinx builds from scratch (API pages
depend on docstrings, which an incremental build would not notice), failing on any warning.
The exit status is Sphinx's, or npm's when the install fails.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DEFAULT_OUT = ROOT / "build" / "book" / "html"


def npm_install_is_current(docs: Path = DOCS) -> bool:
    """Whether ``docs/node_modules`` holds what ``docs/package-lock.json`` pins (npm writes
    ``node_modules/.package-lock.json`` at the end of an install)."""
    installed = docs / "node_modules" / ".package-lock.json"
    if not installed.exists():
        return False
    done = installed.stat().st_mtime
    return all(
        done >= (docs / name).stat().st_mtime for name in ("package.json", "package-lock.json")
    )


def install_javascript(docs: Path = DOCS) -> None:
    """``npm ci`` in ``docs/`` unless its install is current (no install scripts are run)."""
    if npm_install_is_current(docs):
        return
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("build_book: npm not found; the book needs Node.js and npm to install its scripts")
    command = [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
    subprocess.run(command, cwd=docs, check=True)


def build(out: Path) -> int:
    """Sphinx's HTML build of ``docs/`` into ``out``, from scratch, warnings as errors."""
    # the API pages autosummary wrote last time: a module no longer public must not linger
    shutil.rmtree(DOCS / "api" / "generated", ignore_errors=True)
    command = [
        sys.executable, "-m", "sphinx",
        "-b", "html",
        "-E",  # read every source again: the API pages follow the docstrings
        "-q",
        "--fail-on-warning", "--keep-going",
        "-d", str(out.parent / "doctrees"),
        str(DOCS), str(out),
    ]  # fmt: skip
    return subprocess.run(command, cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the site's folder")
    args = parser.parse_args(argv)
    try:
        install_javascript()
    except subprocess.CalledProcessError as error:
        return error.returncode
    return build(args.out.resolve())


if __name__ == "__main__":
    sys.exit(main())
