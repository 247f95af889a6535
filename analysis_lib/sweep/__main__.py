"""``python -m analysis_lib.sweep CONFIG.toml --out DIR [--scheduler ADDR [--timeout S]]
[--workers N] [--serial]``: run (or resume) a sweep and print its summary.

Exit status 0 when it ran; 2, with a message naming the file, folder or address at fault and
before anything has run, for a bad or unreadable config, an output folder that cannot be used
(not creatable, read-only, holding another sweep, a file where a sweep file goes, a damaged
``trials.csv``, another sweep running in it) or a scheduler that does not answer as Dask within
``--timeout`` seconds (default 10)."""

from __future__ import annotations

import argparse
import math
import sys

import pandas as pd


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the sweep and print its summary (see the module docstring).

    Args:
        argv: the arguments after the program name (None: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 when the sweep ran; 2 for a bad config, output folder, ``--workers``
        or scheduler (a ``ValueError`` or ``ConnectionError``), after printing the message to
        stderr; 1 for another ``OSError`` while it ran.

    Raises:
        SystemExit: from argparse, for bad or missing arguments and for ``--help``.
    """
    from .scheduler import DEFAULT_CONNECT_TIMEOUT

    parser = argparse.ArgumentParser(
        prog="python -m analysis_lib.sweep",
        description="Run an optimizer-comparison sweep (a TOML config) on Dask or serially.",
    )
    parser.add_argument("config", help="the sweep's TOML file (e.g. data/sweeps/digits_quick.toml)")
    parser.add_argument("--out", required=True, help="output folder (resumed when it exists)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        help="address of an existing Dask scheduler, e.g. tcp://host:8786 "
        "(default: $DASK_SCHEDULER_ADDRESS, else a LocalCluster)",
    )
    where.add_argument("--serial", action="store_true", help="run the trials here, one by one")
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_CONNECT_TIMEOUT,
        help="seconds to wait for the scheduler to accept the connection and answer Dask's "
        f"handshake (default {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--workers", type=int, help="LocalCluster worker processes (default: one per core)"
    )
    args = parser.parse_args(argv)

    from .config import ConfigError, load_config
    from .runner import run_sweep

    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"error in {args.config}: {e}", file=sys.stderr)
        return 2
    try:
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"Invalid --workers: {args.workers} (expected >= 1)")
        result = run_sweep(
            config,
            args.out,
            scheduler=args.scheduler,
            workers=args.workers,
            serial=args.serial,
            connect_timeout=args.timeout,
        )
    except (ValueError, ConnectionError) as e:  # ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a disk that filled up while the sweep ran
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(
        f"{result.ran} trials run, {result.skipped} already done; "
        f"results in {result.out}/trials.csv and summary.csv"
    )
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        cols = ["label", "lr", "seeds", "failed_trials", "test_accuracy_mean",
                "test_accuracy_low", "test_accuracy_high", "test_loss_mean", "status"]  # fmt: skip
        summary = result.summary
        print(summary[[c for c in cols if c in summary.columns]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
