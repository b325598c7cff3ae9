"""Check microphone health in audio files: every 10 s window of every file gets a state (ok, degraded,
faulty) and the reasons, from the signal checks in encoder/signal_checks.py (clipping, dropouts, dead
channel, DC offset, mains hum, stuck signal, NaN/Inf; thresholds and units in docs/mic-health.md).

Text output: one line per window, `PATH @ OFFSETs: STATE` and one indented line per reason.
With --json: one JSON object per window per line (JSON Lines) with path, offset_s, duration_s, channels,
state, reasons, scores (every check's score) and flags. Channels are checked separately (a silent
channel beside live ones is a dead channel). Files are resampled to --sample-rate first.

Exit status: 0 when every file was checked, faults or not; 2 when an input is unusable (missing, empty,
undecodable, NaN/Inf in a file, shorter than --min-s): the message names it and the other files are
still checked. Threshold overrides:
--config FILE.json with HealthConfig keys (unknown keys are an error).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `health` options."""
    parser.add_argument("inputs", nargs="+", metavar="FILE", help="audio files (WAV, FLAC, OGG), any channel count")
    parser.add_argument("--json", action="store_true", help="print one JSON object per window (JSON Lines)")
    parser.add_argument("--window-s", type=float, default=10.0, help="window length in seconds")
    parser.add_argument("--min-s", type=float, default=1.0, help="shortest trailing window checked, in seconds")
    parser.add_argument("--sample-rate", type=int, default=16000, help="rate the audio is resampled to (Hz)")
    parser.add_argument("--config", metavar="FILE.json", help="HealthConfig threshold overrides as a JSON object")


def _config(path: str | None):
    """HealthConfig from a JSON file of overrides (defaults when no file); ValueError names a bad key."""
    from encoder.signal_checks import HealthConfig
    from service.config import build

    if path is None:
        return HealthConfig()
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of HealthConfig keys")
    return build(HealthConfig, data)


def run(args: argparse.Namespace) -> int:
    """Print the health of every window of every input; 2 on unusable input or config."""
    from encoder.audio import AudioError, load_audio
    from encoder.signal_checks import assess_window
    from encoder.windows import WindowSpec, window_spans

    try:
        config = _config(args.config)
    except (OSError, ValueError) as exc:
        print(f"roomtone health: bad --config: {exc}", file=sys.stderr)
        return 2
    counts = {"ok": 0, "degraded": 0, "faulty": 0}
    unusable = 0
    for path in args.inputs:
        try:
            waveform, rate = load_audio(path, args.sample_rate)
        except AudioError as exc:
            print(f"roomtone health: {exc}", file=sys.stderr)
            unusable += 1
            continue
        samples = waveform.numpy()
        spans = window_spans(samples.shape[1], rate, WindowSpec(args.window_s, min_s=args.min_s))
        if not spans:
            print(f"roomtone health: {path}: only {samples.shape[1] / rate:.2f} s of audio, shorter than "
                  f"--min-s {args.min_s:g} s", file=sys.stderr)
            unusable += 1
            continue
        for span in spans:
            health = assess_window(samples[:, span.start : span.end], rate, config)
            counts[health.state] += 1
            offset = span.offset_s(rate)
            if args.json:
                print(json.dumps({
                    "path": str(path), "offset_s": offset, "duration_s": (span.end - span.start) / rate,
                    "channels": int(samples.shape[0]), "state": health.state, "reasons": list(health.reasons),
                    "scores": health.scores, "flags": health.flags,
                }), flush=True)
            else:
                print(f"{path} @ {offset:g}s: {health.state}")
                for reason in health.reasons:
                    print(f"    {reason}")
    if not args.json:
        print(f"{sum(counts.values())} windows: {counts['ok']} ok, {counts['degraded']} degraded, "
              f"{counts['faulty']} faulty" + (f"; {unusable} unusable file(s)" if unusable else ""))
    return 2 if unusable else 0
