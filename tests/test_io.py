"""analysis_lib.io: configuration keys, atomic checksummed .npz files and the cache."""

from __future__ import annotations

import hashlib
import io as stdio
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from analysis_lib import io


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "lrs": np.geomspace(1e-4, 1, 5),
        "points": rng.standard_normal((5, 2)),
        "diverged": np.array([False, True, False, False, True]),
        "steps": np.arange(5, dtype=np.int64),
        "names": np.array(["a", "bc"]),
    }


# -- keys -------------------------------------------------------------------------------------
def test_config_key_is_the_sha256_of_canonical_json():
    config = {"b": [1, 2.5], "a": {"y": None, "x": "s"}}
    expected = hashlib.sha256(b'{"a":{"x":"s","y":null},"b":[1,2.5]}').hexdigest()
    assert io.config_key(config) == expected[:16]
    assert io.config_key(config, length=64) == expected


def test_config_key_ignores_key_order_tuples_and_numpy_scalars():
    a = {"steps": 100, "grid": (0.1, 0.01), "problem": {"name": "q", "kappa": 20.0}}
    b = {
        "problem": {"kappa": np.float64(20.0), "name": "q"},
        "grid": [0.1, 0.01],
        "steps": np.int64(100),
    }
    assert io.config_key(a) == io.config_key(b)
    assert io.config_key(a) != io.config_key({**a, "steps": 101})
    assert io.config_key(a) != io.config_key({**a, "grid": [0.1, 0.010000000000000002]})


@pytest.mark.parametrize(
    "bad", [{"x": float("nan")}, {"x": lambda t: t}, {"x": object()}, {1: "non-string key"}]
)
def test_config_without_a_json_form_is_rejected(bad):
    with pytest.raises(ValueError, match="config"):
        io.config_key(bad)


def test_config_must_be_a_dict():
    with pytest.raises(ValueError, match="config"):
        io.config_key([1, 2])


# -- files ------------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    arrays = sample_arrays()
    meta = {"problem": "rosenbrock", "grid": [0.1, 1.0]}
    path = io.save_arrays(tmp_path / "x.npz", arrays, meta)
    loaded, loaded_meta = io.load_arrays(path)
    assert loaded_meta == meta
    assert set(loaded) == set(arrays)
    for k, v in arrays.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape
        np.testing.assert_array_equal(loaded[k], v)
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]  # no temporary file left


def test_object_arrays_and_bad_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="arrays"):
        io.save_arrays(tmp_path / "x.npz", {"a": np.array([{"k": 1}], dtype=object)})
    with pytest.raises(ValueError, match="arrays key"):
        io.save_arrays(tmp_path / "x.npz", {"__meta__": np.zeros(2)})
    assert not (tmp_path / "x.npz").exists()


def test_missing_file_is_not_corruption(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.load_arrays(tmp_path / "nothing.npz")


def test_truncated_file_is_detected(tmp_path):
    path = io.save_arrays(tmp_path / "x.npz", sample_arrays(), {"a": 1})
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 10):
        path.write_bytes(data[:cut])
        with pytest.raises(io.CacheCorruptError):
            io.load_arrays(path)


def test_garbage_is_detected(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"not a zip file at all" * 10)
    with pytest.raises(io.CacheCorruptError):
        io.load_arrays(path)


def test_content_that_does_not_match_its_checksum_is_detected(tmp_path):
    """A well-formed archive whose array was changed after the checksum was taken."""
    path = io.save_arrays(tmp_path / "x.npz", sample_arrays(), {"a": 1})
    with np.load(path, allow_pickle=False) as npz:
        stored = {k: npz[k] for k in npz.files}
    stored["points"] = stored["points"] + 1e-12
    buf = stdio.BytesIO()
    np.savez(buf, **stored)
    path.write_bytes(buf.getvalue())
    with pytest.raises(io.CacheCorruptError, match="checksum"):
        io.load_arrays(path)


def test_file_without_checksum_or_with_a_pickled_array_is_corrupt(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(io.CacheCorruptError):
        io.load_arrays(path)
    pickled = tmp_path / "pickled.npz"
    np.savez(
        pickled,
        a=np.array([{"x": 1}], dtype=object),
        __meta__=np.array("{}"),
        __checksum__=np.array("0"),
    )
    with pytest.raises(io.CacheCorruptError):
        io.load_arrays(pickled)


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = io.save_arrays(tmp_path / "x.npz", {"a": np.zeros(3)}, {"v": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        io.save_arrays(path, {"a": np.ones(3)}, {"v": 2})
    monkeypatch.undo()
    arrays, meta = io.load_arrays(path)
    assert meta == {"v": 1} and (arrays["a"] == 0).all()
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]


# -- the folder and the cache -----------------------------------------------------------------
def test_data_dir_default_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv(io.DATA_ENV_VAR, raising=False)
    default = io.data_dir()
    assert default.parts[-2:] == ("data", "cache")
    assert (default.parent.parent / "pyproject.toml").is_file()
    monkeypatch.setenv(io.DATA_ENV_VAR, str(tmp_path / "elsewhere"))
    assert io.data_dir() == tmp_path / "elsewhere" and (tmp_path / "elsewhere").is_dir()
    monkeypatch.setenv(io.DATA_ENV_VAR, "build/test-data-io")
    assert io.data_dir() == default.parent.parent / "build" / "test-data-io"


def counting(result):
    calls = []

    def compute():
        calls.append(1)
        return result

    return compute, calls


def test_cached_computes_once_and_hits_return_identical_arrays(cache_dir):
    arrays = sample_arrays()
    compute, calls = counting(arrays)
    config = {"problem": "quadratic", "steps": 10}
    first = io.cached("demo", config, compute)
    second = io.cached("demo", dict(reversed(config.items())), compute)
    assert len(calls) == 1
    for k, v in arrays.items():
        np.testing.assert_array_equal(first[k], v)
        np.testing.assert_array_equal(second[k], v)
        assert second[k].dtype == v.dtype
    assert io.cache_path("demo", config).is_file()
    io.cached("demo", {**config, "steps": 11}, compute)
    assert len(calls) == 2


def test_cached_detects_corruption_warns_and_recomputes(cache_dir):
    config = {"k": 1}
    compute, calls = counting({"a": np.arange(4.0)})
    io.cached("demo", config, compute)
    path = io.cache_path("demo", config)
    path.write_bytes(path.read_bytes()[:-40])  # truncated
    with pytest.warns(RuntimeWarning, match="corrupt"):
        again = io.cached("demo", config, compute)
    assert len(calls) == 2
    np.testing.assert_array_equal(again["a"], np.arange(4.0))
    arrays, meta = io.load_arrays(path)  # rewritten, intact
    assert meta["config"] == config and (arrays["a"] == np.arange(4.0)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        io.cached("demo", config, compute)  # a clean hit now
    assert len(calls) == 2


def test_cached_never_trusts_an_entry_for_another_configuration(cache_dir):
    config = {"k": 1}
    path = io.cache_path("demo", config)
    io.save_arrays(path, {"a": np.zeros(2)}, {"name": "demo", "config": {"k": 2}})
    compute, calls = counting({"a": np.ones(2)})
    with pytest.warns(RuntimeWarning, match="another configuration"):
        out = io.cached("demo", config, compute)
    assert len(calls) == 1 and (out["a"] == 1).all()


def test_cached_rejects_bad_names_before_computing(cache_dir):
    compute, calls = counting({"a": np.zeros(1)})
    with pytest.raises(ValueError, match="name"):
        io.cached("../escape", {"k": 1}, compute)
    assert not calls
    assert not Path(cache_dir).exists() or not any(Path(cache_dir).iterdir())


def test_metadata_is_json_inside_the_file(tmp_path):
    path = io.save_arrays(tmp_path / "x.npz", {"a": np.zeros(1)}, {"note": "ü"})
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["__meta__"][()]))
    assert meta["meta"] == {"note": "ü"}


def test_a_data_folder_that_is_a_file_is_named(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"x")
    monkeypatch.setenv(io.DATA_ENV_VAR, str(blocker))
    calls = []
    with pytest.raises(ValueError, match=rf"data folder {blocker}.*{io.DATA_ENV_VAR}"):
        io.cached("demo", {"k": 1}, lambda: calls.append(1) or {"a": np.arange(2)})
    assert not calls and blocker.read_bytes() == b"x"
