"""Drawing only, by topic: the house style and saving (:mod:`.style`), one palette
(:mod:`.palette`), toy-problem trajectories (:mod:`.trajectories`), training curves and the
AdamW-to-SGD transition (:mod:`.training`), loss landscapes (:mod:`.landscapes`), curvature and
the edge of stability (:mod:`.curvature`), optimizer sweeps (:mod:`.sweeps`), flatness
(:mod:`.flatness`) and explorers that need no kernel (:mod:`.explorers`, Vega-Lite through
Altair). Everything is importable from ``analysis_lib.plots`` itself.

Importing the package applies the house style (:func:`set_style`). Typical notebook use::

    from analysis_lib import plots

    fig, ax = plt.subplots()
    ax.plot(steps, loss, color=plots.optimizer_color("adamw"), label="AdamW")
    plots.save(fig, "loss_adamw")  # figures/loss_adamw.png and figures/loss_adamw.pdf

The computations behind the figures live in the rest of the library; these functions take their
results (trajectories, landscape grids, curvature estimates, tidy frames) and draw them.
"""

from __future__ import annotations

from . import (
    curvature,
    explorers,
    flatness,
    landscapes,
    palette,
    style,
    sweeps,
    training,
    trajectories,
)
from .curvature import *  # noqa: F403
from .explorers import *  # noqa: F403
from .flatness import *  # noqa: F403
from .landscapes import *  # noqa: F403
from .palette import *  # noqa: F403
from .style import *  # noqa: F403
from .sweeps import *  # noqa: F403
from .training import *  # noqa: F403
from .trajectories import *  # noqa: F403

__all__ = sorted(
    {
        *curvature.__all__,
        *explorers.__all__,
        *flatness.__all__,
        *landscapes.__all__,
        *palette.__all__,
        *style.__all__,
        *sweeps.__all__,
        *trajectories.__all__,
        *training.__all__,
    }
)

set_style()  # noqa: F405
