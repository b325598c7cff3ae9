"""The daemon's one typed configuration: defaults < TOML file < ROOMTONE_* environment < command line.

Every key is a field of a frozen dataclass below; `load_config` validates the merged result at start and
raises ConfigError naming the bad key (unknown key, wrong type, bad value or missing path).
Environment variables: ``ROOMTONE_<KEY>`` for top-level keys (``ROOMTONE_DATA_DIR``, ``ROOMTONE_MODEL``)
and ``ROOMTONE_<SECTION>__<KEY>`` for section keys (``ROOMTONE_METRICS__PORT=9500``).
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from service.similarity_index import SimilarityIndexConfig

#: The repository root (the bundled model and assets are found relative to it).
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO_ROOT / "models" / "roomtone.pt"
DEMO_CLIP = Path(__file__).resolve().parent / "assets" / "demo.flac"
SOURCE_KINDS = ("auto", "device", "file", "demo")
ENV_PREFIX = "ROOMTONE_"
#: ROOMTONE_* variables of the command-line clients (service/grpc_client.py), not daemon config keys.
CLIENT_ENV = ("ROOMTONE_ADDRESS", "ROOMTONE_CA", "ROOMTONE_TOKEN_FILE", "ROOMTONE_CLIENT_CERT", "ROOMTONE_CLIENT_KEY")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class MicConfig:
    """One microphone: where its audio comes from and under which id it is reported."""

    id: str = "mic0"
    kind: str = "auto"  # auto: the default input device, or the demo recording when there is none
    device: str | int | None = None  # sounddevice input by name (substring) or index; None = default input
    path: str | None = None  # audio file for kind = "file"
    channels: int = 1  # input channels to capture (each is health-checked; the embedding uses their mean)
    realtime: bool = True  # file sources: pace at real time (True) or read as fast as the pipeline takes
    loop: bool = False  # file sources: start again at the end (the demo source always loops)
    block_s: float = 0.1  # capture block length in seconds


@dataclass(frozen=True)
class StoreConfig:
    """Where windows and events are stored and how long they are kept."""

    path: str | None = None  # SQLite file; None = <data_dir>/roomtone.db
    max_age_days: float = 30.0  # delete windows/events older than this
    max_size_mb: float = 1024.0  # delete the oldest windows while the database is larger than this
    retention_interval_s: float = 300.0  # how often the retention thread runs


@dataclass(frozen=True)
class GrpcConfig:
    """The gRPC API listener."""

    enabled: bool = True
    address: str = "127.0.0.1:50051"  # host:port; port 0 picks a free port
    # A non-loopback address needs TLS (tls_cert + tls_key) AND client authentication: a bearer token read
    # from token_file, or client certificates signed by client_ca (mTLS). The token itself never sits in
    # the config, so the start-up log line (which prints the config) cannot leak it.
    tls_cert: str | None = None  # PEM server certificate (chain)
    tls_key: str | None = None  # PEM private key of tls_cert
    client_ca: str | None = None  # PEM CA bundle: clients must present a certificate it signed (mTLS)
    token_file: str | None = None  # file holding the bearer token clients send as "authorization: Bearer <token>"
    max_upload_bytes: int = 16 * 1024 * 1024  # Classify/FindSimilar uploads above this: RESOURCE_EXHAUSTED
    max_streams: int = 64  # concurrent StreamEvents clients; more: RESOURCE_EXHAUSTED


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus /metrics HTTP listener."""

    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = 9464  # 0 picks a free port
    # A non-loopback address needs HTTPS with client certificates (mTLS): all three of these.
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None


@dataclass(frozen=True)
class PipelineConfig:
    """Windowing, batching and queue sizes of the processing pipeline."""

    window_s: float = 10.0
    hop_s: float = 10.0
    queue_size: int = 16  # bounded queue length between stages (windows); beyond it windows are dropped
    batch_size: int = 8  # most windows embedded together (across microphones)
    device: str = "auto"  # torch device for the model: auto (cuda when present), cpu, cuda, cuda:N
    max_windows: int | None = None  # stop the daemon after this many stored windows (tests, demos)


@dataclass(frozen=True)
class DaemonConfig:
    """Everything `roomtone run` needs."""

    model: str = str(DEFAULT_MODEL)
    data_dir: str = "var"  # relative paths resolve against the working directory
    log_level: str = "INFO"
    log_format: str = "json"  # json (one object per line) or text
    mics: tuple[MicConfig, ...] = (MicConfig(),)
    store: StoreConfig = field(default_factory=StoreConfig)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    similarity: SimilarityIndexConfig = field(default_factory=SimilarityIndexConfig)  # FindSimilar's index
    health: dict[str, Any] = field(default_factory=dict)  # HealthConfig thresholds (encoder/signal_checks.py)

    @property
    def store_path(self) -> Path:
        """The SQLite file actually used."""
        return Path(self.store.path) if self.store.path else Path(self.data_dir) / "roomtone.db"


# --- building typed values from plain data, naming the key on every error ---------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked (and, for strings from env/CLI, parsed) as type ``tp``."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(o) for o in options if o is not type(None))}, "
                          f"got {value!r}")
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(tp)
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(item, item_type, f"{key}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        _key_type, value_type = typing.get_args(tp)
        return {str(k): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - schema bug


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """An instance of the config dataclass ``cls`` from a plain dict; unknown keys and bad types are errors."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key(s) {[where + k for k in unknown]}; "
                          f"known keys{' in ' + prefix if prefix else ''} are {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a dataclass's own range checks (SimilarityIndexConfig), which name the key
        raise ConfigError(str(exc)) from None


def _to_plain(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def config_to_dict(config: DaemonConfig) -> dict[str, Any]:
    """The config as plain data (None values kept), e.g. for the start-up log line."""
    return _to_plain(config)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of plain config dicts; tables merge, everything else (lists included) replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_toml(path: str | Path) -> dict[str, Any]:
    """The plain contents of a TOML config file; ConfigError names the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: no such file")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML ({exc})") from None


def env_overrides(environ: typing.Mapping[str, str]) -> dict[str, Any]:
    """Plain overrides from ``ROOMTONE_*`` variables (``ROOMTONE_SECTION__KEY`` for section keys)."""
    sections = {"store", "grpc", "metrics", "pipeline", "similarity"}
    top = {f.name for f in fields(DaemonConfig)} - sections - {"mics", "health"}
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in CLIENT_ENV:
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if "__" in rest:
            section, key = rest.split("__", 1)
            if section not in sections and section != "health":
                raise ConfigError(f"environment variable {name}: unknown config section {section!r}; "
                                  f"sections are {sorted(sections | {'health'})}")
            out.setdefault(section, {})[key] = value
        elif rest in top:
            out[rest] = value
        else:
            raise ConfigError(f"environment variable {name}: unknown config key {rest!r}; "
                              f"top-level keys are {sorted(top)} (use ROOMTONE_SECTION__KEY for sections)")
    return out


def validate(config: DaemonConfig) -> DaemonConfig:
    """Check values beyond their types (paths exist, ranges, unique ids); returns the config unchanged."""
    if not config.mics:
        raise ConfigError("mics: at least one microphone is needed")
    seen: set[str] = set()
    for i, mic in enumerate(config.mics):
        key = f"mics[{i}]"
        if not mic.id or any(c.isspace() for c in mic.id):
            raise ConfigError(f"{key}.id: must be a non-empty id without spaces, got {mic.id!r}")
        if mic.id in seen:
            raise ConfigError(f"{key}.id: duplicate microphone id {mic.id!r}")
        seen.add(mic.id)
        if mic.kind not in SOURCE_KINDS:
            raise ConfigError(f"{key}.kind: must be one of {list(SOURCE_KINDS)}, got {mic.kind!r}")
        if mic.kind == "file":
            if not mic.path:
                raise ConfigError(f"{key}.path: required when kind = \"file\"")
            if not Path(mic.path).is_file():
                raise ConfigError(f"{key}.path: no such file {mic.path}")
        if mic.channels < 1:
            raise ConfigError(f"{key}.channels: must be >= 1, got {mic.channels}")
        if not 0.005 <= mic.block_s <= 5:
            raise ConfigError(f"{key}.block_s: must be between 0.005 and 5 seconds, got {mic.block_s}")
    model = Path(config.model)
    if not model.is_file():
        raise ConfigError(f"model: no such model file {model} (train one with `roomtone train`)")
    p = config.pipeline
    if p.window_s <= 0 or p.hop_s <= 0:
        raise ConfigError(f"pipeline.window_s/hop_s: must be positive, got {p.window_s}/{p.hop_s}")
    if p.queue_size < 1:
        raise ConfigError(f"pipeline.queue_size: must be >= 1, got {p.queue_size}")
    if p.batch_size < 1:
        raise ConfigError(f"pipeline.batch_size: must be >= 1, got {p.batch_size}")
    if p.max_windows is not None and p.max_windows < 1:
        raise ConfigError(f"pipeline.max_windows: must be >= 1, got {p.max_windows}")
    if not (p.device in ("auto", "cpu", "cuda") or p.device.startswith("cuda:")):
        raise ConfigError(f"pipeline.device: must be auto, cpu, cuda or cuda:N, got {p.device!r}")
    if not 0 <= config.metrics.port <= 65535:
        raise ConfigError(f"metrics.port: must be 0..65535, got {config.metrics.port}")
    host, sep, port = config.grpc.address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"grpc.address: expected host:port, got {config.grpc.address!r}")
    _validate_exposure(config)
    if config.grpc.max_upload_bytes < 1 or config.grpc.max_streams < 1:
        raise ConfigError(f"grpc.max_upload_bytes/max_streams: must be >= 1, got "
                          f"{config.grpc.max_upload_bytes}/{config.grpc.max_streams}")
    if config.store.max_age_days <= 0 or config.store.max_size_mb <= 0 or config.store.retention_interval_s <= 0:
        raise ConfigError("store.max_age_days/max_size_mb/retention_interval_s: must be positive")
    if config.log_format not in ("json", "text"):
        raise ConfigError(f"log_format: must be json or text, got {config.log_format!r}")
    if config.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log_level: must be DEBUG, INFO, WARNING or ERROR, got {config.log_level!r}")
    try:
        from encoder.signal_checks import HealthConfig

        HealthConfig.from_dict(dict(config.health))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"health: {exc}") from None
    store_dir = config.store_path.parent
    if store_dir.exists() and not store_dir.is_dir():
        raise ConfigError(f"store.path: parent {store_dir} is not a directory")
    return config


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything reachable
        return False


def _validate_exposure(config: DaemonConfig) -> None:
    """Listeners beyond loopback must be encrypted and authenticated; the files they name must exist."""
    g, m = config.grpc, config.metrics
    for key, value in (("grpc.tls_cert", g.tls_cert), ("grpc.tls_key", g.tls_key), ("grpc.client_ca", g.client_ca),
                       ("grpc.token_file", g.token_file), ("metrics.tls_cert", m.tls_cert),
                       ("metrics.tls_key", m.tls_key), ("metrics.client_ca", m.client_ca)):
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"{key}: no such file {value}")
    if bool(g.tls_cert) != bool(g.tls_key):
        raise ConfigError("grpc.tls_cert/tls_key: give both (the server certificate and its private key) or neither")
    if g.token_file and not Path(g.token_file).read_text().strip():
        raise ConfigError(f"grpc.token_file: {g.token_file} is empty")
    if g.client_ca and not g.tls_cert:
        raise ConfigError("grpc.client_ca: client certificates (mTLS) need grpc.tls_cert and grpc.tls_key too")
    host = g.address.rpartition(":")[0]
    if g.enabled and not is_loopback(host) and not (g.tls_cert and (g.token_file or g.client_ca)):
        raise ConfigError(
            f"grpc.address: {g.address} is reachable from other machines; refusing to serve the API there without "
            f"TLS and client authentication: set grpc.tls_cert and grpc.tls_key, plus grpc.token_file (bearer "
            f"token) or grpc.client_ca (client certificates), or listen on 127.0.0.1")
    if bool(m.tls_cert) != bool(m.tls_key) or (m.client_ca and not m.tls_cert):
        raise ConfigError("metrics.tls_cert/tls_key/client_ca: HTTPS needs both tls_cert and tls_key")
    if m.enabled and not is_loopback(m.address) and not (m.tls_cert and m.client_ca):
        raise ConfigError(
            f"metrics.address: {m.address} is reachable from other machines; refusing to serve /metrics there "
            f"without HTTPS and client certificates: set metrics.tls_cert, metrics.tls_key and metrics.client_ca "
            f"(Prometheus: scrape_configs tls_config cert_file/key_file), or listen on 127.0.0.1")


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: typing.Mapping[str, str] | None = None,
) -> DaemonConfig:
    """The validated config from defaults, the TOML file, ``ROOMTONE_*`` env vars and CLI ``overrides``.

    ``overrides`` is plain nested data (``{"pipeline": {"hop_s": 5}}``). ``data_dir`` defaults to
    ``$ROOMTONE_DATA_DIR`` or ``./var``.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = _merge(data, read_toml(path))
    data = _merge(data, env_overrides(os.environ if environ is None else environ))
    data = _merge(data, overrides or {})
    config = build(DaemonConfig, data)
    return validate(config)


def with_mics(config: DaemonConfig, mics: tuple[MicConfig, ...]) -> DaemonConfig:
    """The same config with other microphones (e.g. ``auto`` resolved to a device or the demo)."""
    return replace(config, mics=mics)
