"""The `autoround` command line and its recipe commands."""

from autoround.cli.commands import main, main_best, main_light, main_opt_rtn, main_rtn

__all__ = ["main", "main_best", "main_light", "main_opt_rtn", "main_rtn"]
