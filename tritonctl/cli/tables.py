"""Print rich tables whole: names are never cut to fit 80 columns."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

NATURAL_WIDTH_LIMIT = 1000


def print_table(table: Table, *, stderr: bool = False) -> None:
    """On a terminal a cell too long for its column folds onto more lines (never `…`); into a pipe or
    file the table is printed at its natural width, so every row stays on one line for grep."""
    from rich.console import Console
    from rich.measure import Measurement

    for column in table.columns:
        column.overflow = "fold"
    console = Console(stderr=stderr)
    if not console.is_terminal:
        natural = Measurement.get(console, console.options.update_width(NATURAL_WIDTH_LIMIT), table).maximum
        if natural > console.width:
            console = Console(stderr=stderr, width=natural)
    console.print(table)
