"""The configuration file: keys derived from the parser, checks with file and line, precedence,
and reloading a running server in one process.

Checked: every option of ``serve`` is a key (so an option added later is covered without
touching the loader), and the hidden ones are not; unknown keys, wrong types, bad choices, bad
application names and broken TOML stop with ``FILE:LINE: key: problem``; the command line
overrides the file, which overrides the defaults; ``[apps.NAME]`` tables make applications with
their own policy and authorization; arbitrary TOML documents only ever raise ``ConfigError``
(hypothesis); a reload adds and removes applications while a stream of one that stays plays on,
swaps the authorization, changes the API token and keeps the running configuration when the new
file is broken; docs/config.md and examples/arcly.toml document every key.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import re
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio import Credentials, StreamKey, Unauthorized
from arcly_trio.core.errors import InvalidStreamName, StreamError
from arcly_trio.core.keys import check_name
from arcly_trio.server.build import app_specs, build_runtime, reload_runtime
from arcly_trio.server.cli import build_parser, main, reload, resolve_args
from arcly_trio.server.config import APP_KEYS, NOT_IN_FILE, ConfigError, OptionKey, load, option_keys
from arcly_trio.server.options import APP_RULES, RULES, problem
from arcly_trio.services import HlsService

ROOT = Path(__file__).resolve().parent.parent.parent


def serve_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["serve"]  # type: ignore[no-any-return]
    raise AssertionError("no serve")


def keys() -> dict[str, object]:
    return option_keys(serve_parser())  # type: ignore[return-value]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "arcly.toml"
    path.write_text(text)
    return str(path)


def test_every_serve_option_is_a_key_and_the_hidden_ones_are_not() -> None:
    found = keys()
    options = {
        flag[2:]
        for action in serve_parser()._actions
        for flag in action.option_strings
        if flag.startswith("--")
        and not flag.startswith("--no-")
        and action.dest not in NOT_IN_FILE
        and action.help != argparse.SUPPRESS
    }
    assert set(found) == options and len(found) > 50
    assert {"worker-dir", "config", "help"}.isdisjoint(found)
    assert {"hls", "hls-variant", "on-publish", "rtmps-port", "api-token", "push"} <= set(found)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rtmp-port = 1935\nrtmp-prot = 1\n", r"arcly.toml:2: rtmp-prot: unknown key \(did you mean 'rtmp-port'\?\)"),
        ('\n\nrtmp-port = "1935"\n', r"arcly.toml:3: rtmp-port: expected an integer, not '1935'"),
        ("hls = 1\n", r"arcly.toml:1: hls: expected true or false, not 1"),
        ('hls-variant = "dash"\n', r"arcly.toml:1: hls-variant: expected one of ll, fmp4, ts, not 'dash'"),
        ('push = "rtmp://x/a"\n', r"arcly.toml:1: push: expected a list of strings"),
        ("workers = 0\n", r"arcly.toml:1: workers: expected a number of at least 1"),
        ("idle-timeout = true\n", r"arcly.toml:1: idle-timeout: expected a number, not True"),
        ("[apps.live]\ngop-cache = 10\nlag-budjet = 5\n", r"arcly.toml:3: apps.live.lag-budjet: unknown key"),
        ('[apps.live]\n\ntakeover = "steal"\n', r"arcly.toml:3: apps.live.takeover: expected one of reject, replace"),
        ('[apps."a b"]\nhls = true\n', r"arcly.toml:1: apps.a b: invalid name"),
        ("rtmp-port = \n", r"arcly.toml:1: not valid TOML"),
        ("apps = 3\n", r"arcly.toml:1: apps: expected \[apps.NAME\] tables"),
    ],
)
def test_bad_files_are_refused_with_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, text), keys())


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load(str(tmp_path / "nope.toml"), keys())


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*keys(), "nope", "apps"]),
        st.one_of(
            st.integers(-5, 70000),
            st.booleans(),
            st.text(max_size=20),
            st.floats(allow_nan=False),
            st.lists(st.text(max_size=5), max_size=3),
            st.dictionaries(
                st.sampled_from(["live", "a b", "x"]),
                st.dictionaries(
                    st.sampled_from([*APP_KEYS, "zzz"]),
                    st.one_of(st.integers(), st.text(max_size=5), st.booleans()),
                    max_size=3,
                ),
                max_size=2,
            ),
        ),
        max_size=6,
    )
)
def test_arbitrary_documents_load_or_raise_config_error(
    tmp_path_factory: pytest.TempPathFactory, document: dict[str, object]
) -> None:
    import tomli_w  # the test extra's TOML writer

    path = tmp_path_factory.mktemp("fuzz") / "arcly.toml"
    path.write_text(tomli_w.dumps(document))
    try:
        loaded = load(str(path), keys())
    except ConfigError as exc:
        assert re.match(rf"{re.escape(str(path))}:\d+: ", str(exc)), exc
        return
    assert set(loaded.options) <= {option.dest for option in keys().values()}  # type: ignore[attr-defined]


def test_command_line_over_file_over_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'rtmp-port = 1936\nhttp-port = 8090\nhls = false\npush = ["rtmp://a/{app}/{stream}"]\n'
        '[apps.live]\nlag-budget = 100\n[apps.studio]\ntakeover = "replace"\nhls = true\n',
    )
    argv = ["serve", "--config", path, "--http-port", "9000"]
    args = resolve_args(build_parser(), argv)
    assert (args.rtmp_port, args.http_port, args.hls, args.push, args.idle_timeout) == (
        1936,
        9000,
        False,
        ["rtmp://a/{app}/{stream}"],
        30.0,
    )
    specs = app_specs(args)
    assert sorted(specs) == ["live", "studio"]
    assert (specs["live"].lag_budget, specs["live"].hls, specs["studio"].takeover.value, specs["studio"].hls) == (
        100,
        False,
        "replace",
        True,
    )
    assert resolve_args(build_parser(), ["serve", "--config", path, "--hls"]).hls is True


def test_docs_and_example_cover_every_key() -> None:
    docs = (ROOT / "docs" / "config.md").read_text()
    example = (ROOT / "examples" / "arcly.toml").read_text()
    for name in [*keys(), *APP_KEYS]:
        assert f"`{name}`" in docs, f"docs/config.md does not document {name}"
        assert re.search(rf"^#? ?{re.escape(name)} = ", example, re.M), f"examples/arcly.toml lacks {name}"
    loaded = load(str(ROOT / "examples" / "arcly.toml"), keys())
    assert "live" in loaded.apps


async def test_reload_adds_and_removes_apps_keeps_streams_and_swaps_auth(tmp_path: Path, demo_frames) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "arcly.toml"
    path.write_text('http-port = -1\nrtmp-port = 0\nrtsp-port = -1\nhost = "127.0.0.1"\napp = ["live", "old"]\n')
    argv = ["serve", "--config", str(path)]
    runtime = build_runtime(resolve_args(build_parser(), argv))
    engine = runtime.engine
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        async with engine.publish("live/cam") as publisher, engine.subscribe("live/cam") as sub:
            await publisher.send(demo_frames[0])
            path.write_text(
                'http-port = -1\nrtmp-port = 0\nrtsp-port = -1\nhost = "127.0.0.1"\napp = ["live", "new"]\n'
                'play-token = "v"\n[apps.new]\npublish-token = "n"\nlag-budget = 7\n'
            )
            assert await reload(runtime, argv)
            assert sorted(app.name for app in engine.applications()) == ["live", "new"]
            assert engine.application("new").spec.lag_budget == 7
            assert engine.stream("live/cam") is sub.stream and publisher.active  # untouched
            await publisher.send(demo_frames[1])
            with pytest.raises(Unauthorized):
                async with engine.subscribe("live/cam"):
                    pass
            with pytest.raises(Unauthorized):
                async with engine.publish("new/x"):
                    pass
            async with engine.publish("new/x", Credentials(token="n")):
                pass
            path.write_text("http-port = \n")  # broken: the running configuration stays
            assert not await reload(runtime, argv)
            assert sorted(app.name for app in engine.applications()) == ["live", "new"]
            path.write_text('http-port = -1\nrtmp-port = 5\nhost = "127.0.0.1"\napp = ["live", "new"]\n')
            changes = await reload_runtime(runtime, resolve_args(build_parser(), argv))
            assert "rtmp-port changed (needs a restart)" in changes
            async with engine.subscribe("live/cam") as again:  # the play token is gone again
                assert again.key == StreamKey("live", "cam")
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "text",
    [
        "api-token = 918273645\n",
        'push = "rtmp://h/live/s?key=918273645"\n',
        "[apps.live]\nplay-token = 918273645\n",
        "on-play = [918273645]\n",
    ],
)
def test_a_wrong_secret_is_not_quoted_back(tmp_path: Path, text: str) -> None:
    # Issue 18, finding 3: the error names the key and the type; it goes to the log (and, on a
    # reload, to the audit log), so it must not carry the value.
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text), keys())
    assert "918273645" not in str(caught.value) and "expected" in str(caught.value)


async def test_a_reload_swaps_the_authorization_before_it_starts_new_applications(tmp_path: Path) -> None:
    """An intruder publishes to ``new/x`` without a token, as often as it can, while a reload
    adds the application ``new`` and a publish token: it must never get in. (Adding an
    application yields to the other tasks; with the authenticator swapped after the new
    applications started, the intruder published under the old, open authorization.)
    Mutant killed: the authenticator swapped after the applications were added."""
    path = tmp_path / "arcly.toml"
    path.write_text('http-port = -1\nrtmp-port = 0\nrtsp-port = -1\nhost = "127.0.0.1"\napp = ["live"]\n')
    argv = ["serve", "--config", str(path)]
    runtime = build_runtime(resolve_args(build_parser(), argv))
    engine = runtime.engine
    published: list[str] = []
    done = trio.Event()

    async def intruder() -> None:
        while not done.is_set():
            try:
                async with engine.publish("new/x"):
                    published.append("new/x")
            except StreamError:
                pass
            await trio.lowlevel.checkpoint()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)
            nursery.start_soon(intruder)
            path.write_text(
                'http-port = -1\nrtmp-port = 0\nrtsp-port = -1\nhost = "127.0.0.1"\napp = ["live", "new"]\npublish-token = "n"\n'
            )
            assert await reload(runtime, argv)
            for _ in range(10):
                await trio.lowlevel.checkpoint()
            done.set()
            assert engine.application("new") is not None
            with pytest.raises(Unauthorized):
                async with engine.publish("new/x"):
                    pass
            nursery.cancel_scope.cancel()
    assert published == []


def test_publish_limits_and_the_hls_cap_come_from_options_and_app_tables(tmp_path: Path) -> None:
    """Issue 18 (findings 11, 12): ``serve``'s defaults turn the limits on (50 Mbit/s per
    publisher, 8 publishers per address, 10 s to the first media frame, 64 MiB of HLS per
    stream); the file sets them, an application its own bitrate limit (0 = none)."""
    defaults = build_runtime(resolve_args(build_parser(), ["serve", "--http-port", "0", "--rtmp-port", "0"]))
    engine = defaults.engine
    assert (engine.max_publishers_per_address, engine.publish_start_timeout) == (8, 10.0)
    assert "local" in engine.exempt_addresses  # the workers' relays
    assert [hls.max_bytes for hls in engine.services if isinstance(hls, HlsService)] == [64 * 1024 * 1024]
    assert app_specs(defaults.settings)["live"].max_publish_bitrate == 50_000_000
    path = write(
        tmp_path,
        "max-publishers-per-ip = 0\npublish-start-timeout = 0\nhls-max-mib = 0\n"
        "max-publish-bitrate = 20_000_000\n[apps.live]\n[apps.big]\nmax-publish-bitrate = 0\n",
    )
    args = resolve_args(build_parser(), ["serve", "--config", path, "--http-port", "0", "--rtmp-port", "0"])
    engine = build_runtime(args).engine
    assert (engine.max_publishers_per_address, engine.publish_start_timeout) == (None, None)
    assert [hls.max_bytes for hls in engine.services if isinstance(hls, HlsService)] == [None]
    specs = app_specs(args)
    assert (specs["live"].max_publish_bitrate, specs["big"].max_publish_bitrate) == (20_000_000, 0)
    with pytest.raises(ConfigError, match="--hls-max-mib 0.5: a size in MiB, from 1 to 1048576"):
        resolve_args(build_parser(), ["serve", "--hls-max-mib", "0.5"])


def test_the_rtsp_per_address_session_cap_comes_from_the_option(tmp_path: Path) -> None:
    """Issue 25: ``--rtsp-max-sessions-per-address`` (file key ``rtsp-max-sessions-per-address``)
    reaches the RTSP worker; 64 by default, 0 turns the cap off, a negative count is refused."""
    base = ["serve", "--http-port", "-1", "--rtmp-port", "0", "--rtsp-port", "0"]
    runtime = build_runtime(resolve_args(build_parser(), base))
    assert runtime.rtsp is not None and runtime.rtsp.max_sessions_per_address == 64
    path = write(tmp_path, "rtsp-max-sessions-per-address = 3\n")
    runtime = build_runtime(resolve_args(build_parser(), [*base, "--config", path]))
    assert runtime.rtsp is not None and runtime.rtsp.max_sessions_per_address == 3
    runtime = build_runtime(resolve_args(build_parser(), [*base, "--rtsp-max-sessions-per-address", "0"]))
    assert runtime.rtsp is not None and runtime.rtsp.max_sessions_per_address is None
    with pytest.raises(ConfigError, match="--rtsp-max-sessions-per-address -1"):
        resolve_args(build_parser(), [*base, "--rtsp-max-sessions-per-address", "-1"])


async def test_reload_applies_the_publisher_limits(tmp_path: Path) -> None:
    path = tmp_path / "arcly.toml"
    base = 'http-port = -1\nrtmp-port = 0\nrtsp-port = -1\nhost = "127.0.0.1"\n'
    path.write_text(base)
    argv = ["serve", "--config", str(path)]
    runtime = build_runtime(resolve_args(build_parser(), argv))
    engine = runtime.engine
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        path.write_text(base + "max-publishers-per-ip = 2\npublish-start-timeout = 3.0\nmax-publish-bitrate = 1000\n")
        changes = await reload_runtime(runtime, resolve_args(build_parser(), argv))
        assert (engine.max_publishers_per_address, engine.publish_start_timeout) == (2, 3.0)
        assert engine.application("live").spec.max_publish_bitrate == 1000
        assert not [change for change in changes if "restart" in change], changes
        nursery.cancel_scope.cancel()


async def test_reload_applies_changed_settings_of_an_application_that_stays(tmp_path: Path) -> None:
    """Changed ``[apps.NAME]`` settings of an application that stays apply to its new streams;
    a live stream keeps its own. Mutant killed: ``elif current[name].spec != spec`` never
    taken in ``reload_runtime`` (the new settings silently ignored)."""
    path = tmp_path / "arcly.toml"
    head = 'http-port = -1\nrtmp-port = 0\nrtsp-port = -1\nhost = "127.0.0.1"\napp = ["live"]\n'
    path.write_text(head + "[apps.live]\nlag-budget = 7\nqueue = 16\n")
    argv = ["serve", "--config", str(path)]
    runtime = build_runtime(resolve_args(build_parser(), argv))
    engine = runtime.engine
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        async with engine.publish("live/old"):
            assert engine.stream("live/old").spec.lag_budget == 7
            path.write_text(head + "[apps.live]\nlag-budget = 50\nqueue = 64\n")
            changes = await reload_runtime(runtime, resolve_args(build_parser(), argv))
            assert "application live: new settings for its new streams" in changes
            spec = engine.application("live").spec
            assert (spec.lag_budget, spec.subscriber_queue) == (50, 64)
            assert engine.stream("live/old").spec.lag_budget == 7  # a live stream keeps its policy
            async with engine.publish("live/new"):
                assert (engine.stream("live/new").spec.lag_budget, engine.stream("live/new").spec.subscriber_queue) == (
                    50,
                    64,
                )
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------ every option's values (issue 19, item 6)


def _numeric_options() -> dict[str, OptionKey]:
    return {
        name: option
        for name, option in keys().items()  # type: ignore[misc]
        if option.kind in ("int", "float")
    }  # type: ignore[attr-defined]


def test_every_option_that_takes_a_number_has_a_rule_and_every_default_passes() -> None:
    """One place checks every option (``server.options``): an option added later with a number
    and no rule fails here, as does a default its own rule refuses."""
    numeric = _numeric_options()
    assert len(numeric) > 30
    missing = [name for name, option in numeric.items() if option.dest not in RULES]
    assert missing == []
    for name, option in keys().items():  # type: ignore[attr-defined]
        assert problem(option.dest, option.default) is None, name  # type: ignore[attr-defined]
    assert [key for key, spec in APP_KEYS.items() if spec.kind in ("int", "float") and key not in APP_RULES] == []


def test_the_values_of_the_issue_are_refused_all_at_once_one_line_each(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--hls-segment 0`` and ``-5`` and ``--hls-window 0`` printed an 8-frame traceback,
    ``--rtmp-port 99999`` listened on 34463, ``--idle-timeout -1`` was accepted, ``--http-port -5``
    turned HTTP off, and a file's errors came one at a time: now every problem of the command
    line and of the file, one line each, exit code 2."""
    path = write(tmp_path, "hls-window = 0\nrtmp-prot = 1\n[apps.live]\nqueue = 0\n")
    code = main(
        [
            "serve",
            "--hls-segment",
            "-5",
            "--rtmp-port",
            "99999",
            "--idle-timeout",
            "-1",
            "--http-port",
            "-5",
            "--gop-cache",
            "many",
            "--config",
            path,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        "arcly-trio: --rtmp-port 99999: a port is 0-65535 (0 picks a free one)",
        "arcly-trio: --http-port -5: a port is 0-65535 (0 picks a free one), or -1 for off",
        "arcly-trio: --hls-segment -5: a duration in seconds, from 0.5 to 60",
        "arcly-trio: --gop-cache many: not an integer; a whole number, 0 or more (0: off)",
        "arcly-trio: --idle-timeout -1: a duration in seconds, 0 or more (0: never reap)",
        f"arcly-trio: {path}:1: hls-window: a whole number, at least 1, not 0",
        f"arcly-trio: {path}:2: rtmp-prot: unknown key (did you mean 'rtmp-port'?)",
        f"arcly-trio: {path}:4: apps.live.queue: a whole number, at least 1, not 0",
    ]
    assert main(["serve", "--hls-segment", "0"]) == 2
    assert capsys.readouterr().err == "arcly-trio: --hls-segment 0: a duration in seconds, from 0.5 to 60\n"
    assert main(["serve", "--https-port", "8443", "--tls-cert", "c.pem"]) == 2
    assert capsys.readouterr().err == "arcly-trio: --https-port 8443: needs --tls-cert and --tls-key\n"


def test_on_demand_recording_without_a_recording_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--record-on-demand"]) == 2
    assert capsys.readouterr().err == "arcly-trio: --record-on-demand: needs --record DIR (the recording directory)\n"
    path = tmp_path / "arcly.toml"
    path.write_text("record-on-demand = true\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert "--record-on-demand: needs --record DIR" in capsys.readouterr().err
    args = resolve_args(build_parser(), ["serve", "--record", str(tmp_path), "--record-on-demand"])
    assert args.record_on_demand and args.record == str(tmp_path)


def test_an_application_name_error_says_an_application() -> None:
    with pytest.raises(InvalidStreamName, match="an application name may hold only"):
        check_name("a b", "application name")
    with pytest.raises(InvalidStreamName, match="a stream name may hold only"):
        check_name("a b")


def _value_text(option: OptionKey) -> st.SearchStrategy[str]:
    """Command-line text for a number option: in and around its range, odd floats, not numbers."""
    numbers = st.one_of(st.integers(-70000, 70000), st.sampled_from([0, 1, -1, 65535, 65536, 2**40]))
    if option.kind == "float":
        return st.one_of(
            numbers.map(str),
            st.floats(allow_nan=True, allow_infinity=True).map(repr),
            st.floats(-10, 100).map(repr),
            st.sampled_from(["1e3", "-0.0", "0.001", "x", ""]),
        )
    return st.one_of(numbers.map(str), st.sampled_from(["1.5", "x", "0x10", " 7", ""]))


@st.composite
def _option_values(draw: st.DrawFn) -> tuple[OptionKey, str]:
    options = _numeric_options()
    option = options[draw(st.sampled_from(sorted(options)))]
    return option, draw(_value_text(option))


@settings(max_examples=300, deadline=None)
@given(_option_values())
def test_any_value_of_any_number_option_is_usable_or_refused_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, found: tuple[OptionKey, str]
) -> None:
    """Over every option that takes a number and any text for it: either the value is accepted
    and the server can be built from it (no traceback later: ``--hls-segment 0`` used to pass
    the parser and crash in the HLS service) and a port is a port; or ``serve`` exits with code 2
    and one line that names the option, never a traceback. The configuration file takes the
    same values and refuses the same ones (one set of checks)."""
    option, text = found
    argv = ["serve", f"--{option.name}={text}"]
    try:
        args = resolve_args(build_parser(), argv)
    except ConfigError as exc:
        refused = True
        assert len(exc.problems) == 1 and exc.problems[0].startswith(f"--{option.name} "), exc.problems
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            assert main(argv) == 2
        assert stderr.getvalue() == f"arcly-trio: {exc.problems[0]}\n"
    else:
        refused = False
        build_runtime(args)
        value = getattr(args, option.dest)
        if option.name.endswith("-port"):
            assert (
                value == -1
                and option.default == -1
                or 0 <= value <= 65535
                or (
                    option.name in ("http-port", "webrtc-port", "srt-port", "rtsp-port") and value == -1
                )  # on by default, -1 = off
            )
        assert not isinstance(value, float) or math.isfinite(value)
    # The file: the same value, as TOML would hold it, is refused exactly when the command line refuses it.
    try:
        toml_value: object = int(text) if option.kind == "int" else float(text)
    except ValueError:
        return  # not a number: a TOML file cannot hold it as one
    if option.kind == "int" and text.strip() != str(toml_value):
        return  # " 7" is 7 for Python, and no integer literal in TOML
    import tomli_w

    path = tmp_path_factory.mktemp("values") / "arcly.toml"
    path.write_text(tomli_w.dumps({option.name: toml_value}))
    try:
        resolve_args(build_parser(), ["serve", "--config", str(path)])
    except ConfigError as exc:
        assert refused, (text, exc.problems)
        assert len(exc.problems) == 1, exc.problems
        assert exc.problems[0].startswith((f"{path}:1: {option.name}: ", f"--{option.name} ")), exc.problems
    else:
        assert not refused, text


def _toml_default(option: OptionKey) -> str:
    """How docs/config.md shows an option's default: as TOML would write it (``none``: unset)."""
    value = option.default
    if value is None:
        return "none"
    if option.kind == "workers":
        return str(value)  # a number, or "auto"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[]" if not value else repr(value)
    return repr(value)


def test_the_docs_show_every_default_as_the_file_takes_it(tmp_path: Path) -> None:
    """docs/config.md showed ``workers`` with the default ``"1"`` (a string: the parser's, for
    ``auto``), which the file refuses (``workers = "1"`` is not a number)."""
    docs = (ROOT / "docs" / "config.md").read_text()
    for name, option in keys().items():  # type: ignore[attr-defined]
        row = re.search(rf"^\| `{re.escape(name)}` \| [^|]+ \| ([^|]+) \|", docs, re.M)
        assert row, name
        shown = row.group(1).strip().strip("`")
        assert shown == _toml_default(option), (name, shown)
        if shown != "none":  # the default, written in a file, is taken
            text = f"{name} = {shown}\n"
            assert load(write(tmp_path, text), keys()).options, name  # type: ignore[arg-type]
    example = (ROOT / "examples" / "arcly.toml").read_text()
    assert "# lag-budget = 0\n" not in example  # 0 evicts at the first dropped frame: it is not "never"


async def test_a_reload_with_wrong_values_keeps_the_configuration_and_logs_every_problem_on_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "arcly.toml"
    path.write_text('http-port = -1\nrtmp-port = 0\nrtsp-port = -1\nhost = "127.0.0.1"\n')
    argv = ["serve", "--config", str(path)]
    runtime = build_runtime(resolve_args(build_parser(), argv))
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.engine.serve)
        path.write_text('http-port = -1\nrtmp-port = 99999\nhost = "127.0.0.1"\nidle-timeout = -1\n')
        assert not await reload(runtime, argv)
        nursery.cancel_scope.cancel()
    (line,) = [r.getMessage() for r in caplog.records if "reload" in r.getMessage()]
    assert "\n" not in line
    assert f"{path}:2: rtmp-port: a port is 0-65535 (0 picks a free one), not 99999; {path}:4: idle-timeout: " in line


def test_the_cli_and_the_config_file_pass_the_batch_interval(tmp_path: Path) -> None:
    from arcly_trio.server.build import app_specs
    from arcly_trio.server.cli import build_parser, resolve_args

    args = resolve_args(build_parser(), ["serve", "--batch-interval", "0.1", "--http-port", "-1"])
    assert app_specs(args)["live"].batch_interval == 0.1
    config = tmp_path / "arcly.toml"
    config.write_text("batch-interval = 0.05\n[apps.live]\n[apps.studio]\nbatch-interval = 0.2\n")
    specs = app_specs(resolve_args(build_parser(), ["serve", "--config", str(config)]))
    assert (specs["live"].batch_interval, specs["studio"].batch_interval) == (0.05, 0.2)
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(ValueError, match="batch.interval"):
            app_specs(resolve_args(build_parser(), ["serve", "--batch-interval", bad]))
