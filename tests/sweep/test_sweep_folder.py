"""The sweep folder as the one source of truth: one sweep per folder at a time (a lock that a
killed sweep does not leave stuck, checked with two processes), every row of ``trials.csv``
checked whole on resume (a row cut short, a number cut short, a duplicated row, a row whose key
does not match its configuration are refused with the file and line), and unreadable configs,
damaged tables and unusable output folders reported with the file named and exit 2 (no
traceback), before anything runs."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest

from analysis_lib.sweep import MEASUREMENTS, ConfigError, load_config, read_trials, run_sweep
from analysis_lib.sweep import runner as sweep_runner
from analysis_lib.sweep.__main__ import main as cli_main
from analysis_lib.sweep.folder import SweepFolder, trials_csv

ROOT = Path(__file__).resolve().parents[2]
STEPS = 5


def cfg(seeds=(0, 1), measurements=()) -> dict:
    return {
        "name": "folder",
        "seeds": list(seeds),
        "measurements": list(measurements),
        "task": {"name": "digits", "args": {"model": "mlp", "hidden": [8]}},
        "budget": {"steps": STEPS, "batch_size": 32},
        "optimizers": [{"name": "sgd", "lrs": [0.05, 0.1]}],
    }


def toml(seeds=(0, 1), measurements=()) -> str:
    return (
        f"name = 'folder'\nseeds = {list(seeds)}\nmeasurements = {list(measurements)}\n"
        "[task]\nname = 'digits'\nargs = { model = 'mlp', hidden = [8] }\n"
        f"[budget]\nsteps = {STEPS}\nbatch_size = 32\n"
        "[[optimizers]]\nname = 'sgd'\nlrs = [0.05, 0.1]\n"
    )


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """A finished sweep of 4 trials (2 lrs x 2 seeds), to be copied."""
    out = tmp_path_factory.mktemp("done") / "out"
    result = run_sweep(cfg(), out, serial=True, progress=False)
    assert result.ran == 4 and set(result.trials["status"]) == {"ok"}
    return out


@pytest.fixture
def sweep(done, tmp_path) -> Path:
    """A copy of the finished sweep, for a test to damage."""
    out = tmp_path / "out"
    shutil.copytree(done, out)
    return out


@pytest.fixture
def no_trial_runs(monkeypatch):
    """Fails the test if a trial starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("a trial ran")

    monkeypatch.setattr(sweep_runner, "run_trial", refuse)


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def field_index(path: Path, column: str) -> int:
    return next(csv.reader(StringIO(lines(path)[0]))).index(column)


def edit_field(line: str, index: int, new: str) -> str:
    fields = next(csv.reader(StringIO(line)))
    fields[index] = new
    buf = StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


def refused(out: Path, capsys, *needles: str) -> str:
    """Runs the CLI on ``out`` (same config): exit 2, the message holds ``needles``."""
    config = out.parent / "folder.toml"
    config.write_text(toml())
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert cli_main([str(config), "--out", str(out), "--serial"]) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # nothing was written
    return err


# -- one sweep per folder -------------------------------------------------------------------------
SCRIPT = """
import pathlib, sys, time
from analysis_lib.sweep import register_measurement
from analysis_lib.sweep.__main__ import main

go = pathlib.Path(sys.argv[1])

def hold(model, task):  # signals that the sweep runs, then waits for the go
    (go.parent / "inside").touch()
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return {}

register_measurement("hold", hold)
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_a_second_sweep_into_a_running_sweeps_folder_is_refused_and_a_killed_one_frees_it(
    tmp_path, monkeypatch
):
    """Two processes: a sweep and its extension into one folder. The second is refused at once
    (exit 2, naming the folder) while the first runs; after the first is killed with SIGKILL
    (its lock is not left behind), the extension runs and the table holds every trial once."""
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    first, extension = tmp_path / "first.toml", tmp_path / "extension.toml"
    first.write_text(toml(seeds=[0], measurements=["hold"]))
    extension.write_text(toml(seeds=[0, 1], measurements=["hold"]))
    out = tmp_path / "out"
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}

    def cli(go: Path, config: Path, **kw):
        cmd = [sys.executable, str(script), str(go), str(config), "--out", str(out), "--serial"]
        return cmd, {"cwd": ROOT, "env": env, **kw}

    cmd, kw = cli(tmp_path / "never", first)
    holder = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "inside").exists():
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the first sweep never started a trial"
            time.sleep(0.05)
        (tmp_path / "go").touch()  # a second sweep that did start would not wait
        cmd, kw = cli(tmp_path / "go", extension)
        start = time.monotonic()
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
        assert second.returncode == 2, second.stderr
        assert str(out) in second.stderr and "another sweep is running" in second.stderr
        assert "Traceback" not in second.stderr
        assert time.monotonic() - start < 60
        assert not (out / "trials.csv").exists()  # the second one wrote nothing
        holder.send_signal(signal.SIGKILL)  # a crash, holding the lock
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
        holder.stderr.close()
    monkeypatch.setitem(MEASUREMENTS, "hold", lambda model, task: {})
    assert cli_main([str(extension), "--out", str(out), "--serial"]) == 0  # the lock is free
    table = read_trials(out)
    assert len(table) == 4 and table["key"].is_unique and set(table["status"]) == {"ok"}
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "summary.csv", "trials.csv"]


def test_a_sweep_holding_the_folder_refuses_another_in_the_same_process(tmp_path):
    out = tmp_path / "out"
    with SweepFolder(out):
        with pytest.raises(ConfigError, match="another sweep is running") as err:
            run_sweep(cfg(), out, serial=True, progress=False)
        assert str(out) in str(err.value)
        assert not (out / "config.json").exists()
    result = run_sweep(cfg(seeds=[0]), out, serial=True, progress=False)  # released
    assert result.ran == 2
    assert not (out / ".sweep.lock").exists()  # no debris after a sweep


# -- rows checked whole ---------------------------------------------------------------------------
def test_an_intact_sweep_resumes_with_nothing_to_run(sweep, no_trial_runs):
    result = run_sweep(cfg(), sweep, serial=True, progress=False)
    assert (result.ran, result.skipped) == (0, 4)
    assert "checksum" not in result.trials.columns
    pd.testing.assert_frame_equal(result.trials, read_trials(sweep), check_exact=True)


def test_a_row_cut_short_after_its_status_is_refused(sweep, no_trial_runs, capsys):
    path = sweep / "trials.csv"
    rows = lines(path)
    status = field_index(path, "status")
    fields = next(csv.reader(StringIO(rows[2])))
    assert fields[status] == "ok"
    cut = rows[2][: rows[2].index(",ok,") + len(",ok,")]
    path.write_text("".join([*rows[:2], cut + "\n", *rows[3:]]), encoding="utf-8")
    with pytest.raises(ConfigError, match="line 3") as err:
        run_sweep(cfg(), sweep, serial=True, progress=False)
    assert str(path) in str(err.value)
    with pytest.raises(ConfigError, match="line 3"):
        read_trials(sweep)
    refused(sweep, capsys, str(path), "line 3")


@pytest.mark.parametrize("column", ["val_accuracy", "test_loss", "seconds"])
def test_a_number_cut_short_is_refused(sweep, no_trial_runs, column, capsys):
    path = sweep / "trials.csv"
    rows = lines(path)
    index = field_index(path, column)
    value = next(csv.reader(StringIO(rows[4])))[index]
    assert len(value) > 5
    rows[4] = edit_field(rows[4], index, value[:4])  # e.g. 0.95264625 -> 0.95
    path.write_text("".join(rows), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 5: .*checksum"):
        run_sweep(cfg(), sweep, serial=True, progress=False)
    refused(sweep, capsys, str(path), "line 5")


def test_a_duplicated_row_is_refused_not_counted_twice(sweep, no_trial_runs, capsys):
    path = sweep / "trials.csv"
    rows = lines(path)
    path.write_text("".join([*rows, rows[1]]), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 6: .*already on line 2"):
        run_sweep(cfg(), sweep, serial=True, progress=False)
    with pytest.raises(ConfigError, match="line 6"):
        read_trials(sweep)
    refused(sweep, capsys, str(path), "line 6")


def test_a_row_whose_configuration_does_not_match_its_key_is_refused(sweep, no_trial_runs):
    """Even with a checksum that matches (the row was written so), a row whose seed or lr is
    not its key's, or whose key is not a trial of the config, is refused."""
    path = sweep / "trials.csv"
    table = read_trials(sweep)
    records = table.to_dict("records")
    records[1]["seed"] = 7
    path.write_bytes(trials_csv(records))
    with pytest.raises(ConfigError, match="line 3: its seed does not match"):
        run_sweep(cfg(), sweep, serial=True, progress=False)
    records = table.to_dict("records")
    records[2]["key"] = "0123456789abcdef"
    path.write_bytes(trials_csv(records))
    with pytest.raises(ConfigError, match="line 4: key 0123456789abcdef is not a trial"):
        run_sweep(cfg(), sweep, serial=True, progress=False)


def test_an_ok_row_without_its_metrics_is_refused(sweep, no_trial_runs):
    """A row marked ok whose metrics are empty (as an error row turned ok) is never counted."""
    path = sweep / "trials.csv"
    records = read_trials(sweep).to_dict("records")
    records[0].update(status="ok", val_loss=float("nan"))
    path.write_bytes(trials_csv(records))
    with pytest.raises(ConfigError, match="line 2: val_loss is missing"):
        read_trials(sweep)


def test_a_table_without_checksums_is_read_with_the_other_checks(sweep, no_trial_runs):
    """A trials.csv from before the checksum column: resumed (with a warning), every other
    check in force, and rewritten with checksums when the sweep next writes it."""
    path = sweep / "trials.csv"
    records = list(csv.reader(StringIO(path.read_text(encoding="utf-8"))))
    buf = StringIO()
    csv.writer(buf, lineterminator="\n").writerows([r[:-1] for r in records])
    path.write_text(buf.getvalue(), encoding="utf-8")
    with pytest.warns(RuntimeWarning, match="without row checksums"):
        result = run_sweep(cfg(), sweep, serial=True, progress=False)
    assert (result.ran, result.skipped) == (0, 4)
    legacy = lines(path)
    path.write_text("".join([*legacy[:3], legacy[3][: legacy[3].index(",ok,") + 4] + "\n"]))
    with pytest.raises(ConfigError, match=r"line 4: .* fields where the header has"):
        run_sweep(cfg(), sweep, serial=True, progress=False)


# -- unreadable files and folders -----------------------------------------------------------------
@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n\n",
        b"\xff\xfe\x00garbage\x80\x81",
        b"hello, world\n1,2\n",
        b'"unterminated\n',
        None,  # ragged: a row with an extra field
    ],
    ids=["empty", "blank", "binary", "not-a-table", "bad-quote", "ragged"],
)
def test_a_damaged_trials_table_is_a_config_error_naming_it(sweep, content, no_trial_runs, capsys):
    path = sweep / "trials.csv"
    if content is None:
        rows = lines(path)
        content = "".join([*rows[:2], rows[2].rstrip("\n") + ",extra\n", *rows[3:]]).encode()
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        run_sweep(cfg(), sweep, serial=True, progress=False)
    assert str(path) in str(err.value)
    with pytest.raises(ConfigError):
        read_trials(sweep)
    refused(sweep, capsys, str(path))


def test_a_config_that_is_not_utf8_is_a_config_error_naming_it(tmp_path, capsys):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(toml().replace("folder", "caf\xe9").encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8") as err:
        load_config(bad)
    assert str(bad) in str(err.value)
    out = tmp_path / "out"
    assert cli_main([str(bad), "--out", str(out), "--serial"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "UTF-8" in err and "codec" not in err
    assert cli_main([str(tmp_path), "--out", str(out), "--serial"]) == 2  # a folder
    assert str(tmp_path) in capsys.readouterr().err
    assert not out.exists()


def test_a_stored_config_json_that_is_not_utf8_is_refused_naming_it(sweep, capsys):
    (sweep / "config.json").write_bytes(b"\xff\xfe{not json")
    err = refused(sweep, capsys, str(sweep / "config.json"))
    assert "codec" not in err


@pytest.mark.parametrize("name", ["config.json", "trials.csv", "summary.csv", ".sweep.lock"])
def test_a_folder_where_a_sweep_file_goes_is_refused_before_anything_runs(
    sweep, name, no_trial_runs, capsys
):
    target = sweep / name
    if target.exists():
        target.unlink()
    target.mkdir()
    with pytest.raises(ConfigError, match="is a folder") as err:
        run_sweep(cfg(), sweep, serial=True, progress=False)
    assert str(target) in str(err.value)
    refused(sweep, capsys, str(target))


def test_an_output_folder_under_a_file_or_that_is_a_file_is_refused(tmp_path, capsys):
    config = tmp_path / "folder.toml"
    config.write_text(toml())
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for out in (afile, afile / "out", afile / "deeper" / "out"):
        with pytest.raises(ConfigError) as err:
            run_sweep(cfg(), out, serial=True, progress=False)
        assert str(out) in str(err.value)
        assert cli_main([str(config), "--out", str(out), "--serial"]) == 2
        assert str(out) in capsys.readouterr().err
    assert afile.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_output_folder_is_refused(tmp_path, capsys):
    config = tmp_path / "folder.toml"
    config.write_text(toml())
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert cli_main([str(config), "--out", str(out), "--serial"]) == 2
        assert str(out) in capsys.readouterr().err
    finally:
        out.chmod(0o700)


def test_a_sweep_that_fails_before_writing_leaves_no_new_folder(tmp_path, monkeypatch):
    """A new output folder is removed again when the sweep is refused before it writes."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "new"
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        run_sweep(
            cfg(), out, scheduler=f"tcp://127.0.0.1:{port}", connect_timeout=1, progress=False
        )
    assert not out.exists()
