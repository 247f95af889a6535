"""Tests for scripts/run_notebooks.py (what `make figures` runs). Five kernel runs in all."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.slow  # each test runs the script in a subprocess
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "run_notebooks.py"

# Writes what the kernel saw to a file in its working directory (which must be the notebook's
# folder), so the test can check it even when the notebook is not saved.
ENV_CELL = """\
import os, pathlib
seen = " ".join([os.environ["QUICK"], os.environ.get("MPLBACKEND", "-"), os.environ["TQDM_DISABLE"]])
pathlib.Path("seen_env.txt").write_text(seen)
print(os.environ["QUICK"])"""


@pytest.fixture(scope="module")
def run_notebooks():
    """The script, imported as a module."""
    spec = importlib.util.spec_from_file_location("run_notebooks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def write_notebook(path: Path, *sources: str) -> Path:
    """A notebook at ``path`` with one code cell per source. The first cell carries stale
    execution timestamps in its metadata, as a notebook run in Jupyter would."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nb.cells[0].metadata["execution"] = {"iopub.status.busy": "2024-01-01T00:00:00.000000Z"}
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


def table_row(out: str, name: str) -> list[str]:
    """The summary table's row (notebook, status, seconds) for the notebook called ``name``."""
    rows = [line.split() for line in out.splitlines()]
    matches = [row for row in rows if len(row) == 3 and row[0].endswith(name)]
    assert len(matches) == 1, out
    return matches[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files left in ``folder``."""
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_runs_saves_in_place_with_quick_0(run_notebooks, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QUICK", "1")  # must be overridden in the kernel
    nb_path = write_notebook(tmp_path / "good.ipynb", ENV_CELL, "1 + 1")
    environ_before = dict(os.environ)

    assert run_notebooks.main([str(tmp_path)]) == 0

    out = capsys.readouterr().out
    quick, backend, tqdm = (tmp_path / "seen_env.txt").read_text().split()
    assert (quick, tqdm) == ("0", "1") and backend != "Agg"  # inline backend: figures show
    nb = nbformat.read(nb_path, as_version=4)
    nbformat.validate(nb)
    first, second = nb.cells
    assert first.outputs[0]["text"] == "0\n"
    assert second.outputs[0]["data"]["text/plain"] == "2"
    assert [c.execution_count for c in nb.cells] == [1, 2]
    assert all("execution" not in c.metadata for c in nb.cells)  # timestamps stripped
    # The summary table.
    assert "notebook" in out and "status" in out and "seconds" in out
    _, status, seconds = table_row(out, "good.ipynb")
    assert status == "ok"
    assert float(seconds) >= 0
    assert "1 notebook(s): 1 ok, 0 failed" in out
    assert leftovers(tmp_path) == []
    assert dict(os.environ) == environ_before  # the kernel's settings did not leak out


def test_failing_notebook_is_reported_and_left_unchanged(run_notebooks, tmp_path, capsys):
    nb_path = write_notebook(tmp_path / "bad.ipynb", "x = 1", "x / 0", "print('never')")
    before = nb_path.read_bytes()

    assert run_notebooks.main([str(nb_path), "--timeout", "60"]) == 1

    out = capsys.readouterr().out
    assert nb_path.read_bytes() == before
    assert leftovers(tmp_path) == []
    assert table_row(out, "bad.ipynb")[1] == "FAILED"
    assert "cell index 1: ZeroDivisionError: division by zero" in out
    assert "1 notebook(s): 0 ok, 1 failed" in out


def test_quick_sets_quick_1_and_does_not_save(run_notebooks, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("QUICK", raising=False)
    nb_path = write_notebook(tmp_path / "good.ipynb", ENV_CELL, "1 + 1")
    before = nb_path.read_bytes()

    assert run_notebooks.main([str(nb_path), "--quick"]) == 0

    quick, backend, tqdm = (tmp_path / "seen_env.txt").read_text().split()
    assert (quick, tqdm) == ("1", "1") and backend != "Agg"
    assert nb_path.read_bytes() == before
    assert "1 ok, 0 failed" in capsys.readouterr().out


def test_jobs_run_notebooks_at_once_in_children_and_keep_their_order(
    run_notebooks, tmp_path, capsys
):
    """Two notebooks that each wait for the other's file: they finish only if they run at the
    same time. The one that fails is reported and left as it was; the table keeps their order."""
    wait = """\
import pathlib, time
pathlib.Path("{mine}").touch()
deadline = time.time() + 60
while not pathlib.Path("{other}").exists() and time.time() < deadline:
    time.sleep(0.05)
assert pathlib.Path("{other}").exists(), "not run at the same time"
print("met")"""
    a = write_notebook(tmp_path / "a.ipynb", wait.format(mine="a.flag", other="b.flag"))
    b = write_notebook(tmp_path / "b.ipynb", wait.format(mine="b.flag", other="a.flag"), "1 / 0")
    b_before = b.read_bytes()

    assert run_notebooks.main([str(tmp_path), "--jobs", "2", "--timeout", "120"]) == 1

    out = capsys.readouterr().out
    assert nbformat.read(a, as_version=4).cells[0].outputs[0]["text"] == "met\n"  # saved
    assert b.read_bytes() == b_before
    assert "cell index 1: ZeroDivisionError" in out
    assert table_row(out, "a.ipynb")[1] == "ok" and table_row(out, "b.ipynb")[1] == "FAILED"
    table = out[out.index("notebook  ") :]
    assert table.index("a.ipynb") < table.index("b.ipynb")
    assert "2 notebook(s): 1 ok, 1 failed" in out and "2 at once" in out
    assert leftovers(tmp_path) == []


def test_bad_jobs_is_refused_by_name(run_notebooks, capsys):
    with pytest.raises(SystemExit):
        run_notebooks.parse_args(["--jobs", "-1"])
    assert "--jobs" in capsys.readouterr().err
    assert run_notebooks.parse_args(["--jobs", "0"]).jobs >= 1  # one per core


# No kernel below.


def test_find_notebooks_sorted_and_deduplicated(run_notebooks, tmp_path):
    for name in ["b.ipynb", "a.ipynb", "c.txt"]:
        (tmp_path / name).write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.ipynb").write_text("{}")
    found = run_notebooks.find_notebooks([tmp_path, tmp_path / "a.ipynb", tmp_path / "sub"])
    assert found == [tmp_path / "a.ipynb", tmp_path / "b.ipynb", tmp_path / "sub" / "d.ipynb"]


def test_missing_path_is_an_error(run_notebooks, tmp_path, capsys):
    assert run_notebooks.main([str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_empty_folder_runs_nothing(run_notebooks, tmp_path, capsys):
    assert run_notebooks.main([str(tmp_path)]) == 0
    assert "no notebooks" in capsys.readouterr().err


def test_kernel_env(run_notebooks, monkeypatch):
    monkeypatch.setenv("QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "QtAgg")
    env = run_notebooks.kernel_env(quick=False)
    assert (env["QUICK"], env["TQDM_DISABLE"]) == ("0", "1")
    assert "MPLBACKEND" not in env  # the kernel's inline backend, so notebooks show figures
    assert run_notebooks.kernel_env(quick=True)["QUICK"] == "1"
    assert os.environ["MPLBACKEND"] == "QtAgg"


def widget_notebook(ids: list[str]) -> nbformat.NotebookNode:
    """A notebook whose output shows widget ids[0], a box holding ids[1] and ids[2] (a slider
    and its style), plus an unreferenced model ids[3]: what ipywidgets saves, with its ids."""
    nb = nbformat.v4.new_notebook()
    out = nbformat.v4.new_output(
        "display_data",
        data={"application/vnd.jupyter.widget-view+json": {"model_id": ids[0], "version_major": 2}},
    )
    nb.cells = [nbformat.v4.new_code_cell("box", outputs=[out], id="show-box")]
    state = {
        ids[0]: {"model_name": "VBoxModel", "state": {"children": [f"IPY_MODEL_{ids[1]}"]}},
        ids[1]: {"model_name": "FloatSliderModel", "state": {"style": f"IPY_MODEL_{ids[2]}"}},
        ids[2]: {"model_name": "SliderStyleModel", "state": {}},
        ids[3]: {"model_name": "LayoutModel", "state": {}},
    }
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": dict(sorted(state.items())),
            "version_major": 2,
            "version_minor": 0,
        }
    }
    return nb


def test_widget_ids_are_made_stable(run_notebooks):
    first = widget_notebook(["f3a1", "09bc", "77de", "aa00"])
    second = widget_notebook(["0c11", "e2f4", "5b6a", "1d9e"])  # the same run, other ids
    for nb in (first, second):
        run_notebooks.stable_widget_ids(nb)
    assert nbformat.writes(first) == nbformat.writes(second)
    state = first.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    view_id = first.cells[0].outputs[0].data["application/vnd.jupyter.widget-view+json"]
    box, slider, style, layout = state  # in the order reached from the output
    assert view_id["model_id"] == box
    assert state[box]["state"]["children"] == [f"IPY_MODEL_{slider}"]
    assert state[slider]["state"]["style"] == f"IPY_MODEL_{style}"
    assert state[layout]["model_name"] == "LayoutModel"
    unchanged = nbformat.v4.new_notebook()
    run_notebooks.stable_widget_ids(unchanged)  # no widgets: nothing to do
    assert "widgets" not in unchanged.metadata


SLOW_FIRST_TIME = """\
import pathlib, time
marker = pathlib.Path("attempts.txt")
n = int(marker.read_text()) if marker.exists() else 0
marker.write_text(str(n + 1))
if n == 0:
    time.sleep(60)"""


@pytest.mark.parametrize("tagged", [True, False], ids=["interactive", "plain"])
def test_a_timed_out_interactive_cell_is_run_once_more(
    run_notebooks, tmp_path, monkeypatch, tagged
):
    """A cell tagged interactive that hangs (as a lost widget reply does) times out after
    INTERACTIVE_TIMEOUT and its notebook runs again; any other timeout is a failure at once."""
    path = write_notebook(tmp_path / "widgets.ipynb", SLOW_FIRST_TIME, "print('after')")
    nb = nbformat.read(path, as_version=4)
    if tagged:
        nb.cells[0].metadata["tags"] = ["interactive"]
    nbformat.write(nb, path)
    monkeypatch.setattr(run_notebooks, "INTERACTIVE_TIMEOUT", 3)
    result = run_notebooks.run_notebook(
        path, timeout=3 if not tagged else 600, quick=True, save=False
    )
    attempts = int((tmp_path / "attempts.txt").read_text())
    if tagged:
        assert result.ok and attempts == 2 and result.seconds < 60
    else:
        assert not result.ok and attempts == 1 and "cell index 0: CellTimeoutError" in result.error
