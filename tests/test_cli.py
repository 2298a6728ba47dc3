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


def test_throughput_command_reports_rows(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["throughput", "--batch-sizes", "1,2", "--precisions", "fp32", "--size", "32",
              "--seconds", "0.05", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "PIRender throughput at 32x32" in out
    assert out.count("fp32") == 2  # one row per batch size
