"""Tests for analysis_lib.plots: figure saving, figures_dir, style and colours."""

from __future__ import annotations

import os

import matplotlib
import matplotlib.colors as mcolors
import numpy as np

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from analysis_lib import io, plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def fig_dir(tmp_path, monkeypatch):
    """A fresh figures folder, named by ANALYSIS_LIB_FIGURES."""
    folder = tmp_path / "figs"
    monkeypatch.setenv(plots.FIGURES_ENV_VAR, str(folder))
    return folder


def make_figure(image: bool = False):
    """A figure with lines, text, a legend (so fonts get embedded in the PDF), a suptitle and a
    colorbar (constrained layout needs a second pass to settle with one). With ``image``, the
    second panel is an ``imshow`` (an axes with a fixed aspect ratio) instead of a mesh."""
    figure, (ax, ax_map) = plt.subplots(1, 2)
    for name, color in plots.OPTIMIZER_COLORS.items():
        ax.plot([0, 1, 2], [1, len(name), 2], color=color, label=name)
    ax.set_title("loss")
    ax.set_xlabel("step")
    ax.legend()
    grid = [[0.0, 1.0], [2.0, 3.0]]
    mappable = ax_map.imshow(grid) if image else ax_map.pcolormesh(grid)
    figure.colorbar(mappable, ax=ax_map)
    figure.suptitle("AdamW vs SGD")
    return figure


@pytest.fixture
def fig():
    """A fresh figure from :func:`make_figure`, closed afterwards."""
    figure = make_figure()
    yield figure
    plt.close(figure)


def test_figures_dir_respects_env_and_is_created(fig_dir):
    assert not fig_dir.exists()
    assert plots.figures_dir() == fig_dir
    assert fig_dir.is_dir()


def test_figures_dir_default_is_project_figures(monkeypatch):
    monkeypatch.delenv(plots.FIGURES_ENV_VAR, raising=False)
    monkeypatch.delenv("QUICK", raising=False)
    folder = plots.figures_dir()
    assert folder.name == "figures"
    assert (folder.parent / "pyproject.toml").is_file()
    assert (folder.parent / "analysis_lib").is_dir()


@pytest.mark.parametrize("quick", ["1", "yes"])
def test_a_quick_run_never_writes_into_the_committed_figures(tmp_path, monkeypatch, quick):
    root = tmp_path / "root"
    monkeypatch.setattr(io, "project_root", lambda: root)
    monkeypatch.delenv(plots.FIGURES_ENV_VAR, raising=False)
    monkeypatch.setenv("QUICK", quick)
    assert plots.figures_dir() == root / "build" / "quick-figures"
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    saved = plots.save(fig, "quick_check", formats=("png",))
    assert [p.parent for p in saved] == [root / "build" / "quick-figures"]
    assert not (root / "figures").exists()
    monkeypatch.setenv("QUICK", "0")
    assert plots.figures_dir() == root / "figures"
    monkeypatch.setenv(plots.FIGURES_ENV_VAR, "elsewhere")  # the variable still wins
    monkeypatch.setenv("QUICK", "1")
    assert plots.figures_dir() == root / "elsewhere"


def test_figures_dir_relative_env_is_below_project_root(tmp_path, monkeypatch):
    # A relative value is taken from the project root, not from the working directory (a
    # notebook's kernel runs in notebooks/).
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setattr(io, "project_root", lambda: root)
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv(plots.FIGURES_ENV_VAR, "build/test-figures")
    assert plots.figures_dir() == root / "build" / "test-figures"
    assert (root / "build" / "test-figures").is_dir()


def test_figures_dir_without_project_root_uses_cwd(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "project_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(plots.FIGURES_ENV_VAR, raising=False)
    monkeypatch.delenv("QUICK", raising=False)
    assert plots.figures_dir() == tmp_path / "figures"
    assert (tmp_path / "figures").is_dir()


def test_save_writes_valid_png_and_pdf(fig_dir, fig):
    paths = plots.save(fig, "loss_curve-1")
    assert paths == [fig_dir / "loss_curve-1.png", fig_dir / "loss_curve-1.pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(PNG_MAGIC)
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    # The run-dependent metadata is gone.
    assert b"CreationDate" not in pdf
    assert b"ModDate" not in pdf
    assert matplotlib.__version__.encode() not in pdf
    assert b"Software" not in png
    assert matplotlib.__version__.encode() not in png


@pytest.mark.slow
def test_save_is_byte_identical_on_rerun(fig_dir, fig):
    # The same figure saved twice: PNG and PDF come out byte-identical (no dates, no version
    # strings, and the layout is settled before rendering). SVG is left out here: its clip-path
    # ids hash the clip box at full float precision, and another constrained-layout pass can move
    # it by ~1e-13, which changes the ids (not the drawing). See the rebuilt-figure test for SVG.
    first = [p.read_bytes() for p in plots.save(fig, "same")]
    second = [p.read_bytes() for p in plots.save(fig, "same")]
    assert first == second


@pytest.mark.slow
def test_save_of_a_rebuilt_figure_is_byte_identical(fig_dir):
    # What re-running a notebook does: build the figure again from scratch and save it.
    formats = ("png", "pdf", "svg")
    outputs = []
    for _ in range(2):
        figure = make_figure(image=True)
        outputs.append([p.read_bytes() for p in plots.save(figure, "rebuilt", formats=formats)])
        plt.close(figure)
    assert outputs[0] == outputs[1]


@pytest.mark.slow
def test_save_same_image_figure_twice(fig_dir):
    # With a fixed-aspect axes (imshow) under constrained layout, each layout pass can move
    # coordinates by ~1e-13. The PDF and SVG print 10 decimals, so the same figure object saved
    # a second time may differ in the last digit there; the PNG (whole pixels) does not. A
    # rebuilt figure (the notebook re-run case, test above) is byte-identical in every format.
    figure = make_figure(image=True)
    first = plots.save(figure, "image")
    png, pdf = (p.read_bytes() for p in first)
    second = plots.save(figure, "image")
    assert second[0].read_bytes() == png
    assert second[1].read_bytes().startswith(b"%PDF-")
    assert len(second[1].read_bytes()) == pytest.approx(len(pdf), abs=64)
    plt.close(figure)


def test_save_leaves_no_temporary_files(fig_dir, fig):
    plots.save(fig, "a")
    plots.save(fig, "a")  # overwriting, too
    assert sorted(p.name for p in fig_dir.iterdir()) == ["a.pdf", "a.png"]


def test_failed_render_leaves_old_file_and_no_temporary(fig_dir, fig):
    (old,) = plots.save(fig, "keep", formats=("png",))
    before = old.read_bytes()
    with pytest.raises(ValueError):
        plots.save(fig, "keep", formats=("png", "nosuchformat"))
    assert old.read_bytes() == before
    assert [p.name for p in fig_dir.iterdir()] == ["keep.png"]


def test_interrupted_write_leaves_old_file_and_no_temporary(fig_dir, fig, monkeypatch):
    (old,) = plots.save(fig, "keep", formats=("png",))
    before = old.read_bytes()

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        plots.save(fig, "keep", formats=("png",), dpi=50)
    assert old.read_bytes() == before
    assert [p.name for p in fig_dir.iterdir()] == ["keep.png"]


def test_save_keeps_the_layout_engine(fig_dir, fig):
    engine = fig.get_layout_engine()
    plots.save(fig, "engine", formats=("png",))
    assert fig.get_layout_engine() is engine


@pytest.mark.parametrize(
    "name", ["", "a/b", "../up", "x.png", "with space", "tab\t", "dot.", None, 3]
)
def test_save_rejects_bad_names(fig_dir, fig, name):
    with pytest.raises(ValueError, match="name"):
        plots.save(fig, name)
    assert not fig_dir.exists() or not any(fig_dir.iterdir())


def test_save_rejects_bad_formats(fig_dir, fig):
    with pytest.raises(ValueError, match="formats"):
        plots.save(fig, "ok", formats=("png", "../pdf"))


def test_set_style_is_idempotent():
    plots.set_style()
    first = dict(matplotlib.rcParams)
    plots.set_style()
    assert dict(matplotlib.rcParams) == first
    assert 150 <= matplotlib.rcParams["savefig.dpi"] <= 200
    assert matplotlib.rcParams["figure.constrained_layout.use"]
    assert not matplotlib.rcParams["axes.spines.top"]
    assert not matplotlib.rcParams["axes.spines.right"]


def test_optimizer_colors_are_fixed_and_distinct():
    expected = {"sgd", "sgdm", "adam", "adamw", "adamnx", "ada2ms"}
    assert set(plots.OPTIMIZER_COLORS) == expected
    assert len(set(plots.OPTIMIZER_COLORS.values())) == len(expected)
    for color in plots.OPTIMIZER_COLORS.values():
        assert matplotlib.colors.is_color_like(color)


def test_alpha_colors_one_sequential_scale_distinct_from_the_fixed_colours():
    alphas = np.linspace(0, 1, 11)
    colors = plots.alpha_colors(alphas)
    # sequential: lightness rises monotonically with alpha, and adjacent levels differ visibly
    gray = [0.299 * r + 0.587 * g + 0.114 * b for r, g, b, _ in colors]
    assert np.all(np.diff(gray) > 0.02), np.diff(gray)
    # none of Ada2MS's colours is mistaken for another optimizer's fixed colour
    for name in ("sgd", "sgdm", "adam", "adamw", "adamnx"):
        fixed = np.array(matplotlib.colors.to_rgb(plots.OPTIMIZER_COLORS[name]))
        dist = min(np.abs(np.array(c[:3]) - fixed).sum() for c in colors)
        assert dist > 0.25, (name, dist)
    assert plots.alpha_colors([1.0, 0.0]) == [colors[-1], colors[0]]
    assert plots.alpha_colors([]) == []


def test_optimizer_colors_are_the_registry_s():
    from analysis_lib.optim import OPTIMIZERS

    assert plots.OPTIMIZER_COLORS == {name: spec.color for name, spec in OPTIMIZERS.items()}
    # the registry's Ada2MS colour is the point of its alpha scale at the default alpha, 0.5
    ada2ms = matplotlib.colors.to_hex(plots.alpha_colors([0.5])[0])
    assert OPTIMIZERS["ada2ms"].color == ada2ms


def test_optimizer_color_is_the_one_palette():
    assert plots.optimizer_color("AdamW") == plots.OPTIMIZER_COLORS["adamw"]
    assert plots.optimizer_color("ada2ms") == plots.optimizer_color("ada2ms", 0.5)
    assert plots.optimizer_color("ada2ms", 0.0) == matplotlib.colors.to_hex(
        plots.alpha_colors([0.0])[0]
    )
    assert plots.optimizer_color("ada2ms", lambda step: 0.5) == plots.ADA2MS_SCHEDULE_COLOR


def _lightness(color) -> float:
    """CIELAB L* of an sRGB colour."""
    rgb = np.asarray(mcolors.to_rgb(color))
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    y = float(lin @ [0.2126, 0.7152, 0.0722])
    return 116 * np.cbrt(y) - 16 if y > 216 / 24389 else 24389 / 27 * y


def test_the_schedule_colour_stands_apart_from_every_alpha_and_optimizer():
    schedule = plots.ADA2MS_SCHEDULE_COLOR
    assert schedule not in plots.OPTIMIZER_COLORS.values()
    # alpha = 0 (the schedule's end point) is near-black: the schedule must not be
    assert abs(_lightness(schedule) - _lightness(plots.optimizer_color("ada2ms", 0.0))) > 25
    for alpha in np.linspace(0, 1, 11):
        assert plots.optimizer_color("ada2ms", float(alpha)) != schedule
    assert plots.optimizer_color("ada2ms", 0.0) != plots.optimizer_color("sgdm")
    assert plots.optimizer_style("adamw")["linestyle"] != plots.optimizer_style("adam")["linestyle"]
    with pytest.raises(ValueError, match="name"):
        plots.optimizer_color("lion")
    with pytest.raises(ValueError, match="alphas"):
        plots.optimizer_color("ada2ms", 1.5)


def test_alpha_colors_other_cmap_and_validation():
    viridis = plots.alpha_colors([0.0, 1.0], cmap="viridis")
    assert viridis[0] == pytest.approx(matplotlib.colormaps["viridis"](0.0))
    assert len(plots.alpha_colors([0.25], cmap="crest")) == 1
    for bad in ([1.5], [-0.1], [float("nan")]):
        with pytest.raises(ValueError, match="alphas"):
            plots.alpha_colors(bad)


def test_saved_paths_show_no_folders(fig_dir, fig):
    # A notebook cell ending in plots.save(...) must not put absolute paths into its outputs.
    paths = plots.save(fig, "shown")
    assert paths == [fig_dir / "shown.png", fig_dir / "shown.pdf"]
    assert repr(paths) == "SavedFigures(['shown.png', 'shown.pdf'])"
    assert str(fig_dir) not in repr(paths)
    pretty = pytest.importorskip("IPython.lib.pretty")
    assert pretty.pretty(paths) == repr(paths)


def test_loss_panel_limits_follow_the_runs_not_their_extremes():
    from analysis_lib import trajectory
    from analysis_lib.problems import toy

    bowl = toy.badly_scaled()
    fast = trajectory.run(bowl, "adam", 1000, lr=0.3)  # reaches rounding level early
    blowup = trajectory.run(bowl, "sgd", 1000, lr=0.05)  # diverges: lr > 2/100
    assert blowup.diverged and not fast.diverged
    ax = plots.draw_losses(bowl, {"Adam": fast, "SGD": blowup})
    start = max(fast.losses[0], blowup.losses[0])
    lo, hi = ax.get_ylim()
    assert hi <= start * 10**3 * 3.01  # a diverging run is not followed to 1e300
    assert lo >= start * 1e-16 / 3.01
    gap = fast.losses - bowl.min_value * bowl.scale
    visible_until = np.flatnonzero(gap > lo)[-1]
    assert ax.get_xlim()[1] < 0.8 * len(fast.losses)  # not out to step 1000
    assert ax.get_xlim()[1] >= visible_until
    plt.close(ax.figure)


def test_smoothed_losses_draw_a_band():
    from analysis_lib import trajectory
    from analysis_lib.problems import toy

    noisy = toy.rotated_quadratic().with_noise(0.3)
    run = trajectory.run(noisy, "sgd", 200, lr=0.1, seed=0)
    ax = plots.draw_losses(noisy, [run], smooth=20)
    (line,) = ax.get_lines()
    assert len(ax.collections) == 1  # the 10-90% band
    assert np.std(np.diff(line.get_ydata())) < np.std(np.diff(run.losses))
    with pytest.raises(ValueError, match="smooth"):
        plots.draw_losses(noisy, [run], smooth=0)
    plt.close("all")


# -- colours of a notebook's table of runs ---------------------------------------------------
def test_optimizer_colors_and_styles_of_labelled_configurations():
    runs = {
        "SGD": "sgd",
        "AdamW": ("adamw", {"lr": 1e-3}),
        "Ada2MS 0": ("ada2ms", {"alpha": 0.0}, [1e-3, 1e-2]),
        "Ada2MS schedule": ("ada2ms", {"alpha": lambda step: 0.5}),
    }
    colors = plots.optimizer_colors(runs)
    assert colors == {
        "SGD": plots.optimizer_color("sgd"),
        "AdamW": plots.optimizer_color("adamw"),
        "Ada2MS 0": plots.optimizer_color("ada2ms", 0.0),
        "Ada2MS schedule": plots.ADA2MS_SCHEDULE_COLOR,
    }
    styles = plots.optimizer_linestyles(runs)
    assert styles["SGD"] == "-" and styles["AdamW"] == plots.optimizer_style("adamw")["linestyle"]
    assert styles["Ada2MS schedule"] == "-."
    with pytest.raises(ValueError, match="configs"):
        plots.optimizer_colors({"x": 3})
    with pytest.raises(ValueError, match="name"):
        plots.optimizer_colors({"x": ("lion", {})})


# -- curvature and the edge of stability -----------------------------------------------------
def _density(nodes, weights):
    from types import SimpleNamespace

    nodes, weights = np.array([nodes], dtype=float), np.array([weights], dtype=float)
    return SimpleNamespace(nodes=nodes, weights=weights, grid=np.linspace(0, 1, 5), density=None)


def test_spectral_densities_are_smoothed_on_the_shared_grid():
    densities = {"SGD": _density([0.0, 2.0], [0.75, 0.25]), "AdamW": _density([1.0], [1.0])}
    colors = plots.optimizer_colors({"SGD": "sgd", "AdamW": "adamw"})
    grid, sigma = np.linspace(-1, 3, 81), 0.5
    fig = plots.plot_spectral_densities(densities, colors, grid=grid, sigma=sigma, title="t")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_ylim()[0] == pytest.approx(1e-6)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SGD", "AdamW"]
    sgd = ax.get_lines()[0]
    assert sgd.get_color() == colors["SGD"]

    def normal(x, mu):  # the Gaussian kernel, written out
        return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))

    np.testing.assert_allclose(sgd.get_ydata(), 0.75 * normal(grid, 0) + 0.25 * normal(grid, 2))
    assert ax.get_xlabel() == r"Hessian eigenvalue $\lambda$"
    with pytest.raises(ValueError, match="sigma"):
        plots.plot_spectral_densities(densities, colors, grid=grid)
    with pytest.raises(ValueError, match="densities"):
        plots.plot_spectral_densities({}, colors)
    plt.close("all")


def _curvature_frames():
    import pandas as pd

    labels = ["SGD+momentum", "AdamW", "Ada2MS α=0"]
    eigen = pd.DataFrame(
        [
            dict(optimizer=label, rank=r, eigenvalue=10.0 * (i + 1) / r, residual=1e-3)
            for i, label in enumerate(labels)
            for r in (1, 2, 3)
        ]
    )
    summary = pd.DataFrame(
        {
            "trace": [50.0, 80.0, 60.0],
            "trace_stderr": [1.0, 2.0, 1.5],
            "preconditioned_lambda_max": [np.nan, 0.02, 0.5],
            "threshold_adam": [np.nan, 38.0, 38.0],
        },
        index=pd.Index(labels, name="optimizer"),
    )
    colors = plots.optimizer_colors(
        {"SGD+momentum": "sgdm", "AdamW": "adamw", "Ada2MS α=0": ("ada2ms", {"alpha": 0.0})}
    )
    return eigen, summary, colors


def test_curvature_summary_panels():
    eigen, summary, colors = _curvature_frames()
    fig = plots.plot_curvature_summary(eigen, summary, colors, trace_title="Trace (Hutch++, 8)")
    ax, bx, cx = fig.axes
    assert ax.get_xlabel() == "rank $i$" and list(ax.get_xticks()) == [1, 2, 3]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(summary.index)
    # the traces: one row per run from the top, with two standard errors either side
    assert [t.get_text() for t in bx.get_yticklabels()] == list(summary.index)
    assert bx.yaxis_inverted() and "2" in bx.get_xlabel() and bx.get_title() == "Trace (Hutch++, 8)"
    bars = [c for c in bx.collections if len(c.get_segments()) == 1]
    (x0, _), (x1, _) = bars[1].get_segments()[0]
    assert (x0, x1) == pytest.approx((80.0 - 4.0, 80.0 + 4.0))
    # preconditioned sharpness: only the adaptive runs, as fractions of the threshold, log axis
    assert cx.get_xscale() == "log"
    assert [t.get_text() for t in cx.get_yticklabels()] == ["AdamW", "Ada2MS α=0"]
    widths = [p.get_width() for p in cx.patches]
    assert widths == pytest.approx([0.02 / 38, 0.5 / 38])
    plt.close(fig)


def test_curvature_vs_loss_scatter():
    import pandas as pd
    from scipy.stats import spearmanr

    population = pd.DataFrame(
        {
            "optimizer": ["SGD+momentum"] * 2 + ["AdamW"] * 2,
            "seed": [0, 1, 0, 1],
            "train_loss": [0.002, 0.003, 0.02, 0.05],
            "lambda_max": [5.0, 4.0, 30.0, 20.0],
            "trace": [50.0, 60.0, 300.0, 400.0],
        }
    )
    colors = plots.optimizer_colors({"SGD+momentum": "sgdm", "AdamW": "adamw"})
    fig = plots.plot_curvature_vs_loss(population, colors)
    ax, bx = fig.axes
    for axis, column in ((ax, "lambda_max"), (bx, "trace")):
        assert axis.get_xscale() == axis.get_yscale() == "log"
        rho = spearmanr(population["train_loss"], population[column]).statistic
        assert f"Spearman ρ = {rho:.2f} over 4 runs" in axis.get_title()
        assert len(axis.collections) == 4  # one marker per run
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SGD+momentum", "AdamW"]
    assert [t.get_text() for t in bx.get_legend().get_texts()] == ["seed 0", "seed 1"]
    assert "final training loss" in ax.get_xlabel()
    with pytest.raises(ValueError, match="trace"):
        plots.plot_curvature_vs_loss(population.drop(columns="trace"), colors)
    plt.close(fig)


def _run(steps, loss, lr=0.1, **measured):
    from types import SimpleNamespace

    import pandas as pd

    history = pd.DataFrame({"step": steps, "loss": loss, "lr": lr})
    measurements = pd.DataFrame({"step": steps, **measured})
    return SimpleNamespace(history=history, measurements=measurements)


def test_gd_edge_of_stability_marks_each_threshold():
    steps = np.arange(0, 100, 10)
    runs = {lr: _run(steps, np.geomspace(1, 0.01, 10), sharpness=np.linspace(0.5, 2 / lr, 10))
            for lr in (1.0, 2.0)}  # fmt: skip
    fig = plots.plot_gd_edge_of_stability(runs, sharpness_ylim=(0.3, 2.35))
    ax, bx = fig.axes
    assert ax.get_yscale() == "log" and bx.get_yscale() == "linear"
    assert bx.get_ylim() == pytest.approx((0.3, 2.35))
    assert [t.get_text() for t in bx.get_legend().get_texts()] == [r"$\eta$ = 1", r"$\eta$ = 2"]
    dashed = [line.get_ydata()[0] for line in bx.get_lines() if line.get_linestyle() == "--"]
    assert dashed == pytest.approx([2.0, 1.0])  # 2 / eta
    with pytest.raises(ValueError, match="runs"):
        plots.plot_gd_edge_of_stability({})
    plt.close(fig)


def test_edge_of_stability_of_momentum_and_adaptive_runs():
    steps = np.arange(0, 50, 10)
    heavy = _run(steps, np.ones(5), lr=4.0, sharpness=np.full(5, 0.9), threshold_momentum=0.95)
    adamw = _run(
        steps, np.ones(5), preconditioned_sharpness=np.linspace(1, 38, 5), threshold_adam=38.0
    )
    colors = plots.optimizer_colors({"heavy ball": "sgdm", "AdamW": "adamw"})
    fig = plots.plot_edge_of_stability({"heavy ball": heavy}, {"AdamW": adamw}, colors)
    ax, bx = fig.axes
    levels = {line.get_label(): line.get_ydata()[0] for line in ax.get_lines()[1:]}
    assert levels == pytest.approx({r"$(2 + 2\beta)/\eta$": 0.95, r"$2/\eta$ (no momentum)": 0.5})
    (ratio, one) = bx.get_lines()
    np.testing.assert_allclose(ratio.get_ydata(), np.linspace(1, 38, 5) / 38)
    assert ratio.get_color() == colors["AdamW"] and one.get_ydata()[0] == 1.0
    assert [t.get_text() for t in bx.get_legend().get_texts()] == ["AdamW"]
    with pytest.raises(ValueError, match="threshold_adam"):
        plots.plot_edge_of_stability({"heavy ball": heavy}, {"AdamW": heavy}, {**colors, "x": 0})
    plt.close(fig)


# -- effective step sizes ----------------------------------------------------------------------
def test_loss_and_step_sizes_panels():
    steps = np.arange(1000)
    runs = {"SGD": _run(steps, np.full(1000, 0.5)), "AdamW": _run(steps, 1 + 0.0 * steps)}
    sizes = {"SGD": np.array([0.5]), "AdamW": np.array([1e-3, 1e-2, 1e-2, 1e-1])}
    colors = plots.optimizer_colors({"SGD": "sgd", "AdamW": "adamw"})
    fig = plots.plot_loss_and_step_sizes(runs, sizes, colors, titles=("loss", "sizes"))
    ax, bx = fig.axes
    assert ax.get_xscale() == "log"
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), 0.5)  # bin means of a constant
    assert len(ax.get_lines()[0].get_xdata()) <= 100
    cdf = bx.get_lines()[1]
    np.testing.assert_allclose(cdf.get_xdata(), [-3, -3, -2, -2, -1])
    np.testing.assert_allclose(cdf.get_ydata(), [0, 0.25, 0.5, 0.75, 1])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["SGD", "AdamW"]
    with pytest.raises(ValueError, match="sizes"):
        plots.draw_step_size_cdf(np.array([0.0, 1.0]), bx)
    plt.close(fig)


def test_alpha_step_sizes_spread_against_alpha():
    rng = np.random.default_rng(0)
    base = rng.normal(size=500)
    sizes = {a: 10.0 ** (-3 + a * base) for a in (1.0, 0.5, 0.0)}  # spread proportional to alpha
    fig = plots.plot_alpha_step_sizes(sizes, title="t")
    ax, bx = fig.axes
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [r"$\alpha$ = 1", r"$\alpha$ = 0.5", r"$\alpha$ = 0 (one value)"]
    spread = bx.get_lines()[0]
    np.testing.assert_allclose(
        spread.get_ydata(), [np.std(base), 0.5 * np.std(base), 0], atol=1e-12
    )
    assert spread.get_color() == plots.optimizer_color("ada2ms")
    plt.close(fig)


def test_explorer_draws_a_given_trajectory():
    from analysis_lib import trajectory
    from analysis_lib.problems import toy

    bowl = toy.badly_scaled()
    run = trajectory.run(bowl, "adam", 30, lr=0.1)
    fig = plots.plot_explorer(bowl, run)
    assert fig._suptitle.get_text() == f"{bowl.title}: Adam, lr = 0.1, 30 steps"
    plt.close(fig)


def test_draw_explorer_runs_the_sliders_hyperparameters():
    from analysis_lib import trajectory
    from analysis_lib.problems import toy

    bowl = toy.badly_scaled()
    explicit = trajectory.run(bowl, "ada2ms", 25, lr=0.05, betas=(0.8, 0.9), alpha=0.3)
    figs = [plots.draw_explorer(bowl, "ada2ms", lr=0.05, beta1=0.8, beta2=0.9, alpha=0.3, steps=25),
            plots.plot_explorer(bowl, explicit)]  # fmt: skip
    lines = [[ln.get_xydata() for ax in f.axes for ln in ax.get_lines()] for f in figs]
    assert len(lines[0]) == len(lines[1]) > 0
    assert all(np.array_equal(a, b) for a, b in zip(*lines, strict=True))
    assert figs[0]._suptitle.get_text() == figs[1]._suptitle.get_text()
    for f in figs:
        plt.close(f)


def test_plot_adamnx_second_moment_draws_the_closed_forms():
    fig = plots.plot_adamnx_second_moment(beta2s=(0.9, 0.99), beta2=0.9, steps=(10, 50))
    ax, bx = fig.axes
    vertical = [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    np.testing.assert_allclose(vertical, [1 / (1 - 0.9**0.1), 1 / (1 - 0.99**0.01)], rtol=1e-9)
    horizontal = [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    np.testing.assert_allclose(horizontal, [0.1, 0.01], rtol=1e-12)
    nx = ax.get_lines()[0]  # AdamNX, beta2 = 0.9: 1 - beta2_hat_t = (1 - a) a^(t-1) / (1 - a^t)
    t, a, early = nx.get_xdata(), 0.9**0.1, nx.get_xdata() < 100  # late: 1 - (1 - tiny) rounds
    expected = (1 - a) * a ** (t - 1) / (1 - a**t)
    np.testing.assert_allclose(nx.get_ydata()[early], expected[early], rtol=1e-9)
    assert np.all(np.abs(nx.get_ydata() - expected) < 1e-15)
    solid = [ln for ln in bx.get_lines() if ln.get_linestyle() == "-"]
    assert [len(ln.get_xdata()) for ln in solid] == [10, 50]
    np.testing.assert_allclose([ln.get_ydata().sum() for ln in bx.get_lines()], 1.0, rtol=1e-9)
    plt.close(fig)
