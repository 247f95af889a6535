"""Tests for scripts/figures_check.py: two tiny runs of a notebook (built with nbformat, a pandas
table, PNGs drawn by matplotlib) in tmp_path, compared by the script's own main() and, once, by
its command line."""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "figures_check.py"
PDF_RULE = """
[[figure]]
pattern = "*.pdf"
reason = "fonts differ by machine"
"""


@pytest.fixture(scope="module")
def fc():
    """The script, imported as a module."""
    spec = importlib.util.spec_from_file_location("figures_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def draw_png(path: Path, y: float) -> None:
    """A small matplotlib figure: one line from (0, 0) to (1, y)."""
    fig = Figure(figsize=(2, 1.5), dpi=50)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, y])
    ax.set_ylim(0, 2)
    fig.savefig(path, metadata={"Software": None})


def build_run(
    root: Path, *, run_id: int = 0, lr: str = "0.056", drift: str = "327", y: float = 1.0
) -> Path:
    """A project folder with notebooks/01_demo.ipynb and figures/fig.{png,pdf}. ``run_id``
    changes only what the check ignores: execution counts, timings, stderr, image payloads,
    widget ids, the figures folder printed in a path, the PDF's bytes."""
    (root / "notebooks").mkdir(parents=True)
    (root / "figures").mkdir()
    table = pd.DataFrame(
        {"rastrigin": [lr, "1e-05"], "beale": ["0.032", "0.56"]},
        index=pd.Index(["SGD", "Adam"], name="method"),
    )
    streams = [
        new_output("stream", name="stdout", text=f"AdamNX drift fell {drift}x\n"),
        new_output("stream", name="stderr", text=f"a warning from run {run_id}\n"),
        new_output("stream", name="stdout", text=f"saved {root}/figures/fig.png\n"),
    ]
    image = base64.b64encode(bytes([run_id]) * 16).decode()
    widget = {"model_id": f"{run_id:032x}", "version_major": 2, "version_minor": 0}
    displays = [
        new_output("display_data", {"image/png": image, "text/plain": "<Figure size 200x150>"}),
        new_output("display_data", {"application/vnd.jupyter.widget-view+json": widget}),
    ]
    nb = new_notebook(
        cells=[
            new_markdown_cell("# A demo"),
            new_code_cell("print(drift)", execution_count=1 + run_id, outputs=streams),
            new_code_cell(
                "best_lrs.map('{:.2g}'.format)",
                execution_count=2 + run_id,
                outputs=[
                    new_output(
                        "execute_result",
                        {"text/html": table.to_html(), "text/plain": table.to_string()},
                        execution_count=2 + run_id,
                    )
                ],
            ),
            new_code_cell("plots.save(fig, 'fig')", outputs=displays),
        ]
    )
    nb.cells[1].metadata["execution"] = {"iopub.execute_input": f"2025-01-0{run_id + 1}T00:00"}
    nbformat.write(nb, root / "notebooks" / "01_demo.ipynb")
    draw_png(root / "figures" / "fig.png", y)
    (root / "figures" / "fig.pdf").write_bytes(f"%PDF-1.4 fonts of machine {run_id}".encode())
    return root


def write_config(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "regeneration.toml"
    path.write_text(PDF_RULE + text, encoding="utf-8")
    return path


def check(fc, capsys, fresh: Path, ref: Path, config: Path, *extra: str) -> tuple[int, dict]:
    """The exit status and the JSON report of the script comparing ``fresh`` with ``ref``."""
    status = fc.main([str(fresh), "--against", str(ref), "--config", str(config), "--json", *extra])
    return status, json.loads(capsys.readouterr().out)


def lines_of(fc, report: dict) -> list[str]:
    return [fc.Difference(**d).line() for d in report["differences"]]


def test_identical_runs_pass(fc, capsys, tmp_path):
    ref = build_run(tmp_path / "a", run_id=0)
    fresh = build_run(tmp_path / "b", run_id=1)
    # the same pixels in other bytes: compared by pixels, not bytes
    png = fresh / "figures" / "fig.png"
    Image.open(png).save(png, compress_level=1)
    config = write_config(tmp_path)
    status = fc.main([str(fresh), "--against", str(ref), "--config", str(config)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "0 difference(s) not covered by the config, 0 allowed" in out
    assert "not compared: 1 file(s) matching '*.pdf' (fonts differ by machine)" in out
    status, report = check(fc, capsys, fresh, ref, config)
    assert status == 0 and report["ok"] and report["differences"] == []
    assert report["summary"]["png_compared"] == 1
    assert report["summary"]["png_byte_identical"] == 0


def test_number_beyond_rtol_is_reported_with_old_and_new(fc, capsys, tmp_path):
    ref = build_run(tmp_path / "a", lr="0.056", drift="327")
    fresh = build_run(tmp_path / "b", lr="0.0561", drift="412")
    status, report = check(fc, capsys, fresh, ref, write_config(tmp_path))
    assert status == 1 and not report["ok"]
    found = {(d["old"], d["new"]): d for d in report["differences"]}
    assert set(found) == {("0.056", "0.0561"), ("327", "412")}  # the text/plain twin: not twice
    table = found["0.056", "0.0561"]
    assert (table["cell"], table["what"], table["allowed"]) == (2, "number", False)
    assert table["where"] == "table row 'SGD', column 'rastrigin'"
    assert table["source"] == "best_lrs.map('{:.2g}'.format)"
    line = fc.Difference(**found["327", "412"]).line()
    assert line.startswith("DIFF    01_demo.ipynb cell 1 `print(drift)`: number 327 → 412")
    assert report["summary"]["differences"] == 2


def test_numbers_within_tolerance_pass(fc, capsys, tmp_path):
    ref = build_run(tmp_path / "a", lr="0.056", drift="327")
    fresh = build_run(tmp_path / "b", lr="0.05600001", drift="327.0")  # relative 1.8e-7
    config = write_config(tmp_path)
    assert check(fc, capsys, fresh, ref, config)[0] == 0
    # the same change fails with a stricter rtol from the command line
    status, report = check(fc, capsys, fresh, ref, config, "--rtol", "1e-8")
    assert status == 1 and [(d["old"], d["new"]) for d in report["differences"]] == [
        ("0.056", "0.05600001")
    ]


def test_output_entry_loosens_one_cell_and_says_why(fc, capsys, tmp_path):
    ref = build_run(tmp_path / "a", drift="327", lr="0.056")
    fresh = build_run(tmp_path / "b", drift="331", lr="0.06")
    rule = '[[output]]\nnotebook = "01_*.ipynb"\ncell = 1\nrtol = 0.05\nreason = "chaotic run"\n'
    status, report = check(fc, capsys, fresh, ref, write_config(tmp_path, rule))
    assert status == 1  # the table's 0.056 -> 0.06 (cell 2) is not covered
    by_cell = {d["cell"]: d for d in report["differences"]}
    assert by_cell[1]["allowed"] and by_cell[1]["reason"] == "chaotic run"
    assert not by_cell[2]["allowed"]
    assert lines_of(fc, report)[0].startswith("allowed 01_demo.ipynb cell 1")


def test_changed_png_is_reported_with_its_pixel_fraction(fc, capsys, tmp_path):
    ref = build_run(tmp_path / "a", y=1.0)
    fresh = build_run(tmp_path / "b", y=1.5)
    status, report = check(fc, capsys, fresh, ref, write_config(tmp_path))
    assert status == 1
    [diff] = report["differences"]
    assert (diff["name"], diff["what"], diff["allowed"]) == ("fig.png", "figure", False)
    a = np.asarray(Image.open(ref / "figures" / "fig.png").convert("RGBA"), dtype=int)
    b = np.asarray(Image.open(fresh / "figures" / "fig.png").convert("RGBA"), dtype=int)
    expected = np.mean(np.abs(a - b).max(axis=2) > 1)
    assert 0 < diff["fraction"] == pytest.approx(expected)
    assert f"{100 * expected:.3g}% of pixels changed" in fc.Difference(**diff).line()
    # a tolerance on the fraction of changed pixels lets it pass
    assert check(fc, capsys, fresh, ref, write_config(tmp_path), "--pixel-fraction", "0.5")[0] == 0


def test_figure_listed_in_the_config_is_allowed(fc, capsys, tmp_path):
    ref = build_run(tmp_path / "a", y=1.0)
    fresh = build_run(tmp_path / "b", y=1.5)
    rule = '[[figure]]\npattern = "fig*.png"\nreason = "drawn from a chaotic trajectory"\n'
    status, report = check(fc, capsys, fresh, ref, write_config(tmp_path, rule))
    assert status == 0 and report["ok"]
    assert (report["summary"]["differences"], report["summary"]["allowed"]) == (0, 1)
    [line] = lines_of(fc, report)
    assert line.startswith("allowed fig.png: figure (")
    assert line.endswith("[allowed: drawn from a chaotic trajectory]")
    # with a max_fraction below the change, it is no longer allowed
    capped = rule + "max_fraction = 1e-9\n"
    assert check(fc, capsys, fresh, ref, write_config(tmp_path, capped))[0] == 1


def test_missing_figure_and_unlisted_pdf_are_differences(fc, capsys, tmp_path):
    ref = build_run(tmp_path / "a")
    fresh = build_run(tmp_path / "b")
    (fresh / "figures" / "fig.png").unlink()
    config = tmp_path / "bare.toml"
    config.write_text("", encoding="utf-8")
    status, report = check(fc, capsys, fresh, ref, config)
    assert status == 1
    found = {(d["name"], d["what"]): d for d in report["differences"]}
    assert found["fig.png", "figure"]["detail"] == "only in the reference"
    assert "no pixel comparison" in found["fig.pdf", "figure not compared"]["detail"]


def test_cell_source_change_is_reported(fc, capsys, tmp_path):
    ref = build_run(tmp_path / "a")
    fresh = build_run(tmp_path / "b")
    path = fresh / "notebooks" / "01_demo.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].source = "best_lrs.map('{:.3g}'.format)"
    nb.cells.append(new_code_cell("extra()"))
    nbformat.write(nb, path)
    status, report = check(fc, capsys, fresh, ref, write_config(tmp_path))
    assert status == 1
    source, extra = report["differences"]
    assert (source["what"], source["cell"]) == ("source differs", 2)
    assert (source["old"], source["new"]) == (
        "best_lrs.map('{:.2g}'.format)",
        "best_lrs.map('{:.3g}'.format)",
    )
    assert "outputs not compared" in source["detail"]
    assert (extra["what"], extra["cell"], extra["source"]) == (
        "cell only in the fresh run",
        4,
        "extra()",
    )


@pytest.fixture(scope="module")
def a_run(tmp_path_factory) -> Path:
    """One run, shared by the tests that only need a valid folder."""
    return build_run(tmp_path_factory.mktemp("run") / "a")


@pytest.mark.parametrize(
    ("args", "config_text", "named"),
    [
        pytest.param(["--against", "{tmp}/nowhere"], PDF_RULE, "--against", id="no-folder"),
        pytest.param(["--against", "git:no-such-rev-xyz"], PDF_RULE, "--against", id="no-rev"),
        pytest.param(["--against", "git:"], PDF_RULE, "--against", id="empty-rev"),
        pytest.param(["--rtol", "-1"], PDF_RULE, "--rtol", id="rtol"),
        pytest.param(["--pixel-fraction", "2"], PDF_RULE, "--pixel-fraction", id="fraction"),
        pytest.param(["--config", "{tmp}/missing.toml"], PDF_RULE, "--config", id="no-config"),
        pytest.param([], '[[figure]]\npattern = "*.png"\n', "--config", id="no-reason"),
        pytest.param([], "[defaults]\nrtol = -1e-3\n", "--config", id="negative-rtol"),
        pytest.param([], "[defualts]\nrtol = 1\n", "--config", id="typo"),
        pytest.param([], "[defaults\n", "--config", id="not-toml"),
    ],
)
def test_bad_arguments_give_an_error_naming_the_argument(
    fc, capsys, tmp_path, a_run, args, config_text, named
):
    config = tmp_path / "regeneration.toml"
    config.write_text(config_text, encoding="utf-8")
    argv = [str(a_run), "--against", str(a_run), "--config", str(config)]
    argv += [a.format(tmp=tmp_path) for a in args]
    assert fc.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"figures_check.py: error: {named}: "), captured.err


def test_bad_run_folder_is_named(fc, capsys, tmp_path):
    assert (
        fc.main(
            [str(tmp_path), "--against", str(tmp_path), "--config", str(write_config(tmp_path))]
        )
        == 2
    )
    assert "error: RUN: " in capsys.readouterr().err


def test_tokens_and_tables(fc):
    tokens = fc.tokenize("lr=1e-05, 2,998,501 steps; -0.03 at 327x by Ada2MS", "here")
    numbers = [t.value for t in tokens if t.value is not None]
    assert numbers == [1e-05, 2998501.0, -0.03, 327.0]
    assert "Ada2MS" in [t.text for t in tokens]
    frame = pd.DataFrame(
        [[0.5, 2]],
        index=["AdamW"],
        columns=pd.MultiIndex.from_tuples([("loss", "x"), ("acc", "y")]),
    )
    cells = [t for t in fc.table_tokens(frame.to_html()) if t.column]
    assert [(t.column, t.value) for t in cells] == [("loss / x", 0.5), ("acc / y", 2.0)]
    assert cells[0].where == "table row 'AdamW', column 'loss / x'"


def test_git_run_reads_the_committed_files(fc):
    """git:HEAD of this repository: the committed notebooks and figures, byte for byte."""
    root = SCRIPT.parent.parent
    listing = subprocess.run(
        ["git", "-C", str(root), "ls-tree", "--name-only", "HEAD", "notebooks/", "figures/"],
        capture_output=True,
        text=True,
        check=False,
    )
    if listing.returncode != 0:
        pytest.skip("not a git checkout")
    paths = listing.stdout.split()
    run = fc.open_run("git:HEAD", "--against")
    assert sorted(run.notebooks) == sorted(Path(p).name for p in paths if p.endswith(".ipynb"))
    assert sorted(run.figures) == sorted(
        Path(p).name for p in paths if p.endswith((".png", ".pdf"))
    )
    first = next(p for p in paths if p.endswith(".ipynb"))
    shown = subprocess.run(["git", "-C", str(root), "show", f"HEAD:{first}"], capture_output=True)
    assert run.notebooks[Path(first).name] == shown.stdout


def test_command_line_and_committed_config(tmp_path):
    """The script as `make figures-check` runs it, with the committed figures/regeneration.toml."""
    ref = build_run(tmp_path / "a", lr="0.056")
    fresh = build_run(tmp_path / "b", lr="1e-05")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(fresh / "notebooks"), "--against", str(ref), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["config"].endswith("regeneration.toml")
    assert [(d["old"], d["new"], d["allowed"]) for d in report["differences"]] == [
        ("0.056", "1e-05", False)
    ]
