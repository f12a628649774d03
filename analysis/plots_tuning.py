"""Tuning figures (docs/design.md §11): expected best of k trials, and every tuner's expected selected score
against its cost, each with the SFT starting point, the target τ and the fixed arms (IMI methods at
their defaults) drawn in. Same look as `analysis.plots`; no statistics computed here.
"""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.plots import _hide_unused, _legend, _panels, _style, arm_colors, draw_sft
from analysis.tuner_models import IDEALISED, tuner_label

IDEALISED_SUFFIX = tuner_label("", IDEALISED)
TUNER_STYLES = {"grid search": ("s", "-"), "random search": ("o", "-"),
                "successive halving η=2": ("^", "--"), "successive halving η=3": ("v", ":")}
TUNER_COLORS = {"grid search": "#1f77b4", "random search": "#17becf", "successive halving η=2": "#2ca02c",
                "successive halving η=3": "#8c564b"}
# every point includes the procedure's shared builds where the convention charges them once per procedure,
# which can dwarf the runs: the axis is not forced to 0, so the tuners stay apart (the tables give ratios)
COST_LABELS = {"flops": "expected FLOPs of the tuning procedure", "device_hours": "expected device-hours of the procedure"}


def _draw_tau(ax, tau: pd.DataFrame | None, setting: str, handles: dict) -> None:
    if tau is None or setting not in set(tau["setting"]):
        return
    ax.axhline(float(tau.loc[tau["setting"] == setting, "tau"].iloc[0]), color="black", linestyle=":", linewidth=1.0)
    handles.setdefault("_tau", Line2D([], [], color="black", linestyle=":",
                                      label="τ: tuned baseline (validation-selected)"))


def _draw_fixed(ax, fixed: pd.DataFrame | None, setting: str, x: str | None, colors: dict, handles: dict) -> None:
    """Fixed arms as stars with their interval: at k = 1 (x None) or at their cost column x."""
    if fixed is None:
        return
    for _, row in fixed[fixed["setting"] == setting].iterrows():
        color = colors.get(row["arm"], "black")
        position = 1 if x is None else row[x]
        ax.errorbar([position], [row["score"]], yerr=[[row["score"] - row["ci_low"]], [row["ci_high"] - row["score"]]],
                    fmt="*", color=color, markersize=11, capsize=3, linewidth=1.2)
        handles.setdefault(row["arm"], Line2D([], [], color=color, marker="*", linestyle="none", markersize=10,
                                              label=f"{row['arm']} (one run at defaults)"))


def expected_best(curves: pd.DataFrame, fixed: pd.DataFrame | None = None, sft: pd.DataFrame | None = None,
                  tau: pd.DataFrame | None = None) -> Figure:
    """Expected test score of the validation-best of k random grid trials (line, interval shaded) and
    the oracle Ê_k (best TEST score of k, dashed), per grid arm and setting.

    In: `tuning.expected_best_table`; fixed: setting, arm, score, ci_low, ci_high; sft:
    `reference.sft_levels`; tau: setting, tau.
    """
    settings = sorted(curves["setting"].unique())
    fig, axes = _panels(len(settings), "Expected test score of the validation-best of k random grid trials")
    arms = pd.concat([curves[["arm"]].assign(**{"method.name": curves["arm"]}),
                      fixed[["arm"]].assign(**{"method.name": fixed["arm"].str.split(" ").str[0]})
                      if fixed is not None else None])
    colors = arm_colors(arms)
    handles: dict[str, object] = {}
    for ax, setting in zip(axes.ravel(), settings):
        _style(ax)
        for arm, rows in curves[curves["setting"] == setting].groupby("arm", sort=True):
            rows = rows.sort_values("k")
            color = colors[arm]
            ax.fill_between(rows["k"], rows["expected_test_ci_low"], rows["expected_test_ci_high"], color=color,
                            alpha=0.15, linewidth=0)
            ax.plot(rows["k"], rows["expected_test"], "-o", color=color, markersize=3.5, linewidth=1.6)
            ax.plot(rows["k"], rows["oracle"], "--", color=color, linewidth=1.0, alpha=0.8)
            handles.setdefault(arm, Line2D([], [], color=color, marker="o", markersize=3.5,
                                           label=f"{arm}: selected on validation, test score"))
        _draw_fixed(ax, fixed, setting, None, colors, handles)
        draw_sft(ax, sft, setting, handles)
        _draw_tau(ax, tau, setting, handles)
        ax.set_title(setting, fontsize=10)
        ax.set_xlabel("number of grid trials k")
        ax.set_ylabel("expected test score")
    _hide_unused(axes, len(settings))
    handles["_oracle"] = Line2D([], [], color="grey", linestyle="--", label="oracle Ê_k: best test score of k")
    _legend(fig, list(handles.values()))
    return fig


def tuners_vs_cost(curves: pd.DataFrame, fixed: pd.DataFrame | None = None, sft: pd.DataFrame | None = None,
                   tau: pd.DataFrame | None = None, cost: str = "flops") -> Figure:
    """Each tuner of the baseline: expected selected test score against its expected cost, one point
    per budget (random search with its interval shaded), with τ, the SFT level and the fixed arms.

    In: `tuning.TuningResult.curves`; fixed: setting, arm, score, ci_low, ci_high, <cost>.
    """
    settings = sorted(curves["setting"].unique())
    fig, axes = _panels(len(settings), f"Tuners of the baseline: expected selected test score vs {COST_LABELS[cost]}")
    colors = arm_colors(fixed.assign(**{"method.name": fixed["arm"].str.split(" ").str[0]})) if fixed is not None else {}
    handles: dict[str, object] = {}
    for ax, setting in zip(axes.ravel(), settings):
        _style(ax)
        for tuner, rows in curves[curves["setting"] == setting].groupby("tuner", sort=True):
            rows = rows.sort_values(f"expected_{cost}")
            kind = tuner.removesuffix(IDEALISED_SUFFIX)  # the idealised model's tuners look like their practitioner's
            marker, line = TUNER_STYLES.get(kind, ("o", "-"))
            color = TUNER_COLORS.get(kind, "grey")
            if kind == "random search":
                ax.fill_between(rows[f"expected_{cost}"], rows["expected_test_ci_low"], rows["expected_test_ci_high"],
                                color=color, alpha=0.12, linewidth=0)
            ax.plot(rows[f"expected_{cost}"], rows["expected_test"], marker=marker, linestyle=line, color=color,
                    markersize=4.5 if kind != "grid search" else 7, linewidth=1.4)
            handles.setdefault(tuner, Line2D([], [], color=color, marker=marker, linestyle=line, label=tuner))
        _draw_fixed(ax, fixed, setting, cost, colors, handles)
        draw_sft(ax, sft, setting, handles)
        _draw_tau(ax, tau, setting, handles)
        ax.set_title(setting, fontsize=10)
        ax.set_xlabel(COST_LABELS[cost])
        ax.set_ylabel("expected selected test score")
    _hide_unused(axes, len(settings))
    _legend(fig, list(handles.values()))
    return fig


def live_studies(trajectories: pd.DataFrame, fixed: pd.DataFrame | None = None, sft: pd.DataFrame | None = None,
                 tau: pd.DataFrame | None = None) -> Figure:
    """Each live tuning study's best-so-far: the TEST score of its validation-best trial against the study's
    cumulative FLOPs (one step line per study), with the fixed arms at their cost.

    In: `live_tuning.study_trajectories`; fixed: setting, arm, score, ci_low, ci_high, flops; sft; tau.
    """
    settings = sorted(trajectories["setting"].unique())
    fig, axes = _panels(len(settings), "Live tuning studies: test score of the validation-best trial so far")
    colors = arm_colors(fixed[["arm"]].assign(**{"method.name": fixed["arm"].str.split(" ").str[0]})) \
        if fixed is not None and len(fixed) else {}
    handles: dict[str, object] = {}
    for ax, setting in zip(axes.ravel(), settings):
        for study, path in trajectories[trajectories["setting"] == setting].groupby("study", sort=True):
            ax.step(path["flops"], path["best_test"], where="post", color="#1f77b4", alpha=0.75, linewidth=1.2)
        handles.setdefault("_study", Line2D([], [], color="#1f77b4", label="one study (one seed): best so far"))
        _draw_fixed(ax, fixed, setting, "flops", colors, handles)
        draw_sft(ax, sft, setting, handles)
        _draw_tau(ax, tau, setting, handles)
        ax.set_title(setting)
        low, high = ax.get_xlim()
        if low > 0 and high / low > 10:  # a log axis only where the costs span a decade: its minor labels collide
            ax.set_xscale("log")
        else:
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        ax.set_xlabel("FLOPs spent (shared builds once per study)")
        ax.set_ylabel("test score")
        _style(ax)
    _hide_unused(axes, len(settings))
    _legend(fig, list(handles.values()))
    return fig
