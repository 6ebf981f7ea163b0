"""Each setting is declared once in pgq/settings.py; the env reader, ``pgq --help``, the docs
table and the parameters that take the same setting all come from that declaration."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

from typer.testing import CliRunner

from pgq.cli import cli
from pgq.settings import Settings, debug_requested, default, environment_variables
from pgq.store.database import Database


def test_every_field_declares_its_variable_and_meaning() -> None:
    for f in fields(Settings):
        assert f.metadata["env"] == f"PGQ_{f.name.upper()}"
        assert f.metadata["help"] and "\n" not in f.metadata["help"]


def test_from_env_reads_every_declared_variable(tmp_path: Path) -> None:
    env = {"PGQ_HOME": str(tmp_path)}
    numbers = {f.name: f for f in fields(Settings) if isinstance(f.default, (int, float))}
    for f in numbers.values():
        env[f.metadata["env"]] = str(f.default * 2)
    env["PGQ_HEARTBEAT_INTERVAL"] = "1"  # stays shorter than the doubled lease
    s = Settings.from_env(env)
    for name, f in numbers.items():
        if name != "heartbeat_interval":
            assert getattr(s, name) == f.default * 2, name
    assert s.home == tmp_path


def test_root_help_lists_every_variable_with_its_default() -> None:
    out = CliRunner().invoke(cli, ["--help"], terminal_width=1000).output
    assert "Environment variables:" in out
    for var in environment_variables():
        assert var.env in out
    assert "PGQ_POOL_SIZE (default 4): connections in a producer process's pool" in out
    assert "`" not in out and "](" not in out  # Markdown is rendered as plain text


def test_parameters_taking_a_setting_default_to_its_declaration() -> None:
    params = inspect.signature(Database.__init__).parameters
    assert params["pool_size"].default == default("pool_size") == Settings().pool_size
    assert params["connect_timeout"].default == default("connect_timeout")


def test_debug_is_read_only_when_asked() -> None:
    assert debug_requested({"PGQ_DEBUG": "1"})
    assert not debug_requested({})
