"""Writing tables: CSV (raw numbers), LaTeX (booktabs `tabular`) and Markdown (for report.md).

Owns number formatting for people (scores to 3 decimals, shares as percentages, costs to 3
significant digits) and the escaping each format needs. CSV files keep the raw, unrounded values.
No statistics here; pandas' own LaTeX/Markdown writers are not used because they need jinja2/tabulate.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import pandas as pd

Formatter = Callable[[object], str]


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def fmt_score(value) -> str:
    return "–" if _is_missing(value) else f"{float(value):.3f}"


def fmt_signed(value) -> str:
    """A difference to 3 decimals with its sign ("+0.008", "-0.079")."""
    return "–" if _is_missing(value) else f"{float(value):+.3f}"


def fmt_share(value) -> str:
    """A fraction as a percentage; −∞ (a target missed) as "misses τ"."""
    if _is_missing(value):
        return "–"
    value = float(value)
    if math.isinf(value):
        return "misses τ" if value < 0 else "∞"
    return f"{100 * value:.1f}%"


def fmt_cost(value) -> str:
    if _is_missing(value):
        return "–"
    value = float(value)
    return "∞" if math.isinf(value) else f"{value:.3g}"


def fmt_count(value) -> str:
    if _is_missing(value):
        return "–"
    value = float(value)
    return "∞" if math.isinf(value) else (f"{value:.0f}" if value == round(value) else f"{value:.2f}")


def fmt_text(value) -> str:
    return "" if _is_missing(value) else str(value)


def with_interval(estimate, low, high, fmt: Formatter) -> str:
    """"0.712 [0.650, 0.770]"; an infinite estimate alone; with fmt_share, an interval end of −∞
    (a replicate that misses the target) reads "misses τ"."""
    if _is_missing(estimate):
        return "–"
    if math.isinf(float(estimate)):
        return fmt(estimate)
    return f"{fmt(estimate)} [{fmt(low)}, {fmt(high)}]"


def display(frame: pd.DataFrame, columns: dict[str, tuple[str, Formatter]]) -> pd.DataFrame:
    """Strings for people: {source column: (header, formatter)}, in that order."""
    return pd.DataFrame({header: [fmt(v) for v in frame[column]] for column, (header, fmt) in columns.items()})


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a frame of strings."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


LATEX_REPLACEMENTS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "β": r"$\beta$", "τ": r"$\tau$", "Δ": r"$\Delta$", "Ê": r"$\hat{E}$", "−": "$-$", "–": "--", "∞": r"$\infty$",
    "±": r"$\pm$", "·": r"$\cdot$", "≥": r"$\geq$", "‖": r"$\|$", "π": r"$\pi$",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_REPLACEMENTS.get(ch, ch) for ch in str(text))


def to_latex(frame: pd.DataFrame, comment: str = "") -> str:
    """A booktabs `tabular` (needs \\usepackage{booktabs}); `comment` goes on top as % lines."""
    lines = [f"% {line}" for line in comment.splitlines()]
    lines.append(r"\begin{tabular}{" + "l" * min(2, frame.shape[1]) + "r" * max(0, frame.shape[1] - 2) + "}")
    lines.append(r"\toprule")
    lines.append(" & ".join(latex_escape(c) for c in frame.columns) + r" \\")
    lines.append(r"\midrule")
    for row in frame.itertuples(index=False):
        lines.append(" & ".join(latex_escape(v) for v in row) + r" \\")
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def write_table(raw: pd.DataFrame, shown: pd.DataFrame, directory: Path, name: str, comment: str = "") -> list[Path]:
    """<directory>/<name>.csv (raw values) and <name>.tex (the display strings); returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    csv_path, tex_path = directory / f"{name}.csv", directory / f"{name}.tex"
    raw.to_csv(csv_path, index=False)
    tex_path.write_text(to_latex(shown, comment))
    return [csv_path, tex_path]
