"""The resolved options of ``arcly-trio serve`` as one typed, immutable object.

:class:`Settings` is built once (:meth:`Settings.of`) from what :func:`~.arguments.resolve_args`
gives (the command line over the configuration file over the defaults, each value already
checked by :mod:`.options`), and then passed around instead of an ``argparse.Namespace``: each
field is the option of the same name (``--rtmp-port`` is :attr:`Settings.rtmp_port`; ``arcly-trio
serve --help`` says what each does), plus :attr:`Settings.app_tables`, the configuration file's
``[apps.NAME]`` tables. The secrets (tokens, signing secrets) may come from a file or the
environment: :meth:`Settings.with_secrets` reads them once into the fields.

Error policy: :meth:`Settings.of` raises ``TypeError`` for an option it does not know (a new
option added to the parser but not here: a bug the tests catch); :meth:`Settings.with_secrets`
raises ``SystemExit`` with a message when a secret file cannot be read or is empty (see
:func:`read_secret`). Values are not checked again here.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["Settings", "read_secret", "SECRETS", "NOT_SETTINGS"]

SECRETS = (
    ("publish_token", "ARCLY_PUBLISH_TOKEN"),
    ("play_token", "ARCLY_PLAY_TOKEN"),
    ("sign_secret", "ARCLY_SIGN_SECRET"),
    ("publish_sign_secret", "ARCLY_PUBLISH_SIGN_SECRET"),
    ("api_token", "ARCLY_API_TOKEN"),
)
"""Each secret option and its environment variable (its file option is ``NAME_file``)."""

NOT_SETTINGS = frozenset({"command", "config", "worker_dir", "worker_index", "worker_count"})
"""Fields that are not the server's configuration (a reload does not compare them)."""


def read_secret(value: str | None, path: str | None, env: str) -> str | None:
    """A secret from the command line, else the first line of a file, else the environment.

    Raises ``SystemExit`` with a clear message if the file cannot be read or is empty.
    """
    if value:
        return value
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                secret = file.readline().strip()
        except OSError as exc:
            raise SystemExit(f"arcly-trio: cannot read the secret file {path}: {exc.strerror}") from None
        if not secret:
            raise SystemExit(f"arcly-trio: the secret file {path} is empty")
        return secret
    return os.environ.get(env) or None


@attrs.frozen
class Settings:
    """Every option of ``arcly-trio serve`` (see the module docstring); the defaults are the
    command line's."""

    command: str = "serve"
    config: str | None = None
    host: str = "0.0.0.0"
    rtmp_port: int = 1935
    http_port: int = 8080
    hls: bool = True
    hls_variant: str = "ll"
    hls_muxed: bool = False
    hls_segment: float = 2.0
    hls_window: int = 6
    hls_max_mib: float = 64.0
    dvr_window: float = 0.0
    record: str | None = None
    record_format: str = "fmp4"
    record_segment: float = 60.0
    record_max_age: float = 0.0
    record_max_bytes: int = 0
    record_on_demand: bool = False
    apps: list[str] | None = None
    gop_cache: int = 1024
    subscriber_queue: int = 256
    lag_budget: int | None = None
    takeover: str = "reject"
    reconnect_grace: float = 0.0
    max_publish_bitrate: int = 50000000
    batch_interval: float = 0.0
    idle_timeout: float = 30.0
    max_publishers: int = 1000
    max_publishers_per_ip: int = 8
    publish_start_timeout: float = 10.0
    publish_token: str | None = None
    publish_token_file: str | None = None
    play_token: str | None = None
    play_token_file: str | None = None
    sign_secret: str | None = None
    sign_secret_file: str | None = None
    publish_sign_secret: str | None = None
    publish_sign_secret_file: str | None = None
    sign_actions: str = "publish,play"
    on_publish: str | None = None
    on_play: str | None = None
    on_event: str | None = None
    hook_timeout: float = 3.0
    hook_fail_open: bool = False
    api_token: str | None = None
    api_token_file: str | None = None
    metrics_per_stream: bool = False
    audit: str | None = None
    audit_max_mib: float = 10.0
    audit_backups: int = 5
    rtmps_port: int = -1
    https_port: int = -1
    http2: bool = True
    http2_cleartext: bool = False
    http_session_hub: bool = True
    tls_cert: str | None = None
    tls_key: str | None = None
    max_connections: int = 4096
    max_idle_per_ip: int = 32
    max_connections_per_ip: int = 0
    setup_timeout: float = 30.0
    connection_idle_timeout: float = 60.0
    write_timeout: float = 30.0
    max_ingest_memory: float = 256.0
    max_pulls: int = 256
    auth_max_delay: float = 2.0
    rtsp_port: int = 8554
    rtsp_udp_ports: str = ""
    rtsps_port: int = -1
    rtsp_max_sessions_per_address: int = 64
    webrtc_port: int = 8189
    srt_port: int = 8890
    srt_latency: int = 120
    srt_passphrase: str | None = None
    webrtc_host: list[str] = attrs.Factory(list)
    webrtc_transports: str = "udp,tcp"
    ice_server: list[str] = attrs.Factory(list)
    heap_trim_interval: float = 10.0
    push: list[str] = attrs.Factory(list)
    pull: list[str] = attrs.Factory(list)
    pull_idle: float = 10.0
    source: list[str] = attrs.Factory(list)
    ingest_udp: list[str] = attrs.Factory(list)
    ingest_udp_idle: float = 5.0
    workers: str = "1"
    cluster: str | None = None
    node_id: str | None = None
    public_host: str | None = None
    cluster_ttl: float = 10.0
    worker_dir: str | None = None
    worker_index: str | None = None
    worker_count: str | None = None
    demo: bool = False
    shutdown_grace: float = 4.0
    log_level: str = "info"
    app_tables: Mapping[str, Mapping[str, Any]] = attrs.Factory(dict)
    """The configuration file's ``[apps.NAME]`` tables, by application name."""

    @classmethod
    def of(cls, options: Settings | argparse.Namespace) -> Settings:
        """The settings of resolved options (``options`` itself if it is already settings);
        ``TypeError`` for an option that is not a field. Options the namespace lacks keep the
        field's default."""
        if isinstance(options, Settings):
            return options
        values = dict(vars(options))
        unknown = sorted(set(values) - set(attrs.fields_dict(cls)))
        if unknown:
            raise TypeError(f"options that are not settings: {', '.join(unknown)}")
        if values.get("app_tables") is None:  # no configuration file
            values.pop("app_tables", None)
        return cls(**values)

    def with_secrets(self) -> Settings:
        """These settings with every secret read from its file or environment variable
        (``SystemExit`` if a secret file cannot be read or is empty)."""
        values = self.as_dict()
        return attrs.evolve(
            self, **{name: read_secret(values[name], values[f"{name}_file"], env) for name, env in SECRETS}
        )

    def as_dict(self) -> dict[str, Any]:
        """Every field by name (shallow)."""
        return attrs.asdict(self, recurse=False)

    def configuration(self) -> dict[str, Any]:
        """The fields that are the server's configuration (not ``command``, ``config`` or the
        supervisor's), by name: what a reload compares."""
        return {name: value for name, value in self.as_dict().items() if name not in NOT_SETTINGS}
