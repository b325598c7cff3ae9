"""Fault-detection benchmark of the microphone health checks (encoder/signal_checks.py, encoder/drift.py).

Injects each fault at several severities into the real shared clips (homesounds, 320 x 10 s) and
measures, per fault and severity: detection rate of the check meant to catch it at the default
thresholds, how often the window is not "ok" at all, and the ROC AUC of that check's score against the
same clips clean. The false-alarm rate of every check is measured on all clean homesounds and music
clips. Drift is measured with the bundled model: each homesounds fold plays one microphone, learns its
own clips, and is then fed other content. Per-window cost (ms per 10 s window) is timed too.

    .venv/bin/python -m bench.fault_detection                      # prints the tables
    .venv/bin/python -m bench.fault_detection --write-docs         # also writes them into docs/mic-health.md
    .venv/bin/python -m bench.fault_detection --cost-only --limit 40   # only the per-window cost

Options: --data (shared data root), --model (for drift; skipped with a note when absent), --limit N
(first N clips per set, for a quick look), --seed. Takes about 5-10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from encoder.signal_checks import HealthConfig, assess_window

REPO = Path(__file__).resolve().parents[1]

RATE = 16000
DOCS = REPO / "docs" / "mic-health.md"
START, END = "<!-- fault-detection:start -->", "<!-- fault-detection:end -->"

# Score of each check, oriented so that higher means worse (for ROC AUC).
ORIENTED: dict[str, Callable[[dict], float]] = {
    "clipping": lambda s: s["clipping"] + s["clipping_run"],
    "dropout": lambda s: s["dropout"],
    "dead_channel": lambda s: -s["dead_channel"],
    "dead_channel_gap": lambda s: s["dead_channel_gap_db"],
    "dc_offset": lambda s: s["dc_offset"],
    "hum": lambda s: s["hum"],
    "stuck": lambda s: -s["stuck"],
    "non_finite": lambda s: s["non_finite"],
}


@dataclass(frozen=True)
class Fault:
    """One injected fault at one severity: which check should catch it and how it is made."""

    name: str
    severity: str
    check: str  # the check meant to flag it (a key of ORIENTED; dead_channel_gap -> dead_channel flag)
    moderate: bool  # the severity the >= 95 % detection target is judged at
    inject: Callable[[np.ndarray, np.random.Generator], np.ndarray]  # [1, n] clean -> [channels, n]
    channels: int = 1


def quantise(x: np.ndarray) -> np.ndarray:
    """16-bit capture: clip to full scale and round to 1/32768 steps."""
    return (np.round(np.clip(x, -1.0, 32767 / 32768) * 32768) / 32768).astype(np.float32)


def clip_at(over_db: float):
    def inject(x, rng):
        return quantise(x * (10 ** (over_db / 20) / np.abs(x).max()))
    return inject


def drop(ms: float, hold: bool = False):
    def inject(x, rng):
        y = x.copy()
        n = int(ms * RATE / 1000)
        start = int(rng.integers(RATE // 2, x.shape[1] - n - RATE // 2))
        y[:, start : start + n] = y[:, start - 1 : start] if hold else 0.0
        return y
    return inject


def hum(snr_db: float):
    def inject(x, rng):
        f0 = float(rng.choice([50.0, 60.0])) + float(rng.uniform(-0.05, 0.05))  # grid frequency wanders a little
        t = np.arange(x.shape[1]) / RATE
        phase = rng.uniform(0, 2 * np.pi, 4)
        wave = sum(np.sin(2 * np.pi * k * f0 * t + phase[k - 1]) / k for k in (1, 2, 3, 4))  # ground-loop buzz
        power = np.mean(x.astype(np.float64) ** 2)
        wave *= math.sqrt(power / np.mean(wave**2) * 10 ** (-snr_db / 10))
        return quantise(x + wave)
    return inject


def dc(offset: float):
    def inject(x, rng):
        return quantise(x + offset * rng.choice([-1.0, 1.0]))
    return inject


def dead_tail(seconds: float):
    def inject(x, rng):
        y = x.copy()
        y[:, x.shape[1] - int(seconds * RATE) :] = 0.0
        return y
    return inject


def dead_window(hiss_dbfs: float | None):
    def inject(x, rng):
        if hiss_dbfs is None:
            return np.zeros_like(x)
        return rng.normal(0, 10 ** (hiss_dbfs / 20), x.shape).astype(np.float32)  # preamp hiss, 24-bit input
    return inject


def two_mics(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A two-capsule device: the clip and a copy 0.5 ms later with its own -75 dBFS self-noise."""
    second = np.roll(x[0], 8) + rng.normal(0, 10 ** (-75 / 20), x.shape[1])
    return quantise(np.stack([x[0], second]))


def weak_channel(attenuation_db: float):
    def inject(x, rng):
        y = two_mics(x, rng).astype(np.float64)
        y[1] = y[1] * 10 ** (-attenuation_db / 20) + rng.normal(0, 10 ** (-90 / 20), x.shape[1])
        return quantise(y)
    return inject


def stuck_buffer(samples: int, from_s: float):
    def inject(x, rng):
        y = x.copy()
        start = int(from_s * RATE)
        buffer = x[:, start - samples : start]
        reps = math.ceil((x.shape[1] - start) / samples)
        y[:, start:] = np.tile(buffer, (1, reps))[:, : x.shape[1] - start]
        return y
    return inject


def constant():
    def inject(x, rng):
        return np.full_like(x, np.float32(rng.uniform(0.01, 0.2) * rng.choice([-1.0, 1.0])))
    return inject


def nans(count: int):
    def inject(x, rng):
        y = x.copy()
        start = int(rng.integers(0, x.shape[1] - count))
        y[:, start : start + count] = np.nan
        return y
    return inject


FAULTS = [
    Fault("clipping", "peak +1 dB over full scale", "clipping", False, clip_at(1)),
    Fault("clipping", "peak +3 dB", "clipping", False, clip_at(3)),
    Fault("clipping", "peak +6 dB", "clipping", True, clip_at(6)),
    Fault("clipping", "peak +12 dB", "clipping", False, clip_at(12)),
    Fault("dropout (zeros)", "10 ms", "dropout", False, drop(10)),
    Fault("dropout (zeros)", "50 ms", "dropout", True, drop(50)),
    Fault("dropout (zeros)", "200 ms", "dropout", False, drop(200)),
    Fault("dropout (held sample)", "50 ms", "dropout", True, drop(50, hold=True)),
    Fault("hum 50/60 Hz + harmonics", "SNR 20 dB", "hum", False, hum(20)),
    Fault("hum 50/60 Hz + harmonics", "SNR 10 dB", "hum", False, hum(10)),
    Fault("hum 50/60 Hz + harmonics", "SNR 6 dB", "hum", True, hum(6)),
    Fault("hum 50/60 Hz + harmonics", "SNR 0 dB", "hum", False, hum(0)),
    Fault("DC offset", "0.02 FS", "dc_offset", False, dc(0.02)),
    Fault("DC offset", "0.05 FS", "dc_offset", False, dc(0.05)),
    Fault("DC offset", "0.1 FS", "dc_offset", True, dc(0.1)),
    Fault("DC offset", "0.2 FS", "dc_offset", False, dc(0.2)),
    Fault("dead segment (mic dies mid-window)", "last 1 s zero", "dropout", False, dead_tail(1)),
    Fault("dead segment (mic dies mid-window)", "last 5 s zero", "dropout", True, dead_tail(5)),
    Fault("dead window", "all zeros", "dead_channel", True, dead_window(None)),
    Fault("dead window", "-90 dBFS hiss", "dead_channel", True, dead_window(-90)),
    Fault("dead window", "-75 dBFS hiss", "dead_channel", False, dead_window(-75)),
    Fault("dead channel of 2", "channel -20 dB", "dead_channel_gap", False, weak_channel(20), 2),
    Fault("dead channel of 2", "channel -40 dB", "dead_channel_gap", True, weak_channel(40), 2),
    Fault("dead channel of 2", "channel -60 dB", "dead_channel_gap", False, weak_channel(60), 2),
    Fault("stuck (repeated buffer)", "256 samples, whole window", "stuck", False, stuck_buffer(256, 0.016)),
    Fault("stuck (repeated buffer)", "1024 samples from 5 s", "stuck", True, stuck_buffer(1024, 5.0)),
    Fault("stuck (repeated buffer)", "4096 samples from 8 s", "stuck", False, stuck_buffer(4096, 8.0)),
    Fault("stuck (constant)", "whole window", "stuck", True, constant()),
    Fault("NaN samples", "1 sample", "non_finite", False, nans(1)),
    Fault("NaN samples", "100 samples", "non_finite", True, nans(100)),
]


def load_set(root: Path, limit: int | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(paths, folds, [clips, n] float32) of a shared set, in meta.csv order."""
    rows = list(csv.DictReader(open(root / "meta.csv", newline="")))[:limit]
    clips = np.stack([soundfile.read(root / r["path"], dtype="float32")[0] for r in tqdm(rows, desc=f"load {root.name}", unit="clip")])
    return [r["path"] for r in rows], np.array([int(r["fold"]) for r in rows]), clips


def flag_of(check: str) -> str:
    return "dead_channel" if check == "dead_channel_gap" else check


def measure_signal_checks(homes: np.ndarray, music: np.ndarray, seed: int) -> dict:
    """False alarms on clean clips, and detection/AUC per injected fault."""
    config = HealthConfig()
    clean = {"homesounds": [], "music": []}
    for name, clips in (("homesounds", homes), ("music", music)):
        for clip in tqdm(clips, desc=f"clean {name}", unit="window"):
            clean[name].append(assess_window(clip[None, :], RATE, config))
    rng = np.random.default_rng(seed)
    clean_pairs = [assess_window(two_mics(c[None, :], rng), RATE, config) for c in tqdm(homes, desc="clean 2-mic", unit="window")]
    checks = sorted({flag_of(f.check) for f in FAULTS})
    false_alarms = {
        name: {"windows": len(results), "not_ok": float(np.mean([h.state != "ok" for h in results])),
               **{c: float(np.mean([h.flags[c] for h in results])) for c in checks}}
        for name, results in (*clean.items(), ("homesounds, 2 mics", clean_pairs))
    }
    rows = []
    for fault in tqdm(FAULTS, desc="faults", unit="fault"):
        rng = np.random.default_rng(seed)
        negatives = clean_pairs if fault.channels == 2 else clean["homesounds"]
        results = [assess_window(fault.inject(c[None, :], rng), RATE, config) for c in homes]
        flag = flag_of(fault.check)
        score = ORIENTED[fault.check]
        y = np.r_[np.ones(len(results)), np.zeros(len(negatives))]
        s = np.array([score(h.scores) for h in results] + [score(h.scores) for h in negatives])
        rows.append({
            "fault": fault.name, "severity": fault.severity, "check": flag, "moderate": fault.moderate,
            "detected": float(np.mean([h.flags[flag] for h in results])),
            "not_ok": float(np.mean([h.state != "ok" for h in results])),
            "false_alarm": float(np.mean([h.flags[flag] for h in negatives])),
            "auc": float(roc_auc_score(y, s)),
        })
    return {"false_alarms": false_alarms, "faults": rows}


def measure_cost(clips: np.ndarray, repeats: int = 50) -> dict:
    """Milliseconds per 10 s window for one and for four channels (median and p90 over ``repeats``), as
    CPU time of this process (what the window costs; wall time on a shared host adds waiting for a core)
    and wall time, with the daemon's malloc setting (encoder/allocator.py) and the load average."""
    from encoder.allocator import reuse_freed_memory

    reuse_freed_memory()
    out = {"loadavg": Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"}
    for channels in (1, 4):
        cpu, wall = [], []
        for i in range(repeats):
            window = np.stack([clips[(i + c) % len(clips)] for c in range(channels)])
            c0, w0 = time.process_time(), time.perf_counter()
            assess_window(window, RATE)
            cpu.append(1000 * (time.process_time() - c0))
            wall.append(1000 * (time.perf_counter() - w0))
        out[f"{channels}ch_median_ms"] = float(np.median(cpu))
        out[f"{channels}ch_p90_ms"] = float(np.percentile(cpu, 90))
        out[f"{channels}ch_wall_median_ms"] = float(np.median(wall))
    return out


DRIFTS = {
    "another room's clips": "other",
    "music": "music",
    "own clips muffled (500 Hz low-pass)": "muffled",
    "own clips 30 dB quieter": "quieter",
}


def drift_inputs(homes: np.ndarray, music: np.ndarray) -> dict[str, np.ndarray]:
    """The audio each microphone is fed: its clips clean, music, its clips muffled and 30 dB quieter."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, 500, "lowpass", fs=RATE, output="sos")  # a mic covered by a cloth / pointed into a wall
    return {"clean": homes, "music": music, "muffled": sosfiltfilt(sos, homes, axis=1).astype(np.float32),
            "quieter": quantise(homes * 10 ** (-30 / 20))}


def model_embeddings(model_path: Path, audio: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Embeddings of every input with the model file (encoder.recording_embeddings.embed_windows)."""
    import torch

    from encoder.recording_embeddings import embed_windows
    from encoder.model_file import load_model

    bundle = load_model(model_path)
    return {name: np.concatenate([
        embed_windows(bundle, torch.from_numpy(np.ascontiguousarray(x[i : i + 32])))
        for i in tqdm(range(0, len(x), 32), desc=f"embed {name}", unit="batch")]) for name, x in audio.items()}


def mfcc_embeddings(audio: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A model-free stand-in embedding: MFCC-40 mean+std per window (encoder/baselines.py), standardised
    with the clean clips' statistics, so the tracker can be judged apart from the model's quality."""
    import torch

    from encoder.baselines import mfcc_stats

    raw = {name: np.concatenate([mfcc_stats(torch.from_numpy(np.ascontiguousarray(x[i : i + 40])))
                                 for i in tqdm(range(0, len(x), 40), desc=f"mfcc {name}", unit="batch")])
           for name, x in audio.items()}
    mean, std = raw["clean"].mean(axis=0), raw["clean"].std(axis=0) + 1e-9
    return {name: (v - mean) / std for name, v in raw.items()}


def measure_drift(emb: dict[str, np.ndarray], folds: np.ndarray, seed: int, orderings: int = 5) -> dict:
    """Each homesounds fold is one microphone (its own background bed and sources): it learns half its
    clips, then hears its other half (false alarms), then each kind of other content (detection)."""
    import copy

    from encoder.drift import DriftConfig, DriftTracker

    config = DriftConfig()
    rng = np.random.default_rng(seed)
    flagged: dict[str, list] = {"own clips (false alarm)": [], **{name: [] for name in DRIFTS}}
    scores: dict[str, list] = {name: [] for name in flagged}
    first_minutes: dict[str, list] = {name: [] for name in DRIFTS}
    n_history = 0
    for fold in sorted(set(folds.tolist())):
        own = np.flatnonzero(folds == fold)
        others = np.flatnonzero(folds != fold)
        for _ in range(orderings):
            order = rng.permutation(own)
            history, held_out = order[: len(order) // 2], order[len(order) // 2 :]
            n_history = len(history)
            tracker = DriftTracker(config)
            for i in history:
                tracker.update(emb["clean"][i])
            for i in held_out:
                result = tracker.update(emb["clean"][i])
                flagged["own clips (false alarm)"].append(result.flagged)
                scores["own clips (false alarm)"].append(result.score)
            for name, source in DRIFTS.items():
                if source == "other":
                    vectors = emb["clean"][rng.choice(others, 20, replace=False)]
                elif source == "music":
                    vectors = emb["music"][rng.choice(len(emb["music"]), 20, replace=False)]
                else:
                    vectors = emb[source][rng.choice(held_out, 20, replace=False)]
                drifting = copy.deepcopy(tracker)
                results = [drifting.update(v) for v in vectors]
                settled = results[tracker.persistence - 1 :]  # after one persistence span of new content
                flagged[name] += [r.flagged for r in settled]
                scores[name] += [r.score for r in settled]
                first_minutes[name].append(any(r.flagged for r in results[: 2 * tracker.persistence]))
    negatives = scores["own clips (false alarm)"]
    rows = []
    for name in flagged:
        auc = None if name not in DRIFTS else float(roc_auc_score(
            np.r_[np.ones(len(scores[name])), np.zeros(len(negatives))], np.r_[scores[name], negatives]))
        rows.append({"content": name, "windows": len(flagged[name]), "flagged": float(np.mean(flagged[name])),
                     "episodes_caught_2min": None if name not in DRIFTS else float(np.mean(first_minutes[name])),
                     "auc": auc})
    return {"config": config.to_dict(), "history_windows": n_history, "orderings": orderings, "rows": rows}


def markdown(result: dict) -> str:
    """The measured tables as markdown."""
    lines = [f"Measured by `python -m bench.fault_detection` on {result['when']} "
             f"({result['homesounds_windows']} homesounds windows per fault; seed {result['seed']}).", ""]
    lines += ["| fault | severity | check | detected | window not ok | false alarms of the check | ROC AUC |",
              "|---|---|---|---|---|---|---|"]
    for r in result["faults"]:
        mark = " **(moderate)**" if r["moderate"] else ""
        lines.append(f"| {r['fault']} | {r['severity']}{mark} | {r['check']} | {r['detected']:.1%} | "
                     f"{r['not_ok']:.1%} | {r['false_alarm']:.2%} | {r['auc']:.3f} |")
    lines += ["", "False alarms on clean clips (fraction of windows each check flags):", ""]
    checks = [k for k in next(iter(result["false_alarms"].values())) if k not in ("windows", "not_ok")]
    lines += ["| clean set | windows | not ok | " + " | ".join(checks) + " |",
              "|---|---|---|" + "---|" * len(checks)]
    for name, fa in result["false_alarms"].items():
        lines.append(f"| {name} | {fa['windows']} | {fa['not_ok']:.2%} | " + " | ".join(f"{fa[c]:.2%}" for c in checks) + " |")
    cost = result["cost"]
    lines += ["", cost_line(cost)]
    note = f" (its metadata says: {result['model_note']})" if result.get("model_note") else ""
    for key, title in (("drift_model", f"the model file `{result['model']}`{note}"),
                       ("drift_mfcc", "a model-free stand-in (MFCC-40 mean+std, standardised)")):
        drift = result.get(key)
        lines += [""]
        if not isinstance(drift, dict):
            lines.append(f"Embedding drift with {title}: not measured ({drift}).")
            continue
        c = drift["config"]
        lines += [f"Embedding drift with {title}: each homesounds fold is one microphone that learned "
                  f"{drift['history_windows']} of its own windows, then heard its other {drift['history_windows']} "
                  f"(false alarms), then 20 windows of other content ({drift['orderings']} orderings per microphone; "
                  f"k={c['neighbours']} exemplars, score = mean of the windows of {c['persistence_s']:g} s, threshold "
                  f"{c['threshold']} spreads). Detection counts windows after the first {c['persistence_s']:g} s of the "
                  "new content; 'caught' is the share of episodes flagged within their first 2 minutes.", "",
                  "| content fed to the microphone | windows | flagged | episodes caught within 2 min | ROC AUC vs own clips |",
                  "|---|---|---|---|---|"]
        for r in drift["rows"]:
            auc = "-" if r["auc"] is None else f"{r['auc']:.3f}"
            caught = "-" if r["episodes_caught_2min"] is None else f"{r['episodes_caught_2min']:.1%}"
            lines.append(f"| {r['content']} | {r['windows']} | {r['flagged']:.1%} | {caught} | {auc} |")
    return "\n".join(lines) + "\n"


def cost_line(cost: dict) -> str:
    """The per-window cost sentence of the docs."""
    return (f"Per-window cost of `assess_window` (10 s at 16 kHz, this machine, CPU time of the process): "
            f"{cost['1ch_median_ms']:.1f} ms median ({cost['1ch_p90_ms']:.1f} ms p90) for one channel, "
            f"{cost['4ch_median_ms']:.1f} ms ({cost['4ch_p90_ms']:.1f} ms p90) for four; wall time "
            f"{cost['1ch_wall_median_ms']:.1f} / {cost['4ch_wall_median_ms']:.1f} ms at load average {cost['loadavg']}.")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and optionally write into docs) the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="shared data root")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "roomtone.pt", help="model file for drift")
    parser.add_argument("--limit", type=int, default=None, help="first N clips per set (quick look)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    parser.add_argument("--cost-only", action="store_true", help="only time assess_window per window (seconds, not minutes)")
    parser.add_argument("--write-docs", action="store_true", help=f"replace the measured section of {DOCS.relative_to(REPO)}")
    args = parser.parse_args(argv)

    _, folds, homes = load_set(args.data / "homesounds", args.limit)
    if args.cost_only:
        print(cost_line(measure_cost(homes)))
        return 0
    _, _, music = load_set(args.data / "music", args.limit)
    result = {"when": time.strftime("%Y-%m-%d"), "seed": args.seed, "homesounds_windows": len(homes),
              "model": str(args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model)}
    result.update(measure_signal_checks(homes, music, args.seed))
    result["cost"] = measure_cost(homes)
    audio = drift_inputs(homes, music)
    if args.model.is_file():
        from encoder.model_file import load_model

        result["model_note"] = load_model(args.model).metadata.get("note", "")
        result["drift_model"] = measure_drift(model_embeddings(args.model, audio), folds, args.seed)
    else:
        result["drift_model"] = f"no model file at {result['model']}"
    result["drift_mfcc"] = measure_drift(mfcc_embeddings(audio), folds, args.seed)
    table = markdown(result)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.write_docs:
        text = DOCS.read_text()
        if START not in text or END not in text:
            print(f"{DOCS}: markers {START} / {END} not found; not written", file=sys.stderr)
            return 1
        head, rest = text.split(START, 1)
        DOCS.write_text(head + START + "\n" + table + END + rest.split(END, 1)[1])
        print(f"wrote the tables into {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
