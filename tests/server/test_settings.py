"""The typed settings of ``serve`` (:mod:`arcly_trio.server.settings`): built once from the
command line and the configuration file, secrets read once, and what the runtime is built from."""

from __future__ import annotations

import argparse
from pathlib import Path

import attrs
import pytest

from arcly_trio.server.build import build_runtime
from arcly_trio.server.cli import build_parser, resolve_args
from arcly_trio.server.settings import NOT_SETTINGS, Settings


def resolved(*argv: str) -> argparse.Namespace:
    return resolve_args(build_parser(), ["serve", *argv])


def test_the_defaults_are_the_command_lines() -> None:
    assert Settings.of(resolved()) == Settings()


def test_every_option_of_serve_is_a_field_and_no_field_is_made_up() -> None:
    options = set(vars(resolved()))
    assert options | {"app_tables"} == set(attrs.fields_dict(Settings))


def test_an_option_that_is_not_a_field_is_refused() -> None:
    namespace = resolved()
    namespace.no_such_option = 1
    with pytest.raises(TypeError, match="no_such_option"):
        Settings.of(namespace)


def test_command_line_over_file_over_defaults_with_app_tables(tmp_path: Path) -> None:
    path = tmp_path / "arcly.toml"
    path.write_text("rtmp-port = 1000\nhttp-port = 2000\n[apps.cams]\nlag-budget = 7\n")
    settings = Settings.of(resolved("--config", str(path), "--rtmp-port", "3000"))
    assert (settings.rtmp_port, settings.http_port, settings.max_connections) == (3000, 2000, 4096)
    assert dict(settings.app_tables) == {"cams": {"lag-budget": 7}}
    assert Settings.of(settings) is settings


def test_settings_are_immutable() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Settings().rtmp_port = 1  # type: ignore[misc]


def test_secrets_come_from_the_line_then_the_file_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "play.txt"
    secret.write_text("from-file\nignored\n")
    monkeypatch.setenv("ARCLY_API_TOKEN", "from-env")
    monkeypatch.delenv("ARCLY_PUBLISH_TOKEN", raising=False)
    settings = Settings.of(resolved("--play-token-file", str(secret), "--sign-secret", "given"))
    read = settings.with_secrets()
    assert (read.play_token, read.sign_secret, read.api_token, read.publish_token) == (
        "from-file",
        "given",
        "from-env",
        None,
    )
    assert settings.play_token is None  # the settings it was made from are unchanged


def test_an_empty_secret_file_stops_with_a_message(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(SystemExit, match="is empty"):
        Settings.of(resolved("--publish-token-file", str(empty))).with_secrets()


def test_configuration_leaves_out_what_is_not_configuration() -> None:
    configuration = Settings().configuration()
    assert not NOT_SETTINGS & set(configuration) and "rtmp_port" in configuration


def test_the_runtime_keeps_the_settings_it_was_built_from_secrets_read(tmp_path: Path) -> None:
    secret = tmp_path / "publish.txt"
    secret.write_text("s3cret\n")
    runtime = build_runtime(
        resolved(
            "--host",
            "127.0.0.1",
            "--rtmp-port",
            "0",
            "--http-port",
            "0",
            "--publish-token-file",
            str(secret),
            "--max-connections",
            "77",
            "--write-timeout",
            "9",
        )
    )
    assert isinstance(runtime.settings, Settings) and runtime.settings.publish_token == "s3cret"
    for server in (runtime.rtmp, runtime.http):
        assert server is not None
        assert (server.listener.host, server.listener.max_connections, server.write_timeout) == ("127.0.0.1", 77, 9)
