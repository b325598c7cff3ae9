"""The daemon's one typed configuration: defaults < TOML file < ROOMTONE_* environment < command line.

Each component gets its own frozen section object, passed whole to its consumer: `StoreConfig` to the
event store, `GrpcConfig` to the gRPC server and event bus, `MetricsConfig` to /metrics, `PipelineConfig`
to the pipeline, `MicConfig` to each source, `HealthConfig` (encoder/signal_checks.py: the offline tools
share it) to the analyser, `SimilarityIndexConfig` to the similarity index. The schema is pydantic (every
section derives from `Section`, encoder/config_schema.py):
every number is finite (``allow_inf_nan=False``: NaN, inf and 1e400 are refused) and bounded (``ge``/``le``
on its field, the unit in its description), unknown keys are refused, and `load_config` raises ConfigError
naming the key (``store.max_age_days: ...``, ``ROOMTONE_GRPC__MAX_UPLOAD_BYTES: ...``); `roomtone run` then
exits 2, which systemd's ``RestartPreventExitStatus=2`` does not restart. A default is written once, on
its field; docs/daemon.md's key table is generated from these fields (`reference_table`, test-checked).

Environment variables: ``ROOMTONE_<KEY>`` for top-level keys (``ROOMTONE_DATA_DIR``, ``ROOMTONE_MODEL``)
and ``ROOMTONE_<SECTION>__<KEY>`` for section keys (``ROOMTONE_METRICS__PORT=9500``); the sections are
derived from `DaemonConfig`'s fields, so a new section is reachable from the environment with no extra code.

Adding a section (mqtt, web, clips, sounds, ...):

1. Write ``class MqttConfig(Section)`` below with one ``Field`` per key: the default, bounds with
   ``ge``/``le``/``gt`` (numbers must be finite and bounded), and a description ending in the unit,
   e.g. ``keepalive_s: float = Field(60.0, ge=1, le=3600, description="MQTT keepalive (s)")``.
   Rules that span keys go in a ``model_validator(mode="after")`` raising ValueError naming the key.
2. Add ``mqtt: MqttConfig = MqttConfig()`` to `DaemonConfig`. TOML ``[mqtt]`` and
   ``ROOMTONE_MQTT__<KEY>`` now work; checks that need the file system go in `validate`.
3. Pass ``config.mqtt`` whole to the component; never copy a default into the consumer.
4. Regenerate the table in docs/daemon.md: ``python -m service.config`` (tests/service/test_config.py
   fails until the docs agree).

Why pydantic and not pydantic-settings' sources: the layering below is 40 lines and keeps two things the
settings sources do not give: an unknown ``ROOMTONE_*`` variable is an error (a misspelt variable must not
silently do nothing), and the TOML path is chosen at run time (``--config``) with errors naming the file.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from encoder.config_schema import ConfigError, Section, build
from encoder.signal_checks import HealthConfig
from encoder.windows import WindowSpec
from service.daemon_vocabulary import (CLIENT_ENV, DEFAULT_GRPC_ADDRESS, DEFAULT_METRICS_ADDRESS, DEFAULT_METRICS_PORT,
                                ID_PATTERN, ID_RULE, RESERVED_LABELS, TOPIC_LEVEL, device_id)

#: The repository root (the bundled model and assets are found relative to it).
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO_ROOT / "models" / "roomtone.pt"
DEMO_CLIP = Path(__file__).resolve().parent / "assets" / "demo.flac"
ENV_PREFIX = "ROOMTONE_"
#: Largest TCP port.
MAX_PORT = 65535
#: Longest finite retention age (100 years); beyond it, say inf.
MAX_AGE_DAYS = 36500.0
#: Most microphones one daemon takes: 256 at the default hop are 25.6 windows/s, about one of two cores at the
#: measured CPU per window (docs/performance.md, "Scale on one machine"; bench/many_mics.py measures it).
MAX_MICS = 256


def library_path(store_path: str | Path) -> Path:
    """The library folder beside a store file: ``roomtone.db`` -> ``roomtone.sounds/``."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.stem + ".sounds")


#: faiss's k-means warns below this many training points per list.
MIN_TRAINING_ROWS_PER_LIST = 39


class SimilarityIndexConfig(Section):
    """When search switches from the exact scan to the approximate IVF-SQ8 index, how that index searches,
    and where it keeps its lists."""

    exact_below: int = Field(100_000, ge=MIN_TRAINING_ROWS_PER_LIST, le=10**12,
                             description="stored windows of one embedding dimension below which FindSimilar is an "
                                         "exact scan; from there on a faiss IVF-SQ8 index (approximate; docs/api.md) "
                                         "(windows)")
    nlist: int = Field(1024, ge=1, le=1_000_000, description="IVF lists, about sqrt(windows); `exact_below` and "
                                                             "`train_rows` must be >= 39 x `nlist` (lists)")
    nprobe: int = Field(16, ge=1, le=1_000_000, description="IVF lists visited per query, at most `nlist`: more = "
                                                            "higher recall, slower (lists)")
    rerank: int = Field(4, ge=0, le=1000, description="candidates per wanted neighbour re-scored exactly from the "
                                                      "stored vectors; 0 = report 8-bit approximate distances")
    train_rows: int = Field(100_000, ge=MIN_TRAINING_ROWS_PER_LIST, le=10**9,
                            description="rows sampled (seeded) to train the index once, when `exact_below` is "
                                        "crossed (windows)")
    threads: int = Field(1, ge=1, le=256, description="faiss threads per query or training (the window path keeps "
                                                      "the other cores)")
    lists_in_file: bool = Field(True, description="keep the IVF index's lists (SQ8 codes and ids, ~272 B per window) "
                                                  "in a file beside the store, `<store>.similarity-<dim>-<pid>-<n>.ivf`, "
                                                  "mapped in only while a search or an add runs: the index then holds "
                                                  "~2 B of memory per window; at close the index is saved beside the "
                                                  "store (`<store>.similarity-<dim>.lists` and `.index`) and read back "
                                                  "at the next start, which adds only the windows stored since; false "
                                                  "= the lists in memory, rebuilt at every start")
    warm_at_start: bool = Field(True, description="build the index from the stored windows in a background thread "
                                                  "at start, or read back the one saved at the last close and add the "
                                                  "newer windows (log line `similarity index ready` with its kind, rows "
                                                  "and seconds), so the first FindSimilar does not pay for it; false = "
                                                  "build it on the first FindSimilar")

    @model_validator(mode="after")
    def _lists_fit_the_rows(self) -> SimilarityIndexConfig:
        if self.nprobe > self.nlist:
            raise ValueError(f"similarity.nprobe: must be between 1 and nlist ({self.nlist}), got {self.nprobe}")
        least = MIN_TRAINING_ROWS_PER_LIST * self.nlist
        if self.exact_below < least or self.train_rows < least:
            raise ValueError(f"similarity.exact_below: exact_below and train_rows must be at least "
                             f"{MIN_TRAINING_ROWS_PER_LIST} x nlist = {least} (faiss needs that many rows to train "
                             f"{self.nlist} lists), got {self.exact_below} and {self.train_rows}")
        return self


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` split and checked (port 0..65535); ValueError otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("expected host:port")
    if int(port) > MAX_PORT:
        raise ValueError(f"port {port} is out of range 0..{MAX_PORT} (0 = any free port)")
    return host, int(port)


class MicConfig(Section):
    """One microphone: where its audio comes from and under which id it is reported."""

    id: str = Field("mic0", description=f"microphone id: the `mic` label in metrics, the id in gRPC, the clip folder "
                                        f"and MQTT topic level; unique, {ID_RULE}")
    kind: Literal["auto", "device", "file", "demo"] = Field(
        "auto", description="`auto` (default input, else the demo), `device`, `file`, `demo`")
    device: str | int | None = Field(
        None, description="input device by name substring or PortAudio index (`--list-devices`); none = default input")
    path: str | None = Field(None, description="audio file for `kind = \"file\"` (WAV, FLAC, OGG)")
    channels: int = Field(1, ge=1, le=32, description="input channels to capture from a device (files use all theirs)")
    realtime: bool = Field(True, description="file sources: pace at recording speed (false: as fast as possible)")
    loop: bool = Field(False, description="file sources: start again at the end (the demo always loops)")
    block_s: float = Field(0.1, ge=0.005, le=5.0, description="capture block length of devices and real-time "
                           "files; a file read as fast as possible hands on whole reads (s)")
    area: str | None = Field(None, min_length=1, max_length=100,
                             description="Home Assistant area suggested for this microphone's device (MQTT "
                                         "discovery `suggested_area`, e.g. \"Kitchen\"); none = no suggestion")


    @field_validator("id")
    @classmethod
    def _id_rule(cls, value: str) -> str:
        if not re.match(ID_PATTERN, value):
            raise ValueError(f"microphone id {value!r}: use {ID_RULE} (it names clip folders, metric labels and "
                             "MQTT topics)")
        return value


class StoreConfig(Section):
    """Where windows and events are stored, how long they are kept and how often that is enforced."""

    path: str | None = Field(None, description="SQLite file (WAL mode); none = `<data_dir>/roomtone.db`")
    # inf is allowed here and means "no age limit": the size limit still holds.
    max_age_days: float = Field(30.0, gt=0, allow_inf_nan=True,
                                description=f"delete windows and events older than this, up to {MAX_AGE_DAYS:.0f}; "
                                            "`inf` = keep forever (the size limit still holds) (days)")
    max_size_mb: float = Field(1024.0, ge=0.0625, le=1e7,
                               description="delete the oldest windows while the database is larger (MiB)")
    retention_interval_s: float = Field(300.0, ge=1.0, le=86400.0, description="how often retention runs (s)")
    check_interval_s: float = Field(3600.0, ge=60.0, le=604800.0,
                                    description="how often the file's integrity is checked in the background (SQLite "
                                                "quick_check on its own connection, table by table; also once at "
                                                "start, as soon as the daemon serves) (s)")

    @field_validator("max_age_days")
    @classmethod
    def _age_is_a_number(cls, value: float) -> float:
        if math.isnan(value) or (math.isfinite(value) and value > MAX_AGE_DAYS):
            raise ValueError(f"must be a number of days up to {MAX_AGE_DAYS:.0f}, or inf (keep forever), got {value}")
        return value

    @property
    def max_bytes(self) -> int:
        """The size limit in bytes."""
        return int(self.max_size_mb * 1024 * 1024)


class GrpcConfig(Section):
    """The gRPC API listener (and the event bus behind StreamEvents)."""

    enabled: bool = Field(True, description="start the gRPC API")
    address: str = Field(DEFAULT_GRPC_ADDRESS, description="listen address `host:port`; port 0..65535, 0 = any free port")
    # A non-loopback address needs TLS (tls_cert + tls_key) AND client authentication: a bearer token read
    # from token_file, or client certificates signed by client_ca (mTLS). The token itself never sits in
    # the config, so the start-up log line (which prints the config) cannot leak it.
    tls_cert: str | None = Field(None, description="PEM server certificate (chain): serve gRPC over TLS")
    tls_key: str | None = Field(None, description="PEM private key of `tls_cert`")
    client_ca: str | None = Field(None, description="PEM CA: require client certificates it signed (mTLS)")
    token_file: str | None = Field(None, description="file holding the bearer token every call must send")
    max_upload_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024,
                                  description="largest Classify/FindSimilar upload; more: RESOURCE_EXHAUSTED (bytes)")
    max_streams: int = Field(64, ge=1, le=1024,
                             description="concurrent StreamEvents clients; more: RESOURCE_EXHAUSTED (streams)")
    max_concurrent_reads: int = Field(
        1, ge=1, le=64, description="ListEvents pages read and built at once (Python work that holds the GIL); more "
                                    "wait up to 30 s or their deadline, so heavy readers cannot starve the pipeline "
                                    "(requests)")
    max_concurrent_uploads: int = Field(
        2, ge=1, le=16, description="Classify/FindSimilar uploads decoded and analysed at once (each up to 128 MiB of "
                                    "samples); more wait up to 30 s, then RESOURCE_EXHAUSTED (uploads)")

    @field_validator("address")
    @classmethod
    def _address_has_a_port(cls, value: str) -> str:
        split_address(value)
        return value

    @property
    def port(self) -> int:
        """The configured port (0 = any free port)."""
        return split_address(self.address)[1]


class MetricsConfig(Section):
    """The Prometheus /metrics HTTP listener."""

    enabled: bool = Field(True, description="serve `/metrics`")
    address: str = Field(DEFAULT_METRICS_ADDRESS, min_length=1, description="listen address")
    port: int = Field(DEFAULT_METRICS_PORT, ge=0, le=MAX_PORT, description="listen port; 0 = any free port")
    # A non-loopback address needs HTTPS with client certificates (mTLS): all three of these.
    tls_cert: str | None = Field(None, description="PEM certificate: serve HTTPS")
    tls_key: str | None = Field(None, description="PEM private key of `tls_cert`")
    client_ca: str | None = Field(None, description="PEM CA: require client certificates it signed")
    max_connections: int = Field(16, ge=1, le=256,
                                 description="connections served at once (a thread each); more are answered 503 and closed "
                                             "at once (connections)")
    idle_timeout_s: float = Field(5.0, ge=0.5, le=300.0,
                                  description="a connection idle this long (TLS handshake, request) is closed (s)")


class PipelineConfig(Section):
    """Windowing, batching and queue sizes of the processing pipeline."""

    window_s: float = Field(10.0, ge=0.25, le=600.0,
                            description="window length; the model must accept it (checked by a dry run at start) (s)")
    hop_s: float = Field(10.0, ge=0.1, le=600.0, description="hop between window starts; smaller = overlapping (s)")
    queue_size: int = Field(16, ge=1, le=4096,
                            description="length of the analysis and store queues, at least 2 per microphone; beyond "
                                        "it windows are dropped (windows)")
    stagger: bool = Field(True, description="spread the window ends of realtime microphones evenly over the hop "
                                            "(each skips up to one hop of audio at start), so many microphones do "
                                            "not finish a window at the same moment; false = windows end together")
    batch_size: int = Field(8, ge=1, le=256, description="most windows embedded together, across microphones (windows)")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$",
                        description="torch device for the model: `auto`, `cpu`, `cuda`, `cuda:N`")
    backend: Literal["auto", "onnx", "torch"] = Field(
        "auto", description="what runs the model: `onnx` (ONNX Runtime on the CPU, torch never imported; needs "
                            "the graph `roomtone export` writes beside the model file), `torch`, or `auto`: torch "
                            "when the device is CUDA (or `auto` with an NVIDIA GPU and torch installed), else onnx")
    max_windows: int | None = Field(None, ge=1, le=10**12,
                                    description="stop (exit 0) after storing this many windows; none = run on (windows)")

    @property
    def windows(self) -> WindowSpec:
        """``window_s`` and ``hop_s`` as the one window spec the windower, analyser, custom sounds and web page take."""
        return WindowSpec(self.window_s, self.hop_s)


class WebConfig(Section):
    """The web page's listener (service/web/, docs/web.md)."""

    enabled: bool = Field(True, description="serve the web page")
    address: str = Field("127.0.0.1", min_length=1, description="listen address; beyond loopback it needs `tls_cert`, "
                                                              "`tls_key` and `token_file` or `client_ca`")
    port: int = Field(9480, ge=0, le=MAX_PORT, description="listen port; 0 = any free port")
    # Beyond loopback: HTTPS (tls_cert + tls_key) AND authentication, a token read from token_file (browsers
    # send it as the password of HTTP Basic, scripts as "Authorization: Bearer <token>") or client
    # certificates signed by client_ca (mTLS). Kept clips are served only under this rule.
    tls_cert: str | None = Field(None, description="PEM server certificate (chain): serve HTTPS")
    tls_key: str | None = Field(None, description="PEM private key of `tls_cert`")
    client_ca: str | None = Field(None, description="PEM CA: require client certificates it signed (mTLS)")
    token_file: str | None = Field(None, description="file holding the token every request must send")
    max_pages: int = Field(64, ge=1, le=1024, description="open live pages (SSE streams); more get 503 (pages)")
    max_connections: int = Field(128, ge=2, le=16384,
                                 description="connections open at once (live pages included); one more is answered "
                                             "503 and closed, so a flood cannot take the daemon's file descriptors "
                                             "(connections)")
    header_timeout_s: float = Field(10.0, ge=0.5, le=300.0,
                                    description="a connection that has not sent its request headers (TLS handshake "
                                                "included) within this is closed (s)")
    idle_timeout_s: float = Field(30.0, ge=1.0, le=3600.0,
                                  description="a kept-alive connection idle between requests this long is closed (s)")
    hosts: tuple[str, ...] = Field((), max_length=64,
                                   description="host names the page is reached by besides loopback and `address` "
                                               "(e.g. `roomtone.home`, a reverse proxy's name); requests naming any "
                                               "other host in `Host` get 403 (DNS rebinding)")

    @model_validator(mode="after")
    def _pages_fit(self) -> WebConfig:
        if self.max_pages >= self.max_connections:
            raise ValueError(f"web.max_pages: must be below web.max_connections ({self.max_connections}), got "
                             f"{self.max_pages}: live pages are connections too")
        return self

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+", name):
                raise ValueError(f"{name!r} is not a host name or address (letters, digits, '.', '-'; "
                                 "IPv6 in brackets; no port, no scheme)")
        return value


class ClipsConfig(Section):
    """Clip retention (service/store/clips.py): whether and how windows' audio is kept. Off by default.

    PRIVACY: a clip is a recording of the room; speech in it is the voice of people at home. Enable it
    knowingly, keep it short, and never expose the web page beyond loopback without TLS and a token.
    """

    keep: Literal["none", "events", "all"] = Field(
        "none", description="`none`; `events`: windows that show an activity or health change or a custom sound; `all` "
                            "(clips record people at home: opt in knowingly)")
    codec: Literal["flac", "opus"] = Field("flac", description="`flac` (lossless, ~270 kB per 10 s) or `opus` "
                                                               "(~30 kB per 10 s)")
    dir: str | None = Field(None, description="where clips are written; none = `<data_dir>/clips`")
    max_age_days: float = Field(7.0, gt=0, le=MAX_AGE_DAYS, description="delete clips older than this (days)")
    max_size_mb: float = Field(2048.0, ge=0.0625, le=1e7, description="delete the oldest clips while they take more (MiB)")
    queue_size: int = Field(32, ge=1, le=1024,
                            description="clips waiting to be encoded; beyond it a clip is dropped and logged (clips)")
    min_free_mb: float = Field(512.0, ge=0.0, le=1e7,
                               description="free space the clips leave on their disk for the store: below it the "
                                           "oldest clips are deleted, and a clip that would not fit is dropped, "
                                           "counted and logged (MiB)")

    @property
    def enabled(self) -> bool:
        """Whether any clip is kept."""
        return self.keep != "none"


class SessionConfig(Section):
    """How windows are merged into activity sessions (service/analysis/sessions.py)."""

    enabled: bool = Field(True, description="track activity sessions (stored, `ListSessions`, StreamEvents, MQTT)")
    min_duration_s: float = Field(20.0, ge=0, le=86400.0,
                                  description="a label must hold this long (first window start to last window end) "
                                              "before its session starts (s)")
    gap_tolerance_s: float = Field(30.0, ge=0, le=86400.0,
                                   description="an open session survives this long without a window of its activity (s)")
    ignored_labels: tuple[str, ...] = Field(RESERVED_LABELS,
                                            description="labels that never start or extend a session")


#: Characters a topic level may not contain (wildcards and the null character).
_TOPIC_PATTERN = r"^[^#+\x00/]([^#+\x00]*[^#+\x00/])?$"


class MqttConfig(Section):
    """The MQTT broker roomtone publishes states, events and Home Assistant discovery to (docs/mqtt.md)."""

    host: str | None = Field(None, description="broker host name or address; none = MQTT off")
    port: int = Field(1883, ge=1, le=MAX_PORT, description="broker port (8883 is usual with TLS)")
    username: str | None = Field(None, min_length=1, description="user name for the broker")
    password_file: str | None = Field(None, description="file holding the password (never the password itself)")
    tls_ca: str | None = Field(None, description="PEM CA bundle: connect with TLS, verify the broker against it")
    client_id: str | None = Field(None, min_length=1, max_length=128,
                                  description="MQTT client id; none = `roomtone-<hostname>-<base_topic>`")
    base_topic: str = Field("roomtone", pattern=_TOPIC_PATTERN,
                            description="states, events and availability live under it (no wildcards)")
    discovery_prefix: str = Field("homeassistant", pattern=_TOPIC_PATTERN, description="Home Assistant's discovery prefix")
    discovery: bool = Field(True, description="publish Home Assistant discovery (when `host` is set)")
    keepalive_s: int = Field(30, ge=5, le=3600,
                             description="the broker publishes the last will after 1.5 x this without traffic (s)")
    queue_size: int = Field(1000, ge=1, le=100_000,
                            description="messages waiting for the broker; beyond it they are dropped and counted (messages)")
    reconnect_min_s: float = Field(1.0, gt=0, le=3600.0, description="first reconnect delay; doubles per failure (s)")
    reconnect_max_s: float = Field(60.0, gt=0, le=3600.0, description="longest reconnect delay (s)")
    error_log_interval_s: float = Field(60.0, gt=0, le=86400.0,
                                        description="log the last connection error at most once per interval (s)")

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(f"mqtt.reconnect_min_s: must not exceed reconnect_max_s ({self.reconnect_max_s}), "
                             f"got {self.reconnect_min_s}")
        if self.password_file is not None and not self.username:
            raise ValueError("mqtt.password_file: needs mqtt.username too")
        return self

    @property
    def enabled(self) -> bool:
        """True when a broker is configured."""
        return bool(self.host)

    @property
    def effective_client_id(self) -> str:
        """The client id used: stable across restarts, so the broker replaces a dead session."""
        import socket

        return self.client_id or f"roomtone-{socket.gethostname()}-{re.sub(r'[^a-zA-Z0-9_-]', '_', self.base_topic)}"


class ActivityConfig(Section):
    """The activity decision after the head (service/analysis/activity.py): `quiet` and `unknown`."""

    # The quiet recordings of homesounds sit at -58..-45.5 dBFS and no clip with an activity is below -44.8
    # (bench/absence.py, docs/sounds.md).
    quiet_below_dbfs: float = Field(-45.0, ge=-200.0, le=0.0,
                                    description="a window whose RMS level is below this is `quiet` while its microphone's "
                                                "noise floor is not learnt yet, or always with quiet_relative off (dBFS)")
    # Relative quiet (service/analysis/level_floor.py): bench/quiet_levels.py measures it on level-shifted copies of the
    # labelled sets (docs/sounds.md).
    quiet_relative: bool = Field(True, description="decide `quiet` from each microphone's noise floor learnt from its "
                                                   "own recent window levels instead of quiet_below_dbfs alone")
    # A low percentile is the classic minimum-statistics noise floor; 0.1 % of a day of 10 s windows is 9
    # windows, so a few glitches do not drag it down. The margin is the one bench/quiet_levels.py finds
    # for it (12.5..12.75 dB meet the target on the labelled sets; they hold 12 dB of differently recorded
    # quiet rooms, where one microphone's quiet spans a few dB).
    quiet_floor_percentile: float = Field(0.1, ge=0.0, le=50.0,
                                          description="the noise floor is this percentile of the microphone's recent "
                                                      "window levels; 0 = the quietest (%)")
    quiet_margin_db: float = Field(12.6, ge=0.0, le=40.0,
                                   description="a window is `quiet` below its microphone's noise floor plus this (dB)")
    quiet_history_hours: float = Field(24.0, ge=0.1, le=24.0 * 14,
                                       description="recent window levels the noise floor is learnt from (h)")
    quiet_min_history_hours: float = Field(1.0, ge=0.0, le=24.0 * 14,
                                           description="until a microphone has this much history, quiet_below_dbfs "
                                                       "decides (h)")
    quiet_min_dbfs: float = Field(-90.0, ge=-200.0, le=0.0,
                                  description="lowest level the learnt quiet threshold may take (dBFS)")
    quiet_max_dbfs: float = Field(-30.0, ge=-200.0, le=0.0,
                                  description="highest level the learnt quiet threshold may take: a room louder than "
                                              "this is never `quiet` (dBFS)")
    # The highest threshold of the open-set test (bench/absence.py) that calls at most 10 % of the
    # known-class clips unknown; 0 turns `unknown` off.
    unknown_below: float = Field(0.7, ge=0.0, le=1.0,
                                 description="a head answer whose top probability is below this is `unknown` (probability)")

    @model_validator(mode="after")
    def _quiet_bounds_in_order(self) -> "ActivityConfig":
        if self.quiet_min_dbfs > self.quiet_max_dbfs:
            raise ValueError(f"activity.quiet_min_dbfs ({self.quiet_min_dbfs}) must not be above activity.quiet_max_dbfs "
                             f"({self.quiet_max_dbfs})")
        if self.quiet_min_history_hours > self.quiet_history_hours:
            raise ValueError(f"activity.quiet_min_history_hours ({self.quiet_min_history_hours}) must not be above "
                             f"activity.quiet_history_hours ({self.quiet_history_hours})")
        return self


class SoundsConfig(Section):
    """Custom sounds (service/analysis/sound_library.py, docs/sounds.md): where they are kept and how their thresholds
    are calibrated."""

    enabled: bool = Field(True, description="detect custom sounds on every live window and serve AddSound/ListSounds/RemoveSound/MarkNotThis")
    path: str | None = Field(None, description="library folder; none = beside the store (`roomtone.db` -> `roomtone.sounds/`)")
    max_sounds: int = Field(64, ge=1, le=64, description="most custom sounds (the sound name is a metrics label) (sounds)")
    alarms_per_hour: float = Field(1.0, gt=0.0, le=3600.0,
                                   description="false alarms per hour the calibrated threshold aims at on the store's windows (1/h)")
    calibration_hours: float = Field(24.0, ge=0.0, le=24.0 * 365,
                                     description="most recent stored windows the calibration scores, and how long their maps (log-Mel patch frames) are kept; 0 = examples only (h)")
    recalibrate_hours: float = Field(24.0, ge=0.0, le=24.0 * 365,
                                     description="recalibrate each sound's threshold against the store this often; 0 = only when added or marked (h)")


class DaemonConfig(Section):
    """Everything `roomtone run` needs: top-level keys, then one section per component."""

    model: str = Field(str(DEFAULT_MODEL), description="model file (encoder, feature config, optional activity head)")
    data_dir: str = Field("var", description="where the store lives unless `store.path` is set "
                                             "(relative paths resolve against the working directory)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="DEBUG, INFO, WARNING, ERROR")
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="`auto` (text on a terminal, JSON otherwise), `json` (one object per line) or `text`")
    mics: tuple[MicConfig, ...] = Field((MicConfig(),), min_length=1, max_length=MAX_MICS,
                                        description="the microphones (`[[mics]]` tables)")
    store: StoreConfig = StoreConfig()
    grpc: GrpcConfig = GrpcConfig()
    metrics: MetricsConfig = MetricsConfig()
    pipeline: PipelineConfig = PipelineConfig()
    similarity: SimilarityIndexConfig = SimilarityIndexConfig()
    health: HealthConfig = HealthConfig()
    web: WebConfig = WebConfig()
    clips: ClipsConfig = ClipsConfig()
    activity: ActivityConfig = ActivityConfig()
    sounds: SoundsConfig = SoundsConfig()


    sessions: SessionConfig = SessionConfig()
    mqtt: MqttConfig = MqttConfig()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _unique_mic_ids(self) -> DaemonConfig:
        seen: set[str] = set()
        for i, mic in enumerate(self.mics):
            if mic.id in seen:
                raise ValueError(f"mics[{i}].id: duplicate microphone id {mic.id!r}")
            seen.add(mic.id)
        return self

    @property
    def store_path(self) -> Path:
        """The SQLite file actually used."""
        return Path(self.store.path) if self.store.path else Path(self.data_dir) / "roomtone.db"

    @property
    def sounds_path(self) -> Path:
        """The custom-sound library folder actually used."""
        return Path(self.sounds.path) if self.sounds.path else library_path(self.store_path)


# --- layering and errors -------------------------------------------------------------------------------

def config_to_dict(config: BaseModel) -> dict[str, Any]:
    """The config as plain data (None values kept), e.g. for the start-up log line."""
    return config.model_dump(mode="json")


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of plain config dicts; tables merge, everything else (lists included) replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
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
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read ({exc.strerror})") from None


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def sections() -> dict[str, type]:
    """Section name -> its config class, derived from `DaemonConfig`'s fields."""
    return {name: f.annotation for name, f in DaemonConfig.model_fields.items() if _is_section(f.annotation)}


def _env_value(raw: str) -> Any:
    """An environment string; a JSON list (``[50, 60]``) for keys that hold several values."""
    if raw.strip().startswith("["):
        import json

        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def env_overrides(environ: typing.Mapping[str, str], origin: dict[str, str] | None = None) -> dict[str, Any]:
    """Plain overrides from ``ROOMTONE_*`` variables (``ROOMTONE_SECTION__KEY`` for section keys).

    ``origin``, when given, is filled with key -> variable name, so errors can name the variable.
    """
    known_sections = sections()
    top = {name for name in DaemonConfig.model_fields if name not in known_sections and name != "mics"}
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in CLIENT_ENV:
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if "__" in rest:
            section, key = rest.split("__", 1)
            if section not in known_sections:
                raise ConfigError(f"environment variable {name}: unknown config section {section!r}; "
                                  f"sections are {sorted(known_sections)}")
            out.setdefault(section, {})[key] = _env_value(value)
            dotted = f"{section}.{key}"
        elif rest in top:
            out[rest] = value
            dotted = rest
        else:
            raise ConfigError(f"environment variable {name}: unknown config key {rest!r}; "
                              f"top-level keys are {sorted(top)} (use ROOMTONE_SECTION__KEY for sections; "
                              f"microphones are configured in TOML or on the command line)")
        if origin is not None:
            origin[dotted] = name
    return out


def validate(config: DaemonConfig) -> DaemonConfig:
    """Checks the schema cannot make (files exist, listeners safe); returns the config unchanged."""
    for i, mic in enumerate(config.mics):
        if mic.kind == "file":
            if not mic.path:
                raise ConfigError(f"mics[{i}].path: required when kind = \"file\"")
            path = Path(mic.path)
            if not path.exists():
                raise ConfigError(f"mics[{i}].path: no such file {mic.path}")
            if not path.is_file():
                raise ConfigError(f"mics[{i}].path: {mic.path} is not a regular file (a FIFO, device or directory "
                                  f"cannot be read as a recording)")
    model = Path(config.model)
    if not model.is_file():
        raise ConfigError(f"model: no such model file {model} (train one with `roomtone train`)")
    _validate_exposure(config)
    _validate_mqtt(config)
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


def _check_listener(key: str, section: GrpcConfig | WebConfig, host: str, what: str) -> None:
    """A TLS-capable listener (gRPC, the web page): its files exist and pair up, and beyond loopback it has
    TLS plus authentication (a token or client certificates)."""
    for name in ("tls_cert", "tls_key", "client_ca", "token_file"):
        value = getattr(section, name)
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"{key}.{name}: no such file {value}")
    if bool(section.tls_cert) != bool(section.tls_key):
        raise ConfigError(f"{key}.tls_cert/tls_key: give both (the server certificate and its private key) or neither")
    if section.token_file and not Path(section.token_file).read_text().strip():
        raise ConfigError(f"{key}.token_file: {section.token_file} is empty")
    if section.client_ca and not section.tls_cert:
        raise ConfigError(f"{key}.client_ca: client certificates (mTLS) need {key}.tls_cert and {key}.tls_key too")
    if section.enabled and not is_loopback(host) and not (section.tls_cert and (section.token_file or section.client_ca)):
        raise ConfigError(
            f"{key}.address: {section.address} is reachable from other machines; refusing to serve {what} there "
            f"without TLS and client authentication: set {key}.tls_cert and {key}.tls_key, plus {key}.token_file "
            f"(bearer token) or {key}.client_ca (client certificates), or listen on 127.0.0.1")


def _validate_exposure(config: DaemonConfig) -> None:
    """Listeners beyond loopback must be encrypted and authenticated; the files they name must exist."""
    g, m = config.grpc, config.metrics
    _check_listener("grpc", g, g.address.rpartition(":")[0], "the API")
    _check_listener("web", config.web, config.web.address, "the web page (and any kept clips)")
    for key, value in (("metrics.tls_cert", m.tls_cert), ("metrics.tls_key", m.tls_key),
                       ("metrics.client_ca", m.client_ca)):
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"{key}: no such file {value}")
    if bool(m.tls_cert) != bool(m.tls_key) or (m.client_ca and not m.tls_cert):
        raise ConfigError("metrics.tls_cert/tls_key/client_ca: HTTPS needs both tls_cert and tls_key")
    if m.enabled and not is_loopback(m.address) and not (m.tls_cert and m.client_ca):
        raise ConfigError(
            f"metrics.address: {m.address} is reachable from other machines; refusing to serve /metrics there "
            f"without HTTPS and client certificates: set metrics.tls_cert, metrics.tls_key and metrics.client_ca "
            f"(Prometheus: scrape_configs tls_config cert_file/key_file), or listen on 127.0.0.1")


def check_mic_ids(mic_ids: list[str], config: MqttConfig) -> None:
    """ValueError naming a microphone id that cannot be a topic level or that clashes with another one's
    discovery id (ids become ``<base>/<mic>/state`` and ``<node>_<mic>``)."""
    seen: dict[str, str] = {}
    for mic in mic_ids:
        if "/" in mic or not TOPIC_LEVEL.match(mic):
            raise ValueError(f"mics: id {mic!r} cannot be an MQTT topic level (no '/', '+', '#'); rename it or "
                             f"turn MQTT off")
        node = device_id(config.base_topic, mic)
        if node in seen:
            raise ValueError(f"mics: ids {seen[node]!r} and {mic!r} map to the same Home Assistant id {node!r}")
        seen[node] = mic


def _validate_mqtt(config: DaemonConfig) -> None:
    """The files [mqtt] names exist; microphone ids can be topic levels and Home Assistant ids."""
    q = config.mqtt
    for key, value in (("mqtt.password_file", q.password_file), ("mqtt.tls_ca", q.tls_ca)):
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"{key}: no such file {value}")
    if q.enabled:
        try:
            check_mic_ids([mic.id for mic in config.mics], q)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


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
        data = merge(data, read_toml(path))
    origin: dict[str, str] = {}
    data = merge(data, env_overrides(os.environ if environ is None else environ, origin))
    data = merge(data, overrides or {})
    for key in _keys(overrides or {}):
        origin.pop(key, None)  # the command line won: it is not the variable's value that is wrong
    return validate(build(DaemonConfig, data, origin))


def _keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        out.extend(_keys(value, dotted) if isinstance(value, dict) else [dotted])
    return out


# --- the reference table in docs/daemon.md ---------------------------------------------------------------

def _range_of(info: Any) -> str:
    """``0 .. 65535``, ``> 0``, ``>= 1`` or empty, from a field's bounds."""
    bounds = {name: getattr(m, name) for m in info.metadata for name in ("ge", "le", "gt", "lt") if hasattr(m, name)}
    text = {k: str(v) if isinstance(v, int) else f"{v:g}" for k, v in bounds.items()}
    low = f"> {text['gt']}" if "gt" in text else (f">= {text['ge']}" if "ge" in text else "")
    high = text.get("le", "")
    if low.startswith(">=") and high:
        return f"{low[3:]} .. {high}"
    return ", ".join(part for part in (low, f"<= {high}" if high else "") if part)


def _unit_of(description: str) -> tuple[str, str]:
    """(meaning, unit) from a description ending in ``(unit)``."""
    match = re.fullmatch(r"(.*) \((s|ms|days|MiB|bytes|streams|windows|lists|connections|classes|uploads|messages|dBFS|dB|%|Hz|h|sounds|1/h|probability|fraction|full scale|samples|requests)\)", description)
    return (match.group(1), match.group(2)) if match else (description, "")


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, str) and value == str(DEFAULT_MODEL):
        return "`models/roomtone.pt`"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]`"
    return f"`{value}`" if isinstance(value, str) else str(value)


def reference_table() -> str:
    """The Markdown table of every scalar key of the pydantic sections: key, default, range, meaning."""
    rows = ["| key | default | range | unit | meaning |", "|---|---|---|---|---|"]

    def add(prefix: str, model: type[BaseModel]) -> None:
        for name, info in model.model_fields.items():
            if _is_section(info.annotation) or name == "mics":
                continue
            meaning, unit = _unit_of(info.description or "")
            rows.append(f"| `{prefix}{name}` | {_default_text(info.default)} | {_range_of(info)} | {unit} | {meaning} |")

    add("", DaemonConfig)
    add("[[mics]] ", MicConfig)
    for name, cls in sections().items():
        add(f"[{name}] ", cls)
    return "\n".join(rows)


if __name__ == "__main__":
    print(reference_table())
