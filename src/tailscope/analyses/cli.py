"""``tailscope analyze ...``: one subcommand per analysis (registered by the command modules)."""

from __future__ import annotations

import contextlib
import importlib
import json
from pathlib import Path
from typing import Annotated

import typer

analyze_app = typer.Typer(no_args_is_help=True,
                          help="The paper's experiments and its reviewers' questions, on any study.")

# Each module registers its subcommands on analyze_app when imported.
COMMAND_MODULES = ("tailscope.analyses.commands_paper", "tailscope.analyses.commands_structure")


@analyze_app.callback()
def _data_options(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="the study's data, when it cannot be reloaded from where it was recorded (moved file, in-memory arrays); give it before the analysis name")] = None,
    data_opt: Annotated[list[str] | None, typer.Option("--data-opt", help="dataset loader option key=value (repeatable); the study's recorded options apply too")] = None,
) -> None:
    """The paper's experiments and its reviewers' questions, on any study."""
    from tailscope.cli import parse_options
    from tailscope.study import use_data

    use_data(dataset, parse_options(data_opt))
    ctx.call_on_close(lambda: use_data(None))  # for this command only (tests run many in one process)


def load_commands() -> typer.Typer:
    for name in COMMAND_MODULES:
        importlib.import_module(name)
    return analyze_app


StudyArg = Annotated[Path, typer.Argument(help="study directory (made by `tailscope run`)")]


def save_and_show(result, study_dir: Path) -> None:
    """Save ``result`` under ``<study>/analyses/<name>/`` and print its summary, reading and folder."""
    from tailscope.analyses.base import _jsonable
    from tailscope.cli import console

    out = result.save(study_dir)
    console.print_json(json.dumps(_jsonable(result.summary)))
    console.print(result.reading)
    console.print(f"saved -> {out}", soft_wrap=True)


@contextlib.contextmanager
def not_resumable(command: str):
    """Ctrl-C or SIGTERM in an analysis that stores none of the models it trains: say that, not the
    usual "finished blocks are stored; run the same command to resume", which is untrue here."""
    from tailscope.cli import console

    try:
        yield
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted: {command} stores none of the models it trains, so there is nothing "
                      "to resume; running the same command again starts its training over.[/]")
        raise typer.Exit(130) from None
