"""Statistics of a study of optimizers and of the flatness of the minima they find: used by the
sweeps and the notebooks. One unit per module:

* :mod:`~analysis_lib.stats.rank`: does a sharpness measure order minima the way their
  generalisation gap does? :func:`kendall_tau` (Kendall's tau-b with a bootstrap percentile
  interval, a two-stage cluster bootstrap with ``clusters``), :func:`tau_table` (one row per
  measure) and :func:`granulated_kendall` (Jiang et al. (2020)'s granulated Kendall coefficient:
  for each varied axis, the mean tau over the groups of rows that differ only along that axis;
  ``psi`` the mean over the axes).
* :mod:`~analysis_lib.stats.gaps`: :func:`generalization_gaps`, the error gap (test error minus
  training error, the literature's "generalisation gap") and the loss gap (test loss minus
  training loss), side by side.
* :mod:`~analysis_lib.stats.compare`: :func:`t_interval`, :func:`paired_difference`,
  :func:`holm` and :func:`paired_comparisons` (differences over shared seeds compared as pairs,
  the t-interval of the per-seed differences, no variance floor, with Holm's step-down
  adjustment over a table); :func:`welch` (unpaired); :func:`detectable_difference` and
  :func:`binomial_detectable_difference` (the smallest true difference that the seeds or the
  size of the test set would detect with the stated power, printed beside every "no
  difference").
* :mod:`~analysis_lib.stats.claims`: :class:`Claim` (one claim of a paper: ``a`` better than,
  or not worse by more than a margin than, ``b`` on one value, higher or lower being better)
  and :func:`claims_table` (each claim tested on per-seed pairs: its effect, paired interval,
  one-sided p-values for and against it, Holm-adjusted over the table, the detectable
  differences, and the verdict "supported", "contradicted" or "not resolvable at this power").
* :mod:`~analysis_lib.stats.selection`: :func:`choose_lr`, the learning rate chosen on the
  validation split.

Every bootstrap is seeded: the same seed gives the same interval. The package sits at the bottom
layer of the library: it imports only NumPy, pandas, SciPy and :mod:`analysis_lib._checks`.

    from analysis_lib.stats import kendall_tau, tau_table

    res = kendall_tau(frame["worst_case"], frame["gap"], seed=0)
    res.tau, res.low, res.high, res.n
    tau_table(frame, ["worst_case", "lambda_max"], against="gap")   # one row per measure
    kendall_tau(frame["worst_case"], frame["gap"], clusters=frame["config"])  # seeds clustered
"""

from .claims import Claim, claims_table
from .compare import (
    PairedResult,
    binomial_detectable_difference,
    detectable_difference,
    holm,
    paired_comparisons,
    paired_difference,
    t_interval,
    welch,
)
from .gaps import generalization_gaps
from .rank import GranulatedResult, TauResult, granulated_kendall, kendall_tau, tau_table
from .selection import choose_lr

__all__ = [
    "Claim",
    "GranulatedResult",
    "PairedResult",
    "TauResult",
    "binomial_detectable_difference",
    "choose_lr",
    "claims_table",
    "detectable_difference",
    "generalization_gaps",
    "granulated_kendall",
    "holm",
    "kendall_tau",
    "paired_comparisons",
    "paired_difference",
    "t_interval",
    "tau_table",
    "welch",
]
