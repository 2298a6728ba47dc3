"""CLI plumbing: exit codes and user errors."""

from __future__ import annotations

import pytest
import typer

from bench import cli


def test_typer_exit_codes_reach_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing() -> None:
        raise typer.Exit(3)

    app = typer.Typer()
    app.command()(failing)
    monkeypatch.setattr(cli, "app", app)
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 3


def test_user_errors_exit_2_with_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["list", "drivers"])
    assert info.value.code == 2
    assert "Unknown component kind 'drivers'" in capsys.readouterr().err
