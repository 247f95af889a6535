"""Execute the project's notebooks headlessly and save them with their outputs (`make figures`).

Usage::

    python scripts/run_notebooks.py [PATH ...] [--timeout SECONDS] [--quick] [--no-save]
                                    [--jobs N]

Each PATH is a folder (its ``*.ipynb`` files, sorted) or a notebook; the default is the project's
``notebooks/`` folder. Every notebook runs in a fresh ``python3`` kernel whose working directory
is the notebook's folder and whose environment has ``QUICK=0`` (``QUICK=1`` with ``--quick``),
``TQDM_DISABLE=1`` (and no ``MPLBACKEND``, so figures render inline). A notebook that runs without error is written back in
place (atomically, without the per-cell execution timestamps); one that fails is left as it
was and its error (cell index, exception) is reported. ``--quick`` is a smoke run and never
saves. The exit status is 1 when any notebook failed.

Cells tagged ``interactive`` (they only build ipywidgets, next to a static figure) get a short
timeout, and a notebook whose interactive cell times out is run once more: nbclient sometimes
never sees the reply to a cell that opens widgets (jupyter/nbclient#312), and would otherwise
wait for the whole per-cell timeout.

``--jobs N`` runs up to N notebooks at once (default: one per CPU core, at most four), each in
a child process of this script (``--jobs 1``) that reports its result as one JSON line; the
notebooks are independent and each has its own kernel, so what they compute does not depend
on N (each kernel keeps torch's default number of threads). The table lists them in the order
given, whatever order they finish in.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError
from tqdm import tqdm

DEFAULT_TIMEOUT = 1800  # seconds per cell
KERNEL_NAME = "python3"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAX_ERROR_CHARS = 300
INTERACTIVE_TAG = "interactive"
INTERACTIVE_TIMEOUT = 120  # seconds for a cell tagged INTERACTIVE_TAG
MAX_DEFAULT_JOBS = 4
RESULT_PREFIX = "run_notebooks result: "  # a child's report, one JSON line on its stdout


@dataclass
class Result:
    """The outcome of running one notebook."""

    path: Path
    ok: bool
    seconds: float
    saved: bool = False
    error: str = ""

    @property
    def status(self) -> str:
        """``"ok"`` or ``"FAILED"``."""
        return "ok" if self.ok else "FAILED"


def find_notebooks(paths: list[str | Path]) -> list[Path]:
    """The notebooks named by ``paths``: a folder stands for its ``*.ipynb`` files (sorted, not
    recursive), a file for itself. Duplicates are dropped, the order is kept.

    Raises:
        FileNotFoundError: a path does not exist, or a file is not an ``.ipynb`` notebook.
    """
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for nb in sorted(path.glob("*.ipynb")):
                found[nb] = None
        elif path.is_file() and path.suffix == ".ipynb":
            found[path] = None
        else:
            raise FileNotFoundError(f"not a folder or an .ipynb notebook: {raw}")
    return list(found)


def kernel_env(quick: bool) -> dict[str, str]:
    """The kernel's environment: this process's, with ``QUICK`` set to ``"1"`` or ``"0"``,
    ``TQDM_DISABLE=1``, without ``MPLBACKEND`` (the kernel's inline backend draws the figures)."""
    env = dict(os.environ)
    env.update(QUICK="1" if quick else "0", TQDM_DISABLE="1")
    # the kernel draws with its own inline backend, so the saved notebooks show their figures
    env.pop("MPLBACKEND", None)
    return env


def strip_timing(nb: nbformat.NotebookNode) -> None:
    """Remove the per-cell ``execution`` timestamps (they change on every run); keep
    ``execution_count``."""
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)


_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def stable_widget_ids(nb: nbformat.NotebookNode) -> None:
    """Rename the ipywidgets models saved in ``nb`` (random ids at every run) to ids fixed by
    where they are reached from: the widget outputs in cell order, then the models they refer to
    (``IPY_MODEL_<id>``) depth first, then any others by their content. A re-run of an unchanged
    notebook then leaves the file unchanged."""
    state = nb.get("metadata", {}).get("widgets", {}).get(_WIDGET_STATE, {}).get("state")
    if not state:
        return
    order: list[str] = []

    def visit(model_id: str) -> None:
        if model_id in state and model_id not in order:
            order.append(model_id)
            text = json.dumps(state[model_id], sort_keys=True)
            for ref in re.findall(r"IPY_MODEL_([0-9A-Za-z_-]+)", text):
                visit(ref)

    views = [
        out["data"][_WIDGET_VIEW]
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if _WIDGET_VIEW in out.get("data", {})
    ]
    for view in views:
        visit(view.get("model_id", ""))
    rest = sorted(
        (m for m in state if m not in order), key=lambda m: json.dumps(state[m], sort_keys=True)
    )
    for m in rest:
        visit(m)
    new = {
        old: hashlib.sha256(f"widget-{i}".encode()).hexdigest()[:32] for i, old in enumerate(order)
    }
    pattern = re.compile("|".join(re.escape(k) for k in new))
    renamed = json.loads(pattern.sub(lambda m: new[m.group(0)], json.dumps(dict(state))))
    nb.metadata.widgets[_WIDGET_STATE]["state"] = {new[k]: renamed[new[k]] for k in order}
    for view in views:
        view["model_id"] = new.get(view.get("model_id", ""), view.get("model_id", ""))


def write_atomically(nb: nbformat.NotebookNode, path: Path) -> None:
    """Write ``nb`` to ``path`` through a temporary file in the same folder and ``os.replace``,
    keeping the file's permissions, so a failure never leaves a half-written notebook."""
    text = nbformat.writes(nb)
    if not text.endswith("\n"):
        text += "\n"
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _shorten(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_error(exc: BaseException, cell_index: int | None) -> str:
    """A short one-line description: the (0-based) cell index, the exception's name and
    message."""
    where = f"cell index {cell_index}: " if cell_index is not None else ""
    if isinstance(exc, CellExecutionError) and getattr(exc, "ename", None):
        what = f"{exc.ename}: {exc.evalue}"
    elif isinstance(exc, CellTimeoutError):
        what = f"CellTimeoutError: {str(exc).splitlines()[0] if str(exc) else 'timed out'}"
    else:
        what = f"{type(exc).__name__}: {exc}"
    return _shorten(where + what)


def _is_interactive(cell) -> bool:
    return INTERACTIVE_TAG in cell.get("metadata", {}).get("tags", [])


def _client(nb, path: Path, timeout: int, bar: tqdm | None):
    """A NotebookClient for ``nb`` (cwd = the notebook's folder) that reports the cell it runs
    on ``bar`` and in the returned dict's ``"index"``."""
    current: dict[str, int | None] = {"index": None}

    def on_cell_start(cell, cell_index, **_):
        current["index"] = cell_index
        if bar is not None:
            bar.set_postfix_str(f"{path.name} cell {cell_index + 1}/{len(nb.cells)}", refresh=True)

    def timeout_for(cell) -> int:
        return min(timeout, INTERACTIVE_TIMEOUT) if _is_interactive(cell) else timeout

    client = NotebookClient(
        nb,
        timeout=timeout,
        timeout_func=timeout_for,
        kernel_name=KERNEL_NAME,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent.resolve())}},
        on_cell_start=on_cell_start,
    )
    return client, current


def run_notebook(
    path: Path, *, timeout: int, quick: bool, save: bool, bar: tqdm | None = None
) -> Result:
    """Execute the notebook at ``path`` in a fresh kernel (cwd = its folder) and, when it
    succeeded and ``save`` is true, write it back in place with its outputs."""
    start = time.perf_counter()
    for attempt in (1, 2):
        nb = nbformat.read(path, as_version=4)
        client, current = _client(nb, path, timeout, bar)
        try:
            client.execute(env=kernel_env(quick))
            break
        except CellTimeoutError as exc:
            index = current["index"]
            if attempt == 1 and index is not None and _is_interactive(nb.cells[index]):
                continue  # the widget reply was lost: once more, from a fresh kernel
            return Result(
                path, False, time.perf_counter() - start, error=_describe_error(exc, index)
            )
        except Exception as exc:  # a cell's error, a dead kernel, a failed start, ...
            return Result(
                path,
                False,
                time.perf_counter() - start,
                error=_describe_error(exc, current["index"]),
            )
    seconds = time.perf_counter() - start
    if save:
        strip_timing(nb)
        stable_widget_ids(nb)
        write_atomically(nb, path)
    return Result(path, True, seconds, saved=save)


def _child_command(path: Path, args: argparse.Namespace) -> list[str]:
    """The command line that runs ``path`` alone in a child process and reports its result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), str(path), "--jobs", "1"]
    cmd += ["--timeout", str(args.timeout), "--report-json"]
    if args.quick:
        cmd.append("--quick")
    if args.no_save:
        cmd.append("--no-save")
    return cmd


def run_in_child(path: Path, args: argparse.Namespace) -> Result:
    """Run ``path`` in a child process of this script (``--jobs 1 --report-json``) and read
    its result from the JSON line it prints; a child that prints none failed."""
    start = time.perf_counter()
    proc = subprocess.run(_child_command(path, args), capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            fields = json.loads(line[len(RESULT_PREFIX) :])
            return Result(path, fields["ok"], fields["seconds"], fields["saved"], fields["error"])
    tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
    detail = _shorten(tail[-1] if tail else f"exit status {proc.returncode}")
    return Result(path, False, time.perf_counter() - start, error=f"child failed: {detail}")


def _report(result: Result) -> str:
    line = f"{result.status:<6} {_display(result.path)} ({result.seconds:.1f} s)"
    if result.ok and result.saved:
        line += ", saved"
    if result.error:
        line += f" -- {result.error}"
    return line


def run_all(notebooks: list[Path], args: argparse.Namespace, save: bool) -> list[Result]:
    """Run ``notebooks``: one after the other in this process with a progress bar
    (``args.jobs == 1``), or up to ``args.jobs`` at once in child processes. Results in the
    order of ``notebooks``."""
    if args.jobs == 1 or len(notebooks) == 1:
        results = []
        with tqdm(
            notebooks, desc="notebooks", unit="nb", file=sys.stderr, dynamic_ncols=True
        ) as bar:
            for path in bar:
                results.append(
                    run_notebook(path, timeout=args.timeout, quick=args.quick, save=save, bar=bar)
                )
                tqdm.write(_report(results[-1]), file=sys.stdout)
                sys.stdout.flush()
        return results

    def one(path: Path) -> Result:
        result = run_in_child(path, args)
        print(_report(result), flush=True)
        return result

    with ThreadPoolExecutor(max_workers=min(args.jobs, len(notebooks))) as pool:
        return list(pool.map(one, notebooks))


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def format_table(results: list[Result]) -> str:
    """The summary table: one row per notebook with its status and run time in seconds."""
    names = [_display(r.path) for r in results]
    width = max([len("notebook"), *map(len, names)])
    lines = [
        f"{'notebook':<{width}}  {'status':<6}  {'seconds':>8}",
        f"{'-' * width}  {'-' * 6}  {'-' * 8}",
    ]
    for name, r in zip(names, results, strict=True):
        lines.append(f"{name:<{width}}  {r.status:<6}  {r.seconds:>8.1f}")
    n_failed = sum(not r.ok for r in results)
    lines.append(f"{len(results)} notebook(s): {len(results) - n_failed} ok, {n_failed} failed")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Execute notebooks headlessly and save them in place with their outputs."
    )
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[PROJECT_ROOT / "notebooks"],
        help="folders (their *.ipynb files, sorted) or notebooks; default: the notebooks/ folder",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=DEFAULT_TIMEOUT,
        help=f"per-cell timeout in seconds (default {DEFAULT_TIMEOUT})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run with QUICK=1 (small settings); the notebooks are not saved",
    )
    parser.add_argument(
        "--no-save", action="store_true", help="run the notebooks but do not save them"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="notebooks run at once, each in a child process (default 0: one per CPU core, "
        f"at most {MAX_DEFAULT_JOBS}); 1 runs them one after the other in this process",
    )
    parser.add_argument("--report-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be a positive number of seconds")
    if args.jobs < 0:
        parser.error(f"--jobs must be 0 (one per core) or a positive number, got {args.jobs}")
    if args.jobs == 0:
        args.jobs = max(1, min(os.cpu_count() or 1, MAX_DEFAULT_JOBS))
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks named on the command line; return the exit status (0 ok, 1 failed)."""
    args = parse_args(argv)
    try:
        notebooks = find_notebooks(args.paths)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not notebooks:
        print("no notebooks found in: " + ", ".join(map(str, args.paths)), file=sys.stderr)
        return 0
    save = not (args.quick or args.no_save)
    mode = "QUICK=1, not saved" if args.quick else ("QUICK=0, not saved" if not save else "QUICK=0")
    jobs = f", {args.jobs} at once" if args.jobs > 1 and len(notebooks) > 1 else ""
    print(
        f"running {len(notebooks)} notebook(s) ({mode}, timeout {args.timeout} s per cell{jobs})",
        flush=True,
    )
    start = time.perf_counter()
    results = run_all(notebooks, args, save)
    if args.report_json and len(results) == 1:
        fields = {k: v for k, v in asdict(results[0]).items() if k != "path"}
        print(RESULT_PREFIX + json.dumps(fields), flush=True)
    print()
    print(format_table(results))
    print(f"wall time: {time.perf_counter() - start:.1f} s")
    failed = [r for r in results if not r.ok]
    if failed:
        print("\nfailures (the notebook files were left unchanged):")
        for r in failed:
            print(f"  {_display(r.path)}: {r.error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
