"""``arcly-trio serve --config arcly.toml``: the configuration file (TOML, read with ``tomllib``).

The file's top-level keys are the command line's options, spelled as on the command line
without the dashes in front (``rtmp-port = 1935``, ``hls-variant = "ll"``, ``push = [...]`` for a
repeatable option, ``hls = false`` for ``--no-hls``). They are *derived from the argparse
parser* (:func:`option_keys`): every option ``serve`` has is a key, with its type, choices and
default, so an option added later is in the file at once. ``[apps.NAME]`` tables configure one
application each (:data:`APP_KEYS`: GOP cache, queue, lag budget, takeover, reconnect grace,
publish bitrate limit, HLS, recording, and its own authorization); every application named by ``--app`` or by a table
exists.

Precedence: the parser's defaults, then the file, then the options given on the command line
(:func:`resolve`). Checking happens before anything starts: a key that is not an option, a
value of the wrong type, a choice that is not one of the choices, a value out of its range
(the same checks as the command line's, :mod:`.options`: ``rtmp-port = 99999`` is refused as
``--rtmp-port 99999`` is), an application name that is not valid: every problem of the file is
reported at once, one ``FILE:LINE: key: what is wrong`` line each (:class:`ConfigError`), and
``serve`` exits with code 2. :func:`command_line_problems` does the same for the options given
on the command line.

Error policy: :func:`load` raises :class:`ConfigError` (an ``ArclyError`` and a ``ValueError``) for anything wrong in
the file, including a file that cannot be read or is not TOML; nothing else. A wrong value of a
key that holds a secret or a URL (:data:`SECRET_KEYS`) is named by its type, never quoted (URLs
are shown redacted).
"""

from __future__ import annotations

import argparse
import difflib
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from arcly_trio.core.errors import ArclyError, InvalidStreamName
from arcly_trio.core.keys import check_name
from arcly_trio.server.options import app_problem, problem

__all__ = [
    "ConfigError",
    "ConfigFile",
    "OptionKey",
    "APP_KEYS",
    "option_keys",
    "load",
    "resolve",
    "explicit_options",
    "command_line_problems",
]

#: Options that are not configuration (the file itself, the supervisor's hidden ones).
NOT_IN_FILE = frozenset({"config", "worker_dir", "worker_index", "worker_count", "help"})


class ConfigError(ArclyError, ValueError):
    """What is wrong with the options: every problem found (:attr:`problems`), one line each,
    ``FILE:LINE: key: problem`` for the configuration file, ``--option value: problem`` for the
    command line."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


@attrs.frozen
class OptionKey:
    """One key of the file: its command-line option, where argparse keeps it, what it takes."""

    name: str
    dest: str
    kind: str
    """``int``, ``float``, ``str``, ``bool``, ``list`` (of strings) or ``workers``."""
    choices: tuple[Any, ...] | None = None
    default: Any = None
    help: str = ""


@attrs.frozen
class AppKey:
    """One key of an ``[apps.NAME]`` table."""

    kind: str
    field: str
    """The :class:`~arcly_trio.kernel.spec.AppSpec` field, or ``auth:...`` for authorization."""
    help: str
    choices: tuple[Any, ...] | None = None


APP_KEYS: Mapping[str, AppKey] = {
    "gop-cache": AppKey("int", "gop_cache_frames", "frames of the current GOP kept for instant start (0 = off)"),
    "gop-cache-bytes": AppKey("int", "gop_cache_bytes", "bytes of the current GOP kept at most (0 = no cap)"),
    "queue": AppKey("int", "subscriber_queue", "frames a player may have queued before it drops to a keyframe"),
    "lag-budget": AppKey("int", "lag_budget", "evict a player that dropped more frames than this (omit: never)"),
    "takeover": AppKey(
        "str", "takeover", "a second publisher is refused (reject) or takes over (replace)", ("reject", "replace")
    ),
    "grace": AppKey("float", "reconnect_grace", "seconds players wait for a publisher to come back"),
    "batch-interval": AppKey(
        "float", "batch_interval", "seconds frames are gathered between writes to each viewer (0: at once)"
    ),
    "max-publish-bitrate": AppKey(
        "int", "max_publish_bitrate", "the most a publisher may send, in bits/s, with 4 s of burst (0 = no limit)"
    ),
    "hls": AppKey("bool", "hls", "package this application's streams as HLS"),
    "hls-variant": AppKey("str", "hls_variant", "ts, fmp4 or ll", ("ts", "fmp4", "ll")),
    "hls-muxed": AppKey("bool", "hls_muxed", "fmp4/ll: one rendition carrying video and audio (no DASH)"),
    "dvr-window": AppKey("float", "dvr_window", "seconds of the live HLS playlist players can seek back in (0: off)"),
    "record": AppKey("bool", "record", "record this application's streams always (needs the record directory)"),
    "record-max-age": AppKey("float", "record_max_age", "delete this application's recordings older than this (s)"),
    "record-max-bytes": AppKey("int", "record_max_bytes", "keep at most this many bytes of its recordings"),
    "publish-token": AppKey("str", "auth:publish_token", "publishers of this application need ?token="),
    "play-token": AppKey("str", "auth:play_token", "players of this application need ?token="),
    "sign-secret": AppKey("str", "auth:sign_secret", "signed URLs of this application use this secret"),
    "publish-sign-secret": AppKey(
        "str", "auth:publish_sign_secret", "a ?sign= of this application made with this secret publishes"
    ),
    "on-publish": AppKey("str", "auth:on_publish", "the publish hook of this application"),
    "on-play": AppKey("str", "auth:on_play", "the play hook of this application"),
}


def _kind(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        return "bool"
    if isinstance(action, argparse._AppendAction):
        return "list"
    if action.dest == "workers":
        return "workers"
    kind = getattr(action.type, "kind", None)  # options.integer, options.number
    if isinstance(kind, str):
        return kind
    if action.type is int:
        return "int"
    if action.type is float:
        return "float"
    return "str"


def option_keys(serve: argparse.ArgumentParser) -> dict[str, OptionKey]:
    """Every key the file may have, from the ``serve`` parser's options (module docstring)."""
    keys: dict[str, OptionKey] = {}
    for action in serve._actions:
        longs = [flag for flag in action.option_strings if flag.startswith("--") and not flag.startswith("--no-")]
        if not longs or action.dest in NOT_IN_FILE or action.help == argparse.SUPPRESS:
            continue
        name = longs[0][2:]
        choices = tuple(action.choices) if action.choices is not None else None
        keys[name] = OptionKey(name, action.dest, _kind(action), choices, action.default, action.help or "")
    return keys


#: Keys whose values are secrets or URLs that may carry one: a wrong value is never quoted back.
SECRET_KEYS = frozenset(
    {
        "publish-token",
        "play-token",
        "sign-secret",
        "api-token",
        "srt-passphrase",
        "on-publish",
        "on-play",
        "on-event",
        "push",
        "pull",
        "source",
        "cluster",
    }
)


def _type_problem(kind: str, value: Any, choices: tuple[Any, ...] | None, *, secret: bool = False) -> str | None:
    """Why ``value`` is not a ``kind`` (``None`` if it is); a ``secret`` value is described by
    its type only (the message goes to the log and the audit log)."""
    if kind == "bool":
        ok = isinstance(value, bool)
        want = "true or false"
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        want = "an integer"
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        want = "a number"
    elif kind == "list":
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        want = "a list of strings"
    elif kind == "workers":
        ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 1) or value == "auto"
        want = 'a number of at least 1, or "auto"'
    else:
        ok = isinstance(value, str)
        want = "a string"
    if not ok:
        return f"expected {want}, not {'a ' + type(value).__name__ if secret else repr(value)}"
    if choices is not None and value not in choices:
        return f"expected one of {', '.join(map(str, choices))}, not {value!r}"
    return None


@attrs.frozen
class ConfigFile:
    """A checked configuration file: option values (by argparse ``dest``) and application tables."""

    path: str
    options: Mapping[str, Any]
    apps: Mapping[str, Mapping[str, Any]]
    """Per application: its keys (as in :data:`APP_KEYS`) and their values."""


_TABLE = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$")


def _line_of(text: str, table: str, key: str) -> int:
    """The line where ``key`` is set in ``table`` (``""``: the top level); 0 if not found."""
    current = ""
    pattern = re.compile(r"^\s*(?:\"" + re.escape(key) + r"\"|'" + re.escape(key) + r"'|" + re.escape(key) + r")\s*=")
    for number, line in enumerate(text.splitlines(), 1):
        header = _TABLE.match(line)
        if header:
            current = ".".join(part.strip().strip("\"'") for part in header.group(1).split("."))
            if current == table and not key:
                return number
            continue
        if current == table and pattern.match(line):
            return number
    return 0


def load(path: str, keys: Mapping[str, OptionKey]) -> ConfigFile:
    """Read and check ``path`` (see the module docstring); :class:`ConfigError` with every
    problem found if it is wrong."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
        document = tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _toml_line(str(exc))
        raise ConfigError(f"{path}:{line}: not valid TOML: {exc}") from None

    problems: list[tuple[int, str]] = []

    def fail(table: str, key: str, problem: str) -> None:
        where = f"{table}.{key}" if table else key
        line = _line_of(text, table, key)
        problems.append((line, f"{path}:{line}: {where}: {problem}"))

    def value_problem(
        kind: str, value: Any, choices: tuple[Any, ...] | None, secret: bool, check: Callable[[Any], str | None]
    ) -> str | None:
        wrong = _type_problem(kind, value, choices, secret=secret)
        if wrong:
            return wrong
        wrong = check(value)
        if wrong and not secret and not isinstance(value, list):
            return f"{wrong}, not {value!r}"
        return wrong

    options: dict[str, Any] = {}
    apps: dict[str, dict[str, Any]] = {}
    for name, value in document.items():
        if name == "apps":
            if not isinstance(value, dict):
                fail("", name, "expected [apps.NAME] tables")
                continue
            for app, table in value.items():
                try:
                    check_name(app, "application name")
                except InvalidStreamName as exc:
                    line = _line_of(text, f"apps.{app}", "")
                    problems.append((line, f"{path}:{line}: apps.{app}: {exc}"))
                    continue
                if not isinstance(table, dict):
                    fail("apps", app, "expected a table of application settings")
                    continue
                apps[app] = {}
                for key, item in table.items():
                    spec = APP_KEYS.get(key)
                    if spec is None:
                        fail(f"apps.{app}", key, "unknown key (application keys: " + ", ".join(APP_KEYS) + ")")
                        continue
                    wrong = value_problem(
                        spec.kind, item, spec.choices, key in SECRET_KEYS, lambda item, key=key: app_problem(key, item)
                    )  # type: ignore[misc]
                    if wrong:
                        fail(f"apps.{app}", key, wrong)
                        continue
                    apps[app][key] = item
            continue
        option = keys.get(name)
        if option is None:
            close = difflib.get_close_matches(name.replace("_", "-"), list(keys), n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]!r}?)" if close else " (see docs/config.md)"
            fail("", name, f"unknown key{hint}")
            continue
        wrong = value_problem(
            option.kind, value, option.choices, name in SECRET_KEYS, lambda item, dest=option.dest: problem(dest, item)
        )  # type: ignore[misc]
        if wrong:
            fail("", name, wrong)
            continue
        options[option.dest] = str(value) if option.kind == "workers" else value
    if problems:
        raise ConfigError([message for _, message in sorted(problems, key=lambda found: found[0])])
    return ConfigFile(path, options, apps)


def _toml_line(message: str) -> int | str:
    found = re.search(r"line (\d+)", message)
    return int(found.group(1)) if found else "?"


def explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The ``dest`` of every option given on the command line ``argv`` (a parse with every
    default suppressed: what is left was given)."""
    serve = serve_parser(parser)
    saved = [(action, action.default) for action in serve._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        namespace = parser.parse_args(argv)
    finally:
        for action, default in saved:
            action.default = default
    return set(vars(namespace)) - {"command"}


def serve_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``serve`` command's parser of the command line's ``parser`` (``LookupError``: none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["serve"]  # type: ignore[no-any-return]
    raise LookupError("the parser has no serve command")


def _shown(value: Any) -> str:
    """A command-line value as the user likely typed it (``0``, not ``0.0``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def command_line_problems(parser: argparse.ArgumentParser, args: argparse.Namespace, given: set[str]) -> list[str]:
    """What is wrong with the options given on the command line (``given``: their ``dest``),
    one line each: ``--rtmp-port 99999: a port is 0-65535``; a secret is never quoted."""
    found = []
    for name, option in option_keys(serve_parser(parser)).items():
        if option.dest not in given:
            continue
        value = getattr(args, option.dest, None)
        for item in value if isinstance(value, list) else [value]:
            wrong = problem(option.dest, item)
            if wrong:
                shown = "" if name in SECRET_KEYS else f" {_shown(item)}"
                found.append(f"--{name}{shown}: {wrong}")
    return found


def resolve(
    parser: argparse.ArgumentParser, argv: Sequence[str], args: argparse.Namespace, config: ConfigFile | None
) -> argparse.Namespace:
    """``args`` (parsed from ``argv``) with the file's values for every option not given on the
    command line (defaults < file < command line)."""
    if config is None:
        return args
    given = explicit_options(parser, argv)
    merged = argparse.Namespace(**vars(args))
    for dest, value in config.options.items():
        if dest not in given:
            setattr(merged, dest, list(value) if isinstance(value, list) else value)
    merged.app_tables = config.apps
    return merged
