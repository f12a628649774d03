"""Figures of the tuning-cost analysis (docs/design.md §11), written as PNG and PDF: the shared look, the
β-sensitivity curves, the reward–KL frontier and the ΔPMI traces (the tuning figures are in
`plots_tuning`).

Owns the look of every figure: one panel per setting, one colour per method used in all figures,
titles and axis labels with units, a legend, and the SFT starting point drawn in every score plot.
Functions take the tables the other modules compute and return a `matplotlib.figure.Figure`;
`save_figure` writes it. Figures are built on the Agg canvas directly (no pyplot), so importing this module never changes the user's matplotlib backend and no
figure stays alive in a global registry. No statistics are computed here beyond medians for display.
"""
from __future__ import annotations

import itertools
import math
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

# One colour per method in every figure: baselines in cool colours, IMI methods in warm ones. A method
# not listed (added since) gets a colour of EXTRA_COLORS picked by its name, the same in every figure.
METHOD_COLORS = {
    "dpo": "#1f77b4", "ipo": "#2ca02c", "simpo": "#9467bd", "cdpo": "#17becf", "robust": "#8c564b",
    "hinge": "#7f7f7f", "beta_dpo": "#bcbd22",
    "rmipo": "#d62728", "imi_dpo": "#ff7f0e", "imi_ipo": "#e377c2", "imi_simpo": "#a0522d",
}
EXTRA_COLORS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
PANEL_WIDTH, PANEL_HEIGHT = 4.6, 3.5
MAX_COLUMNS = 3
TITLE_CHARS_PER_INCH = 11  # characters of a 12-pt title per inch of figure width
LEGEND_ENTRY_WIDTH = 2.8  # inches one legend entry needs at fontsize 8 (the labels are a few words long)


def arm_colors(arms: pd.DataFrame) -> dict[str, str]:
    """Colour per arm: its method's colour; extra IMI ablation variants of one method get extra colours.

    In: a frame with columns arm, method.name (one row per arm or more).
    """
    colors, spare = {}, itertools.cycle(EXTRA_COLORS)
    used_methods: set[str] = set()
    for arm, method in arms[["arm", "method.name"]].drop_duplicates().sort_values(["method.name", "arm"]).itertuples(index=False):
        if method not in used_methods:
            colors[arm] = method_color(method)
            used_methods.add(method)
        else:
            colors[arm] = next(spare)
    return colors


def method_color(name: str) -> str:
    """A method's colour: METHOD_COLORS', else one of EXTRA_COLORS chosen by a checksum of its name
    (stable across figures, reports and Python processes, unlike hash())."""
    return METHOD_COLORS.get(name) or EXTRA_COLORS[zlib.crc32(str(name).encode()) % len(EXTRA_COLORS)]


def _columns(n: int, most: int = MAX_COLUMNS) -> int:
    """Panels per row: all in one row up to `most`; four as 2 × 2 rather than 3 + 1."""
    return 2 if n == 4 and most < 4 else min(n, most)


def _panels(n: int, suptitle: str) -> tuple[Figure, np.ndarray]:
    columns = _columns(n)
    rows = math.ceil(n / columns)
    fig = Figure(figsize=(PANEL_WIDTH * columns, PANEL_HEIGHT * rows + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    _suptitle(fig, suptitle)
    return fig, axes


def _suptitle(fig: Figure, text: str) -> None:
    """A figure title wrapped to the figure's width (a one-panel figure is only ~4.6 inches wide)."""
    fig.suptitle(textwrap.fill(text, width=int(fig.get_figwidth() * TITLE_CHARS_PER_INCH)), fontsize=12)


def _style(ax) -> None:
    ax.grid(True, which="major", alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)


def _hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.ravel()[used:]:
        ax.set_visible(False)


def _legend(fig: Figure, handles: list) -> None:
    """One legend for all panels, below them, in as many columns as the figure's width holds."""
    if handles:
        columns = max(1, min(len(handles), int(fig.get_figwidth() // LEGEND_ENTRY_WIDTH)))
        fig.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize=8, frameon=False)


def save_figure(fig: Figure, directory: str | Path, name: str) -> list[Path]:
    """Write `fig` as <directory>/<name>.png (160 dpi) and .pdf; returns both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    engine = fig.get_layout_engine()
    if engine is not None:
        # lay the figure out once (it is in inches, so the same for both files), then freeze it:
        # constrained layout is most of the time it takes to save a many-panel figure
        engine.execute(fig)
        fig.set_layout_engine("none")
    paths = []
    for suffix in ("png", "pdf"):
        path = directory / f"{name}.{suffix}"
        fig.savefig(path, dpi=160)
        paths.append(path)
    return paths


def draw_sft(ax, sft: pd.DataFrame | None, setting: str, handles: dict) -> None:
    """The SFT level of `setting` as a black line with its interval as a grey band (a score plot's
    starting point). `sft`: `reference.sft_levels` output (None or no row: nothing drawn)."""
    if sft is None or setting not in set(sft["setting"]):
        return
    row = sft[sft["setting"] == setting].iloc[0]
    if row["ci_high"] > row["ci_low"]:
        ax.axhspan(row["ci_low"], row["ci_high"], color="black", alpha=0.08, linewidth=0)
    ax.axhline(row["level"], color="black", linestyle="-.", linewidth=1.1)
    label = ("SFT starting point (win rate 0.5 by definition)" if row["sft_source"] == "definition"
             else "SFT starting point (mean, interval band)")
    handles.setdefault("_sft", Line2D([], [], color="black", linestyle="-.", linewidth=1.1, label=label))


def beta_sensitivity(runs: pd.DataFrame, summary: pd.DataFrame, metric: str, sft: pd.DataFrame | None = None) -> Figure:
    """Score vs β per setting: for each grid arm the mean over seeds with its interval (line, shaded),
    the median (dotted), every run (dots; × = collapsed run) and the published default (ringed);
    fixed arms (IMI methods at defaults) as horizontal bands (mean line, interval band); the SFT level.

    In: annotated runs with `metric` (and optionally `collapsed`), their `metrics.seed_summary` (with
    mean_ci_low/high) and `reference.sft_levels`.
    """
    settings = sorted(summary["setting"].unique())
    fig, axes = _panels(len(settings), f"β-sensitivity of {metric}: baselines over their β grid, IMI methods at defaults")
    colors = arm_colors(summary)
    handles: dict[str, object] = {}
    for ax, setting in zip(axes.ravel(), settings):
        _style(ax)
        configs = summary[summary["setting"] == setting]
        setting_runs = runs[(runs["setting"] == setting) & runs[metric].notna()]
        grid = configs[configs["arm_kind"] == "grid"]
        betas = configs["method.beta"].dropna()
        low, high = (betas.min() / 1.5, betas.max() * 1.5) if len(betas) else (0.01, 10.0)
        for arm, arm_configs in grid.groupby("arm", sort=True):
            color = colors[arm]
            # a grid that varies another key besides β gets one line per value of that key
            for label, line in arm_configs.groupby(arm_configs["config_label"].str.replace(r"^β=[^,]*,?\s*", "", regex=True)):
                line = line.sort_values("method.beta")
                ax.fill_between(line["method.beta"], line["mean_ci_low"], line["mean_ci_high"], color=color, alpha=0.15,
                                linewidth=0)
                ax.plot(line["method.beta"], line["mean"], "-o", color=color, markersize=4, linewidth=1.6)
                ax.plot(line["method.beta"], line["median"], ":", color=color, linewidth=1.2)
                name = arm + (f" ({label})" if label else "")
                handles.setdefault(name, Line2D([], [], color=color, marker="o", markersize=4,
                                                label=f"{name}: mean over seeds (interval shaded)"))
                default = line[line["is_default"].astype(bool)]
                ax.plot(default["method.beta"], default["mean"], "o", markersize=10, markerfacecolor="none",
                        markeredgecolor="black", markeredgewidth=1.0)
            arm_runs = setting_runs[setting_runs["arm"] == arm]
            collapsed = arm_runs["collapsed"].eq(1.0) if "collapsed" in arm_runs else pd.Series(False, index=arm_runs.index)
            jitter = np.exp(np.random.default_rng(0).uniform(-0.04, 0.04, len(arm_runs)))  # fixed seed: stable figures
            x = arm_runs["method.beta"].to_numpy(float) * jitter
            ax.scatter(x[~collapsed.to_numpy()], arm_runs.loc[~collapsed, metric], s=9, color=color, alpha=0.45, linewidths=0)
            ax.scatter(x[collapsed.to_numpy()], arm_runs.loc[collapsed, metric], s=18, color=color, alpha=0.7, marker="x",
                       linewidths=0.9)
        for _, row in configs[configs["arm_kind"] == "fixed"].iterrows():
            color = colors[row["arm"]]
            ax.axhspan(row["mean_ci_low"], row["mean_ci_high"], color=color, alpha=0.1, linewidth=0)
            ax.axhline(row["mean"], color=color, linestyle="--", linewidth=1.6)
            handles.setdefault(row["arm"], Line2D([], [], color=color, linestyle="--", linewidth=1.6,
                                                  label=f"{row['arm']} (one configuration): mean, interval band"))
        draw_sft(ax, sft, setting, handles)
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.set_title(setting, fontsize=10)
        ax.set_xlabel("β (log scale)")
        ax.set_ylabel(metric)
    _hide_unused(axes, len(settings))
    extra = [Line2D([], [], color="grey", linestyle=":", linewidth=1.2, label="median over seeds"),
             Line2D([], [], color="grey", marker="o", linestyle="none", markersize=3, alpha=0.6, label="one run"),
             Line2D([], [], color="grey", marker="x", linestyle="none", markersize=5, label="collapsed run"),
             Line2D([], [], color="black", marker="o", linestyle="none", markerfacecolor="none", markersize=8,
                    label="published default")]
    _legend(fig, [*handles.values(), *extra])
    return fig


def reward_kl_frontier(runs: pd.DataFrame, reward: str = "gold_reward", kl: str = "kl",
                       sft: pd.DataFrame | None = None) -> Figure:
    """Gold reward vs KL(π‖π_ref) per setting: every run (dots), the per-configuration medians joined
    along β for baseline grids (β printed beside each point), IMI arms as stars with IQR bars, and the
    SFT level of the reward (`reference.sft_levels` of gold_reward; the SFT model sits at KL = 0)."""
    runs = runs[runs[reward].notna() & runs[kl].notna()]
    settings = sorted(runs["setting"].unique())
    fig, axes = _panels(len(settings), "Reward–KL frontier: gold reward vs KL to the reference (medians over seeds)")
    colors = arm_colors(runs)
    handles: dict[str, object] = {}
    log_x = bool((runs[kl] > 0).all())
    for ax, setting in zip(axes.ravel(), settings):
        _style(ax)
        panel = runs[runs["setting"] == setting]
        for arm, arm_runs in panel.groupby("arm", sort=True):
            color = colors[arm]
            ax.scatter(arm_runs[kl], arm_runs[reward], s=9, color=color, alpha=0.35, linewidths=0)
            medians = arm_runs.groupby("config_id").agg(beta=("method.beta", "first"), x=(kl, "median"),
                                                        y=(reward, "median"), x25=(kl, lambda v: v.quantile(0.25)),
                                                        x75=(kl, lambda v: v.quantile(0.75)),
                                                        y25=(reward, lambda v: v.quantile(0.25)),
                                                        y75=(reward, lambda v: v.quantile(0.75)))
            if arm_runs["arm_kind"].iloc[0] == "grid":
                medians = medians.sort_values("beta")
                ax.plot(medians["x"], medians["y"], "-o", color=color, markersize=4, linewidth=1.4)
                for _, m in medians.iterrows():
                    if pd.notna(m["beta"]):
                        ax.annotate(f"{m['beta']:g}", (m["x"], m["y"]), textcoords="offset points", xytext=(3, 3),
                                    fontsize=6.5, color=color)
                handles.setdefault(arm, Line2D([], [], color=color, marker="o", markersize=4, label=f"{arm} (β grid, β labelled)"))
            else:
                ax.errorbar(medians["x"], medians["y"], xerr=[medians["x"] - medians["x25"], medians["x75"] - medians["x"]],
                            yerr=[medians["y"] - medians["y25"], medians["y75"] - medians["y"]], fmt="*", color=color,
                            markersize=11, capsize=2, linewidth=1.0)
                handles.setdefault(arm, Line2D([], [], color=color, marker="*", linestyle="none", markersize=10,
                                               label=f"{arm} (defaults, IQR bars)"))
        draw_sft(ax, sft, setting, handles)
        if log_x:
            ax.set_xscale("log")
        ax.set_title(setting, fontsize=10)
        ax.set_xlabel(f"{kl}: KL(π‖π_ref), nats per sequence" + (" (log scale)" if log_x else ""))
        ax.set_ylabel(f"{reward} (gold reward per sample)")
    _hide_unused(axes, len(settings))
    handles["_run"] = Line2D([], [], color="grey", marker="o", linestyle="none", markersize=3, alpha=0.5, label="one run")
    _legend(fig, list(handles.values()))
    return fig


def imi_traces(traces: pd.DataFrame, smoothing: int | None = None) -> Figure:
    """ΔPMI and the effective regulation per training step, for the IMI arms of each setting.

    In: a long frame with columns setting, arm, method.name, run_id, step, delta_pmi, regulation,
    regulation_name (e.g. "effective_margin"), as `report_figures.imi_trace_frame` builds from the histories.
    Thin lines: each run (seed); thick line: the median over seeds per step. Values are the batch means
    the trainer logs, smoothed by a centred rolling mean over `smoothing` steps (default: 1/25 of the run).
    """
    settings = sorted(traces["setting"].unique())
    n = len(settings)
    columns = _columns(n, most=4)
    blocks = math.ceil(n / columns)
    fig = Figure(figsize=(PANEL_WIDTH * columns, 2 * PANEL_HEIGHT * blocks + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 * blocks, columns, squeeze=False)
    window = smoothing or max(1, int(traces["step"].max() + 1) // 25)
    smoothing_text = "no smoothing" if window == 1 else f"rolling mean over {window} steps"
    _suptitle(fig, f"IMI signal during training: ΔPMI and effective regulation (batch means, {smoothing_text})")
    colors = arm_colors(traces)
    handles: dict[str, object] = {}
    for index, setting in enumerate(settings):
        row, column = 2 * (index // columns), index % columns
        top, bottom = axes[row, column], axes[row + 1, column]
        panel = traces[traces["setting"] == setting]
        for arm, arm_rows in panel.groupby("arm", sort=True):
            color = colors[arm]
            names = sorted(arm_rows["regulation_name"].dropna().unique())
            for ax, value in ((top, "delta_pmi"), (bottom, "regulation")):
                wide = arm_rows.pivot_table(index="step", columns="run_id", values=value, aggfunc="mean").sort_index()
                if wide.empty:
                    continue
                smooth = wide.rolling(window, center=True, min_periods=1).mean()
                for run_id in smooth.columns:
                    ax.plot(smooth.index, smooth[run_id], color=color, alpha=0.3, linewidth=0.8)
                ax.plot(smooth.index, smooth.median(axis=1), color=color, linewidth=2.0)
            handles.setdefault(arm, Line2D([], [], color=color, linewidth=2.0,
                                           label=f"{arm}: median over seeds ({', '.join(names) or 'no regulation logged'})"))
        for ax in (top, bottom):
            _style(ax)
            ax.set_xlabel("optimizer step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        top.axhline(0.0, color="black", linewidth=0.6)
        top.set_title(f"{setting}: ΔPMI", fontsize=10)
        top.set_ylabel("ΔPMI = PMI(y_w) − PMI(y_l) (nats/token)", fontsize=8)
        bottom.set_title(f"{setting}: effective regulation", fontsize=10)
        bottom.set_ylabel("effective margin / β / weight", fontsize=8)
    for index in range(n, columns * blocks):
        row, column = 2 * (index // columns), index % columns
        axes[row, column].set_visible(False)
        axes[row + 1, column].set_visible(False)
    handles["_run"] = Line2D([], [], color="grey", linewidth=0.8, alpha=0.5, label="one run (seed)")
    _legend(fig, list(handles.values()))
    return fig
