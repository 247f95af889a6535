"""Sweeps (analysis_lib.sweep): config validation, a trial equal to a direct training run, serial
and LocalCluster runs giving the same table, faults (errors, divergence, a killed worker),
resume, and the summary over seeds against scipy's t-interval."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis_lib import training
from analysis_lib.cluster import local_cluster
from analysis_lib.io import canonical_json
from analysis_lib.problems import tasks
from analysis_lib.sweep import (
    MEASUREMENTS,
    ConfigError,
    load_config,
    read_trials,
    run_sweep,
    summarize,
)
from analysis_lib.sweep.__main__ import main as cli_main

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
RUN_COLUMNS = ["seconds", "worker"]  # the only columns that may differ between two runs


def tiny(**over) -> dict:
    """A sweep of 2 optimizers x 2 lrs x 2 seeds of 25 steps on a small digits MLP."""
    cfg = {
        "name": "tiny",
        "seeds": [0, 1],
        "task": {"name": "digits", "args": {"model": "mlp", "hidden": [16]}},
        "budget": {"steps": 25, "batch_size": 32},
        "schedule": {"kind": "cosine", "warmup": 5, "final": 0.0},
        "optimizers": [
            {"name": "sgdm", "lrs": [0.03, 0.1]},
            {"name": "ada2ms", "label": "ada2ms-05", "lrs": [1e-3, 3e-3],
             "hparams": {"alpha": 0.5, "weight_decay": 0.01}},
        ],
    }  # fmt: skip
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, started as run_sweep's own LocalCluster is."""
    with local_cluster(2) as cl:
        yield cl


def _without_run_columns(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=RUN_COLUMNS)


# -- config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda c: c.update(colour="red"), "colour"),
        (lambda c: c.update(seeds=[]), "seeds"),
        (lambda c: c.update(seeds=[0, "1"]), "seeds[1]"),
        (lambda c: c["budget"].update(steps=10.5), "budget.steps"),
        (lambda c: c["budget"].update(stepz=10), "budget.stepz"),
        (lambda c: c["budget"].update(batch_size=100_000), "budget.batch_size"),
        (lambda c: c["optimizers"][1].update(name="adamx"), "optimizers[1].name"),
        (lambda c: c["optimizers"][0].update(lrs=[]), "optimizers[0].lrs"),
        (lambda c: c["optimizers"][0].update(lrs=[0.1, -1.0]), "optimizers[0].lrs[1]"),
        (lambda c: c["optimizers"][0].update(lrs=[0.1, 0.1]), "optimizers[0].lrs"),
        (lambda c: c["optimizers"][0].update(lr=0.1), "optimizers[0].lr"),
        (lambda c: c["optimizers"][1]["hparams"].update(alpha=2.0), "optimizers[1].hparams"),
        (
            lambda c: c["optimizers"][1]["hparams"].update(alpha={"tau": 3}),
            "optimizers[1].hparams.alpha",
        ),
        (lambda c: c["optimizers"][0].update(label="ada2ms-05"), "optimizers[1].label"),
        (lambda c: c["task"].update(name="mnist"), "task.name"),
        (lambda c: c["task"]["args"].update(hiden=[4]), "task.args.hiden"),
        (lambda c: c["task"]["args"].update(model="rnn"), "task.args"),
        (lambda c: c["schedule"].update(warmup=25), "schedule.warmup"),
        (lambda c: c["schedule"].update(kind="step"), "schedule.kind"),
        (lambda c: c.update(measurements=["sharpness"]), "measurements[0]"),
        (lambda c: c.update(selection="test_loss"), "selection"),
        (lambda c: c.update(optimizers=[]), "optimizers"),
    ],
)
def test_a_malformed_config_is_rejected_naming_the_key(change, key):
    cfg = tiny()
    change(cfg)
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert err.value.key == key
    assert str(err.value).startswith(f"{key}: ")


def test_a_bad_config_file_fails_the_cli_before_anything_runs(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'seeds = [0]\n[task]\nname = "digits"\n[budget]\nsteps = 5\n'
        '[[optimizers]]\nname = "adamw"\nlr_grid = { min = 1e-3, max = 1e-2, num = 0 }\n'
    )
    out = tmp_path / "out"
    assert cli_main([str(bad), "--out", str(out), "--serial"]) == 2
    assert "optimizers[0].lrs: empty learning-rate grid" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "broken.toml").write_text("seeds = [0\n")
    assert cli_main([str(tmp_path / "broken.toml"), "--out", str(out)]) == 2
    assert cli_main([str(tmp_path / "missing.toml"), "--out", str(out)]) == 2
    assert not out.exists()


def test_lr_grids_are_log_spaced_and_alpha_schedules_resolve():
    cfg = tiny()
    cfg["optimizers"][0] = {"name": "sgd", "lr_grid": {"min": 1e-3, "max": 1e-1, "num": 5}}
    cfg["optimizers"][1]["hparams"]["alpha"] = {"final": 0.0, "within": 0.01}
    config = load_config(cfg)
    np.testing.assert_allclose(config.optimizers[0]["lrs"], np.geomspace(1e-3, 1e-1, 5), 1e-6)
    assert len(config.trials()) == (5 + 2) * 2
    assert len({t.key for t in config.trials()}) == len(config.trials())


def test_the_shipped_configs_are_valid():
    quick = load_config(ROOT / "data" / "sweeps" / "digits_quick.toml")
    full = load_config(ROOT / "data" / "sweeps" / "digits_protocol.toml")
    assert {o["name"] for o in quick.optimizers} == {"sgdm", "adamw", "adamnx", "ada2ms"}
    assert all(len(o["lrs"]) == 2 for o in quick.optimizers) and len(quick.seeds) == 2
    assert len(full.trials()) > len(quick.trials())


# -- a trial ------------------------------------------------------------------------------------------
def test_a_trial_row_is_the_training_run_it_describes(tmp_path):
    """The row of a trial equals an independent call of training.train with the same
    settings (on one thread, as trials run)."""
    import torch

    result = run_sweep(tiny(), tmp_path / "out", serial=True, progress=False)
    row = result.trials.iloc[5]  # ada2ms-05, lr 1e-3, seed 1
    assert (row["label"], row["lr"], row["seed"]) == ("ada2ms-05", 1e-3, 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = training.train(
            tasks.digits(model="mlp", hidden=[16]), "ada2ms", 25, batch_size=32, lr=1e-3,
            lr_schedule=training.cosine_schedule(25, warmup=5, final=0.0), seed=1,
            progress=False, alpha=0.5, weight_decay=0.01,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    for split in ("train", "val", "test"):
        ref = run.evaluate(split)
        assert row[f"{split}_loss"] == ref["loss"]
        assert row[f"{split}_accuracy"] == ref["accuracy"]
    assert row["status"] == "ok" and row["steps_taken"] == 25
    stored = (tmp_path / "out" / "config.json").read_text()
    assert stored == canonical_json(load_config(tiny()).data)


@pytest.mark.slow  # builds MNIST-1D from its generator (about 3 s)
def test_an_mnist1d_trial_is_the_training_run_it_describes(tmp_path):
    """A config may name MNIST-1D; its row is the run of tasks.mnist1d with its arguments."""
    import torch

    config = {
        "name": "m1d", "seeds": [0], "task": {"name": "mnist1d", "args": {"model": "cnn"}},
        "budget": {"steps": 30, "batch_size": 100},
        "optimizers": [{"name": "sgdm", "lrs": [0.05]}],
    }  # fmt: skip
    row = run_sweep(config, tmp_path / "out", serial=True, progress=False).trials.iloc[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = training.train(
            tasks.mnist1d("cnn"), "sgdm", 30, batch_size=100, lr=0.05, seed=0, progress=False
        )
    finally:
        torch.set_num_threads(threads)
    assert row["status"] == "ok"
    assert row["test_accuracy"] == run.evaluate("test")["accuracy"]
    with pytest.raises(ConfigError, match=r"task\.args\.width"):
        load_config({**config, "task": {"name": "mnist1d", "args": {"width": 3}}})


# -- serial vs Dask -------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_local_cluster_sweep_gives_the_serial_table(tmp_path):
    serial = run_sweep(tiny(), tmp_path / "serial", serial=True, progress=False)
    dask = run_sweep(tiny(), tmp_path / "dask", workers=2, progress=False)  # its own cluster
    assert dask.ran == serial.ran == 8
    assert all(w.startswith("tcp://") for w in dask.trials["worker"])
    assert set(serial.trials["worker"]) == {"serial"}
    # numerically exact, column by column, apart from where and how long each trial ran
    pd.testing.assert_frame_equal(
        _without_run_columns(serial.trials), _without_run_columns(dask.trials), check_exact=True
    )
    pd.testing.assert_frame_equal(serial.summary, dask.summary, check_exact=True)
    assert (tmp_path / "serial" / "summary.csv").read_bytes() == (
        tmp_path / "dask" / "summary.csv"
    ).read_bytes()


# -- faults and resume ------------------------------------------------------------------------------
def test_errors_and_divergence_are_recorded_and_the_rest_finish(tmp_path, cluster, monkeypatch):
    def picky(model, task):  # a probe that fails on a model that learned little
        acc = task.evaluate(model, "val")["accuracy"]
        if acc < 0.5:
            raise RuntimeError(f"accuracy {acc:.2f} is too low to probe")
        return {"val_acc_again": acc}

    monkeypatch.setitem(MEASUREMENTS, "picky", picky)
    cfg = tiny(measurements=["picky"])
    cfg["optimizers"] = [
        {"name": "sgd", "lrs": [1e-5, 1e4]},  # learns nothing / diverges
        {"name": "adam", "lrs": [1e-2]},
    ]
    # the cluster found through DASK_SCHEDULER_ADDRESS, as on a remote deployment
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    result = run_sweep(cfg, tmp_path / "out", progress=False)
    assert set(result.trials["worker"]) <= set(cluster.scheduler_info["workers"])
    t = result.trials.set_index(["optimizer", "lr", "seed"])
    for seed in (0, 1):
        assert t.loc[("sgd", 1e-5, seed), "status"] == "error"
        assert "too low to probe" in t.loc[("sgd", 1e-5, seed), "message"]
        assert t.loc[("sgd", 1e4, seed), "status"] == "diverged"
        assert t.loc[("sgd", 1e4, seed), "steps_taken"] < 25
        assert math.isnan(t.loc[("sgd", 1e4, seed), "test_loss"])
        assert t.loc[("adam", 1e-2, seed), "status"] == "ok"
        assert (
            t.loc[("adam", 1e-2, seed), "val_acc_again"]
            == t.loc[("adam", 1e-2, seed), "val_accuracy"]
        )
    s = result.summary.set_index("label")
    assert s.loc["sgd", "status"] == "every lr failed" and math.isnan(s.loc["sgd", "lr"])
    assert s.loc["adam", "lr"] == 1e-2 and s.loc["adam", "seeds"] == 2


def test_an_interrupted_sweep_resumes_with_the_missing_trials_only(tmp_path, monkeypatch):
    calls = []

    def interrupt_on_third(model, task):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as Ctrl-C in the middle of the third trial
        return {}

    monkeypatch.setitem(MEASUREMENTS, "probe", interrupt_on_third)
    cfg = tiny(measurements=["probe"])
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, out, serial=True, progress=False)
    first = read_trials(out)
    assert len(first) == 2 and set(first["status"]) == {"ok"}
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "trials.csv"]  # no debris

    # a different config into the same folder is refused before anything runs
    other = tiny(measurements=["probe"], budget={"steps": 26, "batch_size": 32})
    with pytest.raises(ValueError, match=r"different configuration .*budget"):
        run_sweep(other, out, serial=True, progress=False)
    pd.testing.assert_frame_equal(read_trials(out), first)

    resumed = run_sweep(cfg, out, serial=True, progress=False)
    assert (resumed.ran, resumed.skipped) == (6, 2)
    assert len(calls) == 3 + 6
    pd.testing.assert_frame_equal(resumed.trials.iloc[:2], first, check_exact=True)
    again = run_sweep(cfg, out, serial=True, progress=False)
    assert (again.ran, again.skipped) == (0, 8)
    full = run_sweep(cfg, tmp_path / "uninterrupted", serial=True, progress=False)
    pd.testing.assert_frame_equal(
        _without_run_columns(full.trials), _without_run_columns(resumed.trials), check_exact=True
    )


def test_a_sweep_is_extended_by_a_config_holding_all_its_trials(tmp_path):
    out = tmp_path / "out"
    small = tiny(seeds=[0])
    small["optimizers"] = small["optimizers"][:1]
    first = run_sweep(small, out, serial=True, progress=False)
    assert (first.ran, first.skipped) == (2, 0)
    # more seeds, another optimizer: only the new trials run, and config.json is the new one
    bigger = run_sweep(tiny(), out, serial=True, progress=False)
    assert (bigger.ran, bigger.skipped) == (6, 2)
    assert (out / "config.json").read_text() == load_config(tiny()).canonical()
    pd.testing.assert_frame_equal(
        bigger.trials[bigger.trials["key"].isin(first.trials["key"])].reset_index(drop=True),
        first.trials,
        check_exact=True,
    )
    whole = run_sweep(tiny(), tmp_path / "whole", serial=True, progress=False)
    pd.testing.assert_frame_equal(
        _without_run_columns(whole.trials), _without_run_columns(bigger.trials), check_exact=True
    )
    # the smaller config is not an extension of the bigger one: refused
    with pytest.raises(ValueError, match="different configuration"):
        run_sweep(small, out, serial=True, progress=False)


@pytest.mark.slow
def test_workers_are_forked_only_when_no_other_dask_runs_here(tmp_path, cluster):
    """Forking while another thread runs can hang a worker on a copied lock: with the module's
    cluster alive (or any other thread, as a test runner's I/O thread), the sweep's own
    LocalCluster starts its workers from a forkserver, and gives the serial table."""
    from analysis_lib.cluster import start_method

    def method(code: str = "") -> str:
        code += "from analysis_lib.cluster import start_method as m; print(m())"
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout.strip()

    assert method() == ("fork" if sys.platform == "linux" else "spawn")
    threaded = "import threading, time; threading.Thread(target=time.sleep, args=(30,), daemon=True).start(); "
    assert method(threaded) == ("forkserver" if sys.platform == "linux" else "spawn")
    if sys.platform == "linux":
        assert start_method() == "forkserver"
    cfg = tiny(seeds=[0])
    serial = run_sweep(cfg, tmp_path / "serial", serial=True, progress=False)
    beside = run_sweep(cfg, tmp_path / "beside", workers=2, progress=False)
    pd.testing.assert_frame_equal(
        _without_run_columns(beside.trials), _without_run_columns(serial.trials), check_exact=True
    )


def test_errors_are_retried_on_resume(tmp_path, monkeypatch):
    state = {"fail": True}

    def flaky(model, task):
        if state["fail"]:
            raise OSError("lost the scratch disk")
        return {}

    monkeypatch.setitem(MEASUREMENTS, "flaky", flaky)
    cfg = tiny(measurements=["flaky"], seeds=[0])
    cfg["optimizers"] = cfg["optimizers"][:1]
    first = run_sweep(cfg, tmp_path, serial=True, progress=False)
    assert set(first.trials["status"]) == {"error"}
    assert first.trials["message"].str.contains("OSError: lost the scratch disk").all()
    state["fail"] = False
    second = run_sweep(cfg, tmp_path, serial=True, progress=False)
    assert second.ran == 2 and set(second.trials["status"]) == {"ok"}


# -- the summary ----------------------------------------------------------------------------------
def test_summary_chooses_lr_on_validation_and_reports_a_t_interval_on_test():
    rng = np.random.default_rng(0)
    rows = []
    for lr, val, status in [(0.01, 0.5, "ok"), (0.1, 0.3, "ok"), (1.0, 0.1, "diverged")]:
        for seed in range(3):
            bad = status != "ok" and seed == 2  # one lucky-seed failure makes lr 1.0 the worst
            rows.append(
                {"label": "opt", "optimizer": "sgd", "hparams": "{}", "lr": lr, "seed": seed,
                 "status": "diverged" if bad else "ok",
                 "val_loss": val + 0.01 * seed, "val_accuracy": 1 - val,
                 "test_loss": np.nan if bad else rng.normal(val, 0.05),
                 "test_accuracy": np.nan if bad else rng.uniform(0.8, 0.9)}
            )  # fmt: skip
    trials = pd.DataFrame(rows)
    s = summarize(trials, "val_loss", seeds=3).iloc[0]
    assert s["lr"] == 0.1 and s["seeds"] == 3 and s["failed_trials"] == 1
    chosen = trials[trials["lr"] == 0.1]["test_accuracy"].to_numpy()
    lo, hi = stats.t.interval(0.95, 2, loc=chosen.mean(), scale=stats.sem(chosen))
    assert s["test_accuracy_mean"] == pytest.approx(chosen.mean(), rel=1e-12)
    assert (s["test_accuracy_low"], s["test_accuracy_high"]) == pytest.approx((lo, hi), 1e-12)
    # a missing seed also disqualifies an lr
    assert summarize(trials[trials["seed"] < 2], "val_loss", seeds=3)["status"].iloc[0] == (
        "every lr failed"
    )


# -- a lost worker (last: the nanny restarts it cold) -------------------------------------------
@pytest.mark.slow
def test_a_killed_worker_loses_no_trial(tmp_path, cluster):
    cfg = tiny(seeds=[0, 1, 2])
    cfg["budget"]["steps"] = 150
    out = tmp_path / "out"
    killed: dict = {}
    with distributed.Client(cluster) as client:
        pids = client.run(os.getpid)  # worker address -> process id

        def killer():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                busy = {w: ks for w, ks in client.processing().items() if ks}
                done = set(read_trials(out)["key"]) if (out / "trials.csv").exists() else set()
                if busy and done:  # mid-sweep: some trials written, others running
                    addr, keys = next(iter(busy.items()))
                    killed.update(addr=addr, keys=set(keys), done=done)
                    os.kill(pids[addr], signal.SIGKILL)  # as the OOM killer would
                    return
                time.sleep(0.02)

        thread = threading.Thread(target=killer)
        thread.start()
        result = run_sweep(cfg, out, client=client, progress=False)
        thread.join()
        assert killed, "no worker was killed mid-sweep"
        client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests
        assert killed["addr"] not in client.scheduler_info()["workers"]
        assert killed["addr"] in pids
    table = result.trials
    assert len(table) == 12 and set(table["status"]) == {"ok"}
    rerun = {k.removeprefix("sweep-trial-") for k in killed["keys"]} - killed["done"]
    rows = table.set_index("key")
    assert all(rows.loc[k, "worker"] != killed["addr"] for k in rerun if k in rows.index)
    reference = run_sweep(cfg, tmp_path / "serial", serial=True, progress=False)
    pd.testing.assert_frame_equal(
        _without_run_columns(reference.trials), _without_run_columns(table), check_exact=True
    )


@pytest.mark.parametrize(
    "path", sorted((ROOT / "data" / "sweeps").glob("*.toml")), ids=lambda p: p.stem
)
def test_every_committed_config_is_valid(path):
    """Every config in data/sweeps/ (those not run here too, as the CIFAR-10 one) loads, names
    itself after its file and expands into trials with unique keys."""
    config = load_config(path, check_task=False)
    assert config.name == path.stem
    keys = [t.key for t in config.trials()]
    assert keys and len(set(keys)) == len(keys)
