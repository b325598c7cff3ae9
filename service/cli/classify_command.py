"""Classify audio files offline with the model's activity head: every window (10 s by default) of every file
gets a label, the class probabilities, a microphone health state with its reasons, and its level.

It runs the daemon's own analysis (`Analyser.analyse_audio`, what the gRPC Classify call runs on an upload):
the same model loading, window length, activity decisions (quiet / unknown), health checks and drift, and
the daemon's custom sounds (its library beside the store, or --sounds DIR; read here, never changed;
docs/sounds.md), so a file gives here what Classify gives for it. Settings come from the daemon's config (--config FILE.toml,
ROOMTONE_* variables), overridden by the options below.

Text output: one line per window, `PATH @ START-ENDs: LABEL (P)  HEALTH (reasons)  LEVEL dBFS  top: ...`,
then `  sounds: NAME SCORE at START-END s, ...` when custom sounds were detected (where in the window, seconds).
With --json: one JSON object per window per line (JSON Lines): `path`, `start_s`, `end_s`, and the fields of
the Classify response's `Window` message under their proto names (label, label_kind, probabilities,
health_state, health_reasons, health_scores, rms_dbfs, sounds).

Exit status: 0 when every file was classified; 2 when an input is unusable (missing, empty, undecodable,
shorter than 1 s) or the config/model is: the message names it, and the other files are still classified."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_USAGE = 0, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `classify` options."""
    parser.add_argument("inputs", nargs="+", metavar="FILE", help="audio files (WAV, FLAC, OGG), any rate and channel count")
    parser.add_argument("--json", action="store_true", help="print one JSON object per window (JSON Lines)")
    parser.add_argument("--model", help="model file with an activity head (default: the daemon's, models/roomtone.pt)")
    parser.add_argument("--config", metavar="FILE.toml", help="daemon config whose pipeline, health and activity "
                                                               "settings to use (see docs/daemon.md)")
    parser.add_argument("--window-s", type=float, help="window length in seconds (default: pipeline.window_s, 10)")
    parser.add_argument("--backend", choices=("auto", "onnx", "torch"), help="what runs the model (default: pipeline.backend)")
    parser.add_argument("--compute-device", help="torch device: auto, cpu, cuda, cuda:N (default: pipeline.device)")
    parser.add_argument("--top", type=int, default=3, help="probabilities shown per window in text output")
    parser.add_argument("--sounds", metavar="DIR", help="custom-sound library to detect (default: the daemon's, "
                                                        "beside its store; sounds.path)")
    parser.add_argument("--no-sounds", action="store_true", help="do not detect custom sounds")


def window_dict(path: str, window) -> dict:
    """One window as JSON: the file, its start/end in seconds, and the Classify response's fields."""
    from google.protobuf.json_format import MessageToDict

    from service.api.grpc_server import window_to_pb

    fields = MessageToDict(window_to_pb(window), preserving_proto_field_name=True,
                           always_print_fields_with_no_presence=True)
    for key in ("window_id", "mic_id", "start_unix_ms", "end_unix_ms", "embedding"):
        fields.pop(key, None)
    return {"path": path, "start_s": window.start_unix_ms / 1000, "end_s": window.end_unix_ms / 1000, **fields}


def window_line(path: str, window, top: int) -> str:
    """One window as a line of text."""
    proba = window.probabilities
    label = window.label or "-"
    if window.label in proba:
        label = f"{window.label} ({proba[window.label]:.2f})"
    best = sorted(proba.items(), key=lambda item: -item[1])[:max(top, 0)]
    reasons = f" ({'; '.join(window.health_reasons)})" if window.health_reasons else ""
    line = (f"{path} @ {window.start_unix_ms / 1000:g}-{window.end_unix_ms / 1000:g}s: {label}  "
            f"{window.health_state}{reasons}  {window.rms_dbfs:.1f} dBFS")
    if best:
        line += "  top: " + ", ".join(f"{name} {p:.2f}" for name, p in best)
    if window.sounds:
        line += "  sounds: " + ", ".join(f"{m.name} {m.score:.3f} at {m.start_s:.1f}-{m.end_s:.1f} s" for m in window.sounds)
    return line


def offline_sounds(config, analyser, path: Path | None):
    """The daemon's custom-sound library opened read-only for the loaded model (None when there is none)."""
    from functools import partial

    from encoder.file_digest import file_sha256
    from service.analysis.model_runner import column_dim, column_maps_available, sound_maps
    from service.analysis.sound_library import SoundLibrary

    path = path or (config.sounds_path if config.sounds.enabled else None)
    if path is None or not (path / "library.json").is_file():
        return None
    embedder = analyser.runner.embedder
    return SoundLibrary(path, file_sha256(config.model), embedder.embed, analyser.sample_rate,
                        analyser.bundle.embedding_dim, read_only=True,
                        embed_columns=partial(sound_maps, embedder) if column_maps_available(embedder) else None,
                        column_dim=column_dim(embedder))


def run(args: argparse.Namespace) -> int:
    """Classify every file; unusable files are reported and skipped."""
    from encoder.audio import AudioError
    from encoder.model_file import ModelFileError
    from service.analysis.analyser import Analyser
    from service.config import ConfigError, load_config
    from service.analysis.serving_model import BackendError, load_serving_model

    overrides: dict = {}
    if args.model:
        overrides["model"] = args.model
    pipeline = {key: value for key, value in (("window_s", args.window_s), ("backend", args.backend),
                                              ("device", args.compute_device)) if value is not None}
    if pipeline:
        overrides["pipeline"] = pipeline
    try:
        config = load_config(args.config, overrides)
        model = load_serving_model(config.model, config.pipeline.backend, config.pipeline.device)
        analyser = Analyser(model, config.health, windows=config.pipeline.windows,
                            activity=config.activity)
    except (ConfigError, ModelFileError, BackendError, ValueError, OSError) as exc:
        print(f"roomtone classify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.no_sounds:
        try:
            analyser.sounds = offline_sounds(config, analyser, Path(args.sounds) if args.sounds else None)
        except ValueError as exc:  # an unreadable library (SoundError)
            print(f"roomtone classify: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if model.head is None:
        print(f"roomtone classify: note: {config.model} has no activity head, so windows get health only "
              "(add one with `roomtone train-head`)", file=sys.stderr)
    status = EXIT_OK
    for name in args.inputs:
        try:
            data = Path(name).read_bytes()
            windows = analyser.analyse_audio(data)
        except OSError as exc:
            print(f"roomtone classify: {name}: {exc.strerror or exc}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        except AudioError as exc:
            print(f"roomtone classify: {name}: {str(exc).removeprefix('uploaded audio: ')}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        for window in windows:
            print(json.dumps(window_dict(name, window)) if args.json else window_line(name, window, args.top),
                  flush=True)
    return status
