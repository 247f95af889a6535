"""The native kernel's cache: a library planted or replaced in it is never loaded, a folder
that others may write (or that another user owns) is refused, and the cached file is named by
what it is built from. Every test uses its own cache folder under tmp_path."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess

import pytest

from analysis_lib.optim import _native

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")

PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen("%s", "w");
    if (f) { fputs("planted library ran", f); fclose(f); }
}
int ada2ms_square_sums_f32(void) { return 0; }
int ada2ms_square_sums_f64(void) { return 0; }
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache folder (not created yet) for this test, and a fresh set of loaded
    libraries."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("ANALYSIS_LIB_NATIVE_CACHE", str(folder))
    monkeypatch.delenv("ANALYSIS_LIB_NATIVE", raising=False)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(_native, "_loaded", {})
    monkeypatch.setattr(_native, "last_error", None)
    return folder


@pytest.fixture
def planted(tmp_path):
    """(a library whose constructor writes a marker file, the marker's path)."""
    marker = tmp_path / "marker"
    source = tmp_path / "planted.c"
    source.write_text(PLANTED % marker)
    library = tmp_path / "planted.so"
    subprocess.run(["cc", "-shared", "-fPIC", str(source), "-o", str(library)], check=True)
    return library, marker


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plant(library, at, *, record: bool) -> None:
    """Put ``library`` at ``at``, with a sidecar holding its hash when ``record``."""
    shutil.copyfile(library, at)
    if record:
        (at.parent / f"{at.name}.sha256").write_text(_sha256(library) + "\n")


def _assert_built_by_us(path) -> None:
    sidecar = path.with_name(path.name + ".sha256")
    assert sidecar.read_text().strip() == _sha256(path)
    for f in (path, sidecar):
        st = os.lstat(f)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077 == 0


@needs_cc
def test_the_cache_is_created_private_with_the_librarys_hash(cache):
    assert _native.library() is not None, _native.last_error
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    _assert_built_by_us(_native.library_path())


@needs_cc
@pytest.mark.parametrize("record", ["none", "forged", "its own"])
def test_a_library_planted_in_the_private_cache_is_rebuilt_not_loaded(cache, planted, record):
    library, marker = planted
    cache.mkdir(mode=0o700)
    path = _native.library_path()
    _plant(library, path, record=record != "none")
    if record == "forged":
        path.with_name(path.name + ".sha256").write_text("0" * 64 + "\n")
    if record == "its own":  # the planted file made group-writable: not private, not trusted
        os.chmod(path, 0o666)
    assert _native.library() is not None, _native.last_error
    assert not marker.exists()
    assert path.read_bytes() != library.read_bytes()
    _assert_built_by_us(path)


@needs_cc
def test_a_library_replaced_after_its_build_is_not_loaded(cache, planted, monkeypatch):
    library, marker = planted
    assert _native.library() is not None
    path = _native.library_path()
    path.unlink()
    shutil.copyfile(library, path)  # the sidecar still holds the real library's hash
    os.chmod(path, 0o600)
    monkeypatch.setattr(_native, "_loaded", {})  # as a new process would
    assert _native.library() is not None, _native.last_error
    assert not marker.exists()
    _assert_built_by_us(path)


@needs_cc
def test_a_link_at_the_librarys_path_is_not_followed(cache, planted, tmp_path):
    library, marker = planted
    cache.mkdir(mode=0o700)
    path = _native.library_path()
    path.symlink_to(library)
    (cache / f"{path.name}.sha256").write_text(_sha256(library) + "\n")
    assert _native.library() is not None, _native.last_error
    assert not marker.exists()
    assert not path.is_symlink()
    _assert_built_by_us(path)


@needs_cc
def test_garbage_in_the_cache_is_rebuilt(cache):
    cache.mkdir(mode=0o700)
    path = _native.library_path()
    path.write_bytes(b"not a library")
    assert _native.library() is not None, _native.last_error
    _assert_built_by_us(path)


@needs_cc
@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o1777])
def test_a_cache_folder_others_may_write_is_refused(cache, planted, mode):
    library, marker = planted
    cache.mkdir()
    os.chmod(cache, mode)
    path = _native.library_path()
    _plant(library, path, record=True)  # whoever can write the folder writes the record too
    os.chmod(path, 0o600)
    os.chmod(path.with_name(path.name + ".sha256"), 0o600)
    with pytest.warns(RuntimeWarning, match="writable by"):
        assert _native.library() is None
    assert not marker.exists()
    assert str(cache) in _native.last_error and "ANALYSIS_LIB_NATIVE_CACHE" in _native.last_error
    assert path.read_bytes() == library.read_bytes()  # nothing built there either
    assert not _native.square_sums_ema_([], [], 0.9)


@needs_cc
def test_a_cache_folder_of_another_user_is_refused(cache, planted, monkeypatch):
    library, marker = planted
    cache.mkdir(mode=0o700)
    path = _native.library_path()
    _plant(library, path, record=True)
    uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)  # as if another user owned the folder
    with pytest.warns(RuntimeWarning, match="owned by uid"):
        assert _native.library() is None
    assert not marker.exists()
    assert "owned by uid" in _native.last_error


def test_the_file_is_named_by_source_compiler_and_flags(cache, tmp_path, monkeypatch):
    base = _native.library_path()
    assert base.parent == cache
    source = tmp_path / "changed.c"
    source.write_bytes(_native.SOURCE.read_bytes() + b"\n/* changed */\n")
    with monkeypatch.context() as m:
        m.setattr(_native, "SOURCE", source)
        assert _native.library_path() != base
    with monkeypatch.context() as m:
        m.setattr(_native, "FLAGS", (*_native.FLAGS, "-g"))
        assert _native.library_path() != base
    # another compiler at another path, or the same path reporting another version
    fake = tmp_path / "bin" / "cc"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'fake cc 1.0'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    first = _native.library_path()
    assert first != base
    fake.write_text("#!/bin/sh\necho 'fake cc 2.0'\n")
    _native._compiler_identity.cache_clear()
    assert _native.library_path() != first
