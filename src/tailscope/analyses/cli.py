"""``tailscope analyze ...``: one subcommand per analysis (registered by the command modules)."""

from __future__ import annotations

import importlib

import typer

analyze_app = typer.Typer(no_args_is_help=True,
                          help="The paper's experiments and its reviewers' questions, on any study.")

# Each module registers its subcommands on analyze_app when imported.
COMMAND_MODULES = ("tailscope.analyses.commands_paper", "tailscope.analyses.commands_structure")


def load_commands() -> typer.Typer:
    for name in COMMAND_MODULES:
        importlib.import_module(name)
    return analyze_app
