"""Two fixes to Typer's rich `--help` panels, installed once by `tritonctl.cli.main`.

- An on/off flag (`--force`, `--help`) takes no value, yet Typer 0.29 prints `<bool>` as its type.
- Typer's option table lets every column shrink, so at 80 columns option names were cut
  (`--max-batch-si…`); here the name columns keep their width, and the type and help columns wrap
  (a word longer than its column folds onto the next line rather than ending in `…`).

Both are patches of Typer internals: when a Typer release moves them, the help falls back to Typer's
own rendering, and tests/unit/cli/test_help_format.py says so.
"""

from __future__ import annotations

from typing import Any

from typer import core

_NAME_COLUMNS_END = -2  # an options row ends with its type and its help text; the rest are names


def _display_type_rich(self: core.TyperOption, ctx: Any) -> str | None:
    if self.is_flag and self.metavar is None:
        return None
    return _original_display_type_rich(self, ctx)


_original_display_type_rich = core.TyperOption.display_type_rich


def _help_table_class() -> type[Any]:
    from rich.columns import Columns
    from rich.console import Group
    from rich.table import Table

    class WholeNamesTable(Table):
        def add_row(self, *renderables: Any, **kwargs: Any) -> None:
            # Columns lays its parts out in a grid of its own that ends long words in `…`; a Group
            # lets them take the column's overflow.
            renderables = tuple(Group(*r.renderables) if isinstance(r, Columns) else r for r in renderables)
            super().add_row(*renderables, **kwargs)
            for column in self.columns[:_NAME_COLUMNS_END]:
                column.no_wrap = True
            for column in self.columns[_NAME_COLUMNS_END:]:
                column.overflow = "fold"  # a long word breaks onto the next line instead of ending in …

    return WholeNamesTable


def _with_whole_names(format_help: Any) -> Any:
    def format_help_whole_names(self: Any, ctx: Any, formatter: Any) -> Any:
        # Imported only when help is shown: rich_utils costs start-up time otherwise.
        from typer import rich_utils

        if getattr(rich_utils, "Table", None) is not None and not getattr(rich_utils, "_tritonctl", False):
            setattr(rich_utils, "Table", _help_table_class())  # noqa: B010 - a module global of typer
            setattr(rich_utils, "_tritonctl", True)  # noqa: B010
        return format_help(self, ctx, formatter)

    return format_help_whole_names


def install() -> None:
    if getattr(core, "_tritonctl_help", False):
        return
    core._tritonctl_help = True  # type: ignore[attr-defined]
    core.TyperOption.display_type_rich = _display_type_rich  # type: ignore[method-assign]
    for command_class in (core.TyperCommand, core.TyperGroup):
        command_class.format_help = _with_whole_names(command_class.format_help)  # type: ignore[method-assign]
