"""The ``bench`` command line.

Subcommands live in small modules (``bench.cli_*``) and are attached here.
Nothing heavy is imported at start-up: ``bench list`` and ``--help`` never
import torch.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from . import __version__
from .errors import BenchError

app = typer.Typer(
    name="bench",
    help="headbench: benchmark conversational head generation (ViCo talking and listening heads).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"headbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "-p",
            "--plugin",
            help="Plugin control, repeatable: '-p no:NAME' disables a plugin; '-p NAME' loads "
            "one (an entry-point name or module), e.g. with BENCH_DISABLE_PLUGIN_AUTOLOAD=1.",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    if plugin:
        from .plugins import configure

        configure(plugin)


def _register() -> None:
    from . import cli_data, cli_eval, cli_info, cli_report, cli_run, cli_train

    for module in (cli_info, cli_run, cli_train, cli_eval, cli_report, cli_data):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app, turning user errors into a message and exit code 2."""
    try:
        # Without standalone mode click returns the code of typer.Exit instead of exiting.
        code = app(args=argv, standalone_mode=False)
    except BenchError as exc:
        from rich.console import Console
        from rich.markup import escape

        err = Console(stderr=True)
        # soft_wrap: never break a path or name across lines (copy-paste, grep)
        err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        if exc.fix:
            err.print(f"[bold]fix:[/] {escape(exc.fix)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click usage errors come through as ClickException
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
