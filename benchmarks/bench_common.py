"""What the benchmark scripts share and that needs no TensorFlow: medians and aligned tables.

The drivers of levers.py and op_profile.py start no TensorFlow (every measurement runs in a
fresh worker process), so what they share with bench_training.py, which imports the coursework,
lives here. The project's settings, storage and builders come from `ca4lib` and `ca4_helpers`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    """The median of `values` as a Python float (for JSON)."""
    return float(statistics.median(values))


def aligned_table(rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Return `rows` of text cells as aligned lines, a rule under the first (the header).

    The first `left` columns are flush left, the others flush right (numbers).
    """
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) if column < left else cell.rjust(width)
                               for column, (cell, width) in enumerate(zip(row, widths))))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines
