"""The sweep's output folder as the one source of truth: one sweep at a time, and every row of
``trials.csv`` checked whole before it counts. This module owns the folder's files: the lock,
writing ``trials.csv`` (:func:`write_trials`) and reading it back checked
(:func:`read_trials`, :func:`read_trials_file`) against the configuration kept in
``config.json`` (:func:`stored_config`).

**The lock.** A sweep holds an exclusive ``fcntl.flock`` on ``OUT/.sweep.lock`` for as long as
it runs (checking the folder, reading ``trials.csv``, running, writing the summary). A second
sweep into the same folder, in this process or another, is refused at once with a
:class:`~analysis_lib.sweep.ConfigError` naming the folder (exit 2 in the CLI); nothing is
merged. The kernel drops the lock when its process dies, so a sweep killed with SIGKILL (or a
lost machine) never leaves the folder locked; the file itself is removed when a sweep ends
normally. (``flock`` is advisory and local: it holds between processes of one machine and on
most network file systems that support it; it is not taken on systems without ``fcntl``.)

**The rows.** Each row of ``trials.csv`` ends with a ``checksum`` column: the first 16 hex
digits of the SHA-256 of the header and the row's other fields exactly as written. A row read
back (:func:`read_trials_file`) must have every field (no more), its checksum, parseable
values (a known status, numbers where numbers go, the metrics of an ``ok`` row), a key unique
in the file and, where the sweep's configuration is known, a key that is one of its trials with
the configuration columns of that trial. A row that fails any check is never counted: the file
is refused with a ``ConfigError`` naming the file and the line (delete the line to have its
trial run again). So is a file that is not UTF-8, not CSV, empty or without the columns of a
trials table. ``trials.csv`` is always rewritten whole and atomically, so a crash never leaves a
row cut short: a bad row means the file was edited, merged by hand or damaged.

Files written before the checksum column existed are read with every check but the checksum (a
number cut short cannot be detected in them); they gain checksums when a sweep next rewrites
them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Mapping
from io import StringIO
from pathlib import Path

import pandas as pd

from ..io import write_atomically
from .config import ConfigError, SweepConfig
from .trial import (
    BASE_COLUMNS,
    CONFIG_COLUMNS,
    JSON_COLUMNS,
    METRICS,
    STATUSES,
    TAIL_COLUMNS,
    Trial,
)

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock
    fcntl = None

__all__ = [
    "CHECKSUM_COLUMN",
    "CONFIG_FILE",
    "LOCK_FILE",
    "SUMMARY_FILE",
    "TRIALS_FILE",
    "SweepFolder",
    "read_trials",
    "read_trials_file",
    "stored_config",
    "trials_csv",
    "write_trials",
]

CONFIG_FILE, TRIALS_FILE, SUMMARY_FILE = "config.json", "trials.csv", "summary.csv"
LOCK_FILE = ".sweep.lock"
CHECKSUM_COLUMN = "checksum"
_TEXT_DTYPES = {"key": str, "message": str, "worker": str, "version": str}


# -- the lock -------------------------------------------------------------------------------------
class SweepFolder:
    """The output folder of a running sweep, as a context manager: checks that ``out`` is (or
    can be made) a folder whose sweep files are files, creates it, and holds its lock until the
    block ends. A folder it created is removed again if the block fails while it is empty."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.created = False
        self._fd: int | None = None

    def __enter__(self) -> SweepFolder:
        out = self.out
        if out.exists() and not out.is_dir():
            raise ConfigError(str(out), "the output folder is a file, not a folder")
        self.created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self.created = False
            raise ConfigError(
                str(out), f"the output folder cannot be created ({_why(e)}); choose another one"
            ) from None
        try:
            for name in (CONFIG_FILE, TRIALS_FILE, SUMMARY_FILE, LOCK_FILE):
                path = out / name
                if path.exists() and not path.is_file():
                    raise ConfigError(
                        str(path), "is a folder (or another non-file), where the sweep keeps a file"
                    )
            self._lock()
        except BaseException:
            self._remove_if_created()
            raise
        return self

    def __exit__(self, kind, value, tb) -> None:
        self._unlock()
        if kind is not None:
            self._remove_if_created()

    def _remove_if_created(self) -> None:
        if self.created:
            try:
                self.out.rmdir()  # only when empty: nothing was written
            except OSError:
                pass

    def _lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        path = self.out / LOCK_FILE
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise ConfigError(
                    str(self.out),
                    f"cannot create a file in the output folder ({_why(e)}); is it read-only?",
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise ConfigError(
                    str(self.out),
                    f"another sweep is running in this folder{holder} (it holds "
                    f"{LOCK_FILE}); one sweep per folder at a time: wait for it to end, or "
                    "choose another output folder",
                ) from None
            except OSError as e:
                os.close(fd)
                raise ConfigError(
                    str(self.out), f"cannot lock the output folder ({_why(e)})"
                ) from None
            # the sweep that held it may have removed the file just before we locked it
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _unlock(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            path = self.out / LOCK_FILE
            try:
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    path.unlink()  # while locked: whoever opens it next sees another file
            except OSError:
                pass
        finally:
            os.close(fd)  # releases the lock


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (process {text})" if text.isdigit() else ""


def _why(e: OSError) -> str:
    return f"{type(e).__name__}: {e.strerror or e}"


# -- writing --------------------------------------------------------------------------------------
def row_checksum(header: list[str], fields: list[str]) -> str:
    """16 hex digits of the SHA-256 of a row's fields (as written) under their column names.

    Args:
        header: the column names, as written.
        fields: the row's fields, as written (text).

    Returns:
        A 16-character lower-case hex string.

    Examples:
        >>> row_checksum(["a", "b"], ["1", "x"])
        '9d00ab01bc6a1906'
    """
    data = json.dumps([header, fields], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


def _columns(rows: list[dict]) -> list[str]:
    known = set(BASE_COLUMNS) | set(TAIL_COLUMNS)
    measured = sorted({k for r in rows for k in r} - known)
    return [*BASE_COLUMNS, *measured, *TAIL_COLUMNS]


def trials_csv(rows: list[dict]) -> bytes:
    """The bytes of ``trials.csv`` for ``rows``: pandas' CSV (floats as their shortest
    round-trip repr, NaN as an empty field) with a checksum column appended to every row.

    Args:
        rows: the trial rows (dicts, e.g. :meth:`Trial.row`); measurement columns missing from a
            row are left empty.

    Returns:
        The UTF-8 bytes of the table: the base columns, the measured columns in sorted order, the
        tail columns, then the checksum column.
    """
    text = pd.DataFrame(rows, columns=_columns(rows)).to_csv(index=False, lineterminator="\n")
    records = list(csv.reader(StringIO(text, newline="")))
    header = records[0]
    buf = StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*header, CHECKSUM_COLUMN])
    for fields in records[1:]:
        writer.writerow([*fields, row_checksum(header, fields)])
    return buf.getvalue().encode("utf-8")


# -- reading --------------------------------------------------------------------------------------
def _float(text: str, *, empty: bool = True) -> float:
    if text == "":
        if empty:
            return math.nan
        raise ValueError("empty")
    value = float(text)
    if text.strip() != text:
        raise ValueError(text)
    return value


def _int(text: str) -> int:
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def _check_fields(row: dict[str, str], measured: list[str]) -> None:
    """Raise ValueError (saying which column) unless every field of ``row`` parses."""

    def check(column: str, parse) -> object:
        try:
            return parse(row[column])
        except (ValueError, TypeError, json.JSONDecodeError):
            raise ValueError(f"{column} = {row[column]!r} is not valid") from None

    if not row["key"] or not all(c in "0123456789abcdef" for c in row["key"]):
        raise ValueError(f"key = {row['key']!r} is not a trial key")
    for column in ("label", "optimizer"):
        if not row[column]:
            raise ValueError(f"{column} is empty")
    if row["status"] not in STATUSES:
        raise ValueError(f"status = {row['status']!r} (expected one of {list(STATUSES)})")
    lr = check("lr", lambda s: _float(s, empty=False))
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr = {row['lr']!r} is not a learning rate")
    for column in ("seed", "steps", "steps_taken"):
        check(column, _int)
    check("batch_size", lambda s: None if s == "" else _int(s))
    for column in JSON_COLUMNS:
        if not isinstance(check(column, json.loads), dict):
            raise ValueError(f"{column} = {row[column]!r} is not a JSON table")
    for column in (*METRICS, *measured, "seconds"):
        check(column, _float)
    if row["status"] == "ok":
        for column in METRICS:
            if not math.isfinite(_float(row[column])):
                raise ValueError(f"{column} is missing or not finite in a row with status ok")
    if "target_reached" in row and row["target_reached"] not in ("True", "False", ""):
        raise ValueError(f"target_reached = {row['target_reached']!r} is not True or False")


def _parsed(column: str, text: str):
    """A configuration field of a row (one that parses) as the value its trial has."""
    if column in JSON_COLUMNS:
        return json.loads(text)
    if column == "lr":
        return float(text)
    if column in ("seed", "steps"):
        return int(text)
    if column == "batch_size":
        return None if text == "" else int(text)
    return text


def _configuration_matches(row: dict[str, str], trial: Trial) -> list[str]:
    """The configuration columns of ``row`` that differ from ``trial``'s (``row`` parses)."""
    wrong = [c for c in CONFIG_COLUMNS if _parsed(c, row[c]) != getattr(trial, c)]
    for column in ("target_train_loss", "anneal_steps"):  # budget keys only some trials have
        expected = getattr(trial, column)
        if expected is None:
            continue
        try:
            if float(row.get(column, "")) != expected:
                wrong.append(column)
        except ValueError:
            wrong.append(column)
    return wrong


def _decoded(path: Path) -> str:
    """The text of ``trials.csv``: readable, UTF-8 and not empty, else a ConfigError."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(name, f"cannot be read ({_why(e)})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            name, f"is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}): not a "
            "trials table of this library",
        ) from None  # fmt: skip
    if not text.strip():
        raise ConfigError(name, "is empty: not a trials table of this library")
    return text


def _records(name: str, text: str) -> list[tuple[int, list[str]]]:
    """``(first line, fields)`` of every CSV record of ``text``; a ConfigError naming the line
    where the CSV is not valid."""
    reader = csv.reader(StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    try:
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            records.append((start, fields))
    except csv.Error as e:
        raise ConfigError(name, f"line {start}: not valid CSV ({e})") from None
    return records


def _check_row(name, line, fields, columns, checksummed, measured, seen, trials) -> None:
    """One record of ``trials.csv`` checked whole (its fields, checksum, key and, when
    ``trials`` is given, its configuration); a ConfigError naming the file and the line."""
    where = f"line {line}"
    if len(fields) != len(columns) + checksummed:
        raise ConfigError(
            name,
            f"{where}: {len(fields)} fields where the header has {len(columns) + checksummed} "
            "(the row was cut short or run together with another); delete the line to run its "
            "trial again",
        )
    if checksummed and row_checksum(columns, fields[:-1]) != fields[-1]:
        raise ConfigError(
            name,
            f"{where}: the row does not match its checksum (it was changed or cut short "
            "after it was written); delete the line to run its trial again",
        )
    row = dict(zip(columns, fields, strict=False))
    try:
        _check_fields(row, measured)
    except ValueError as e:
        raise ConfigError(name, f"{where}: {e}; delete the line to run its trial again") from None
    key = row["key"]
    if key in seen:
        raise ConfigError(
            name,
            f"{where}: the trial {key} is already on line {seen[key]}; a trial has one row "
            "(delete the extra one)",
        )
    seen[key] = line
    if trials is None:
        return
    if key not in trials:
        raise ConfigError(
            name,
            f"{where}: key {key} is not a trial of the sweep's configuration ({CONFIG_FILE}); "
            "delete the line or choose another output folder",
        )
    wrong = _configuration_matches(row, trials[key])
    if wrong:
        raise ConfigError(
            name,
            f"{where}: its {', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not match "
            f"the trial of its key {key}; delete the line to run its trial again",
        )


def read_trials_file(path: str | os.PathLike, trials: Mapping[str, Trial] | None = None):
    """``trials.csv`` at ``path`` as a DataFrame, every row checked whole (see the module's
    docstring); ``trials`` (key -> trial of the sweep's configuration), when given, is what
    each row's key and configuration columns must match. Returns ``(frame, checksummed)``.

    Args:
        path: the ``trials.csv`` file.
        trials: a mapping ``key -> Trial`` the rows must match (None: no such check).

    Returns:
        A tuple ``(frame, checksummed)``: the DataFrame without the checksum column, and whether
        the file had one.

    Raises:
        ConfigError: the file cannot be read or is not a trials table, or a row is bad; the
            message names the file and, for a row, its line.
    """
    path = Path(path)
    name = str(path)
    text = _decoded(path)
    (_, header), *body = _records(name, text)
    checksummed = bool(header) and header[-1] == CHECKSUM_COLUMN
    columns = header[:-1] if checksummed else header
    missing = [c for c in (*BASE_COLUMNS, *TAIL_COLUMNS) if c not in columns]
    if missing or len(set(header)) != len(header):
        what = f"missing columns {missing}" if missing else "repeated column names"
        raise ConfigError(name, f"line 1: not the header of a trials table ({what})")
    measured = [c for c in columns if c not in BASE_COLUMNS and c not in TAIL_COLUMNS]
    measured = [c for c in measured if c not in ("target_train_loss", "target_reached")]
    seen: dict[str, int] = {}
    for line, fields in body:
        _check_row(name, line, fields, columns, checksummed, measured, seen, trials)
    frame = pd.read_csv(
        StringIO(text, newline=""), dtype=_TEXT_DTYPES, keep_default_na=False, na_values=[""]
    )
    if checksummed:
        frame = frame.drop(columns=[CHECKSUM_COLUMN])
    frame["message"] = frame["message"].fillna("")
    return frame, checksummed


def write_trials(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write ``trials.csv`` (:func:`trials_csv`) whole and atomically.

    Args:
        path: the file to write.
        rows: the trial rows, as for :func:`trials_csv`.

    Raises:
        OSError: the file cannot be written (the old file, if any, is left as it was).
    """
    write_atomically(Path(path), trials_csv(rows))


def stored_config(stored: str | os.PathLike) -> SweepConfig:
    """The configuration kept in a sweep folder's ``config.json`` (the normalised data a sweep
    wrote, taken as it is: its measurements need not be registered here).

    Args:
        stored: the path of ``config.json``.

    Returns:
        The :class:`SweepConfig` of the stored data.

    Raises:
        ConfigError: the file cannot be read or does not hold a sweep's configuration.
    """
    stored = Path(stored)
    try:
        data = json.loads(stored.read_bytes().decode("utf-8"))
        config = SweepConfig(data)
        config.trials()
    except OSError as e:
        raise ConfigError(
            str(stored), f"cannot be read ({type(e).__name__}: {e.strerror})"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(
            str(stored), f"is not the configuration of a sweep ({type(e).__name__}: {e})"
        ) from None
    return config


def read_trials(path: str | os.PathLike) -> pd.DataFrame:
    """``trials.csv`` (or a folder holding it) as a DataFrame. Floats are written with their
    shortest round-trip repr and pandas (>= 3) parses them back exactly.

    Every row is checked whole before it counts (see this module's docstring): all its fields,
    its checksum, a key found once and, when the folder's ``config.json`` is there, a key that
    is a trial of that configuration with that trial's configuration.

    Args:
        path: a ``trials.csv`` file, or the sweep folder that holds one.

    Returns:
        The trials DataFrame (one row per trial, without the checksum column; ``message`` is
        ``""`` where empty).

    Raises:
        ConfigError: the file (or the folder's ``config.json``) is unreadable or not what a
            sweep writes, or a row is bad; the message names the file and line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TRIALS_FILE
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(str(path), f"{what}: no trials table there")
    trials = None
    stored = path.parent / CONFIG_FILE
    if stored.is_file():
        trials = {t.key: t for t in stored_config(stored).trials()}
    return read_trials_file(path, trials)[0]
