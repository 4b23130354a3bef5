"""Figures fit for a paper: one colour per task, a task legend that scales to 50 tasks, and every
figure saved twice, as a PNG at `FIGURE_DPI` dots per inch and as a vector PDF beside it.

Colours: tab10 for up to 10 tasks, tab20 for up to 20, then tab20, tab20b and tab20c (60 colours)
with the line style changing every 20 tasks (solid, dashed, dotted) so neighbouring shades stay
apart. matplotlib runs on its Agg backend (headless); figures are written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rlmtl.atomic import atomic_path

FIGURE_DPI = 200
LINE_STYLES = ("-", "--", ":")


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def task_colors(count: int) -> list[tuple[float, float, float, float]]:
    """`count` qualitative colours, one per task, in task order (see the module docstring)."""
    plt = pyplot()
    if count <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(count)]
    if count <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(count)]
    palette = [plt.get_cmap(name)(i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
    return [palette[i % len(palette)] for i in range(count)]


def task_line_style(index: int) -> str:
    """The line style of task `index`: solid for the first 20 tasks, then dashed, then dotted."""
    return LINE_STYLES[(index // 20) % len(LINE_STYLES)]


def task_legend(figure: Any, handles: list[Any], labels: list[str]) -> None:
    """One legend of the tasks for the whole figure, outside the panels on the right; in columns
    of at most 25 entries, with a smaller font beyond 20 tasks."""
    columns = max(1, math.ceil(len(labels) / 25))
    font = 8 if len(labels) <= 20 else 6
    figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), ncol=columns, fontsize=font, title="task", frameon=False)


def save_figure(figure: Any, target: Path) -> list[Path]:
    """Save `figure` as `target` (a PNG at FIGURE_DPI) and as the PDF beside it, atomically, and
    close it; returns both paths."""
    written = []
    for path, form in ((target, "png"), (target.with_suffix(".pdf"), "pdf")):
        # no creation date in the PDF, so the same figure gives the same file
        metadata = {"CreationDate": None} if form == "pdf" else None
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=form, dpi=FIGURE_DPI, bbox_inches="tight", metadata=metadata)
        written.append(path)
    pyplot().close(figure)
    return written
