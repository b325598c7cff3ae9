"""`quiet` relative to the microphone (service/analysis/level_floor.py) against the absolute floor, on level-shifted
copies of the labelled sets.

A simulated microphone hears the labelled sets (homesounds and music, one 10 s window per clip) at a gain
of ``shift`` dB (-30..+10: a far microphone or a quiet preamp down to a hot one): every clip's samples
times 10^(shift/20), clipped to full scale as a converter would, then its RMS level as the daemon computes
it. Its history is those windows in a seeded order (2 h of windows, the daemon's `LevelHistory` and
`counts_for_floor`), so the floor is learnt from the microphone's own audio; every clip is then decided with
the learnt threshold (`quiet_below_dbfs`, the daemon's function and defaults) and with the absolute floor
alone. The daemon's health check comes first: a window below ``health.dead_floor_dbfs`` (-70 dBFS) is a
dead channel, faulty, and gets no label at all (``--dead-floor-dbfs`` sets it as that config key would).

The labelled sets hold few quiet windows (40 of 724, 5.5 %); a home is quiet for much of the day. The
second history, "quiet home", draws half of its windows from the quiet clips (with replacement), so the
floor is learnt where a real home's would be. Target (issue 25): no activity clip `quiet` for shifts down
to -20 dB, and every quiet clip `quiet` at every shift.

    .venv/bin/python -m bench.quiet_levels                  # prints the tables
    .venv/bin/python -m bench.quiet_levels --write-docs     # also writes them into docs/sounds.md

Model-independent (levels only); about a minute on 2 CPU cores (decoding 724 clips).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.clip_embeddings import CACHE, DATA, _waveforms
from bench.doc_sections import write_marked_section
from encoder.datasets import read_dataset
from service.config import ActivityConfig
from encoder.signal_checks import HealthConfig
from service.analysis.level_floor import LevelHistory, counts_for_floor, history_capacity, quiet_below_dbfs
from service.analysis.result_builder import rms_dbfs

REPO = Path(__file__).resolve().parents[1]

DOCS = REPO / "docs" / "sounds.md"
QUIET_CLASS = "quiet_ambience"
SHIFTS_DB = (-30, -25, -20, -15, -10, -5, 0, 5, 10)
ACTIVITY_TARGET_SHIFT_DB = -20  # no activity clip quiet at this shift or above
HOP_S = 10.0  # one window per clip


def shifted_levels(waves: list[np.ndarray], shift_db: float) -> np.ndarray:
    """RMS dBFS of every clip at a gain of ``shift_db``, clipped to full scale first."""
    gain = 10.0 ** (shift_db / 20.0)
    return np.asarray([rms_dbfs(np.clip(w * gain, -1.0, 1.0)[None, :]) for w in waves])


def cached_levels(records) -> dict[float, np.ndarray]:
    """`shifted_levels` of every shift, cached in bench/.cache by the clips' paths."""
    import hashlib

    key = hashlib.sha256("\n".join([str(r.path) for r in records] + [str(SHIFTS_DB)]).encode()).hexdigest()[:16]
    cache = CACHE / f"shifted-levels-{key}.npz"
    if cache.is_file():
        stored = np.load(cache)
        return {float(s): stored[f"s{i}"] for i, s in enumerate(SHIFTS_DB)}
    waves = _waveforms(records, 16000)
    levels = {float(s): shifted_levels(waves, s) for s in SHIFTS_DB}
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **{f"s{i}": levels[float(s)] for i, s in enumerate(SHIFTS_DB)})
    return levels


_HISTORIES: dict[tuple, LevelHistory] = {}


def learnt_threshold(levels: np.ndarray, order: np.ndarray, config: ActivityConfig, dead_floor_dbfs: float) -> float:
    """The quiet threshold a microphone that heard ``levels[order]`` (in that order) has learnt."""
    key = (levels.tobytes(), order.tobytes(), history_capacity(config, HOP_S), dead_floor_dbfs)
    if key not in _HISTORIES:  # the history does not depend on the margin or percentile swept below
        history = _HISTORIES[key] = LevelHistory(history_capacity(config, HOP_S))
        for level in levels[order]:
            if counts_for_floor(level, ("dead_channel",) if level < dead_floor_dbfs else ()):
                history.add(level)
    return quiet_below_dbfs(_HISTORIES[key], config, HOP_S)


def histories(n: int, is_quiet: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Clip orders a microphone hears: the sets as they are, and a quiet home (half its windows quiet)."""
    rng = np.random.default_rng(seed)
    quiet_ids, active_ids = np.flatnonzero(is_quiet), np.flatnonzero(~is_quiet)
    home = np.concatenate([active_ids, rng.choice(quiet_ids, size=len(active_ids), replace=True)])
    return {"labelled sets as they are (5.5 % quiet)": rng.permutation(n), "quiet home (50 % quiet)": rng.permutation(home)}


def measure(levels_by_shift: dict[float, np.ndarray], is_quiet: np.ndarray, config: ActivityConfig,
            seed: int, dead_floor_dbfs: float) -> list[dict]:
    """Per history and shift: threshold, how many quiet / activity clips each rule calls `quiet` (a dead
    channel, below ``dead_floor_dbfs``, has no label) and how many quiet clips are dead channels."""
    rows = []
    for name, order in histories(len(is_quiet), is_quiet, seed).items():
        for shift, levels in levels_by_shift.items():
            threshold = learnt_threshold(levels, order, config, dead_floor_dbfs)
            alive = levels >= dead_floor_dbfs
            rows.append({"history": name, "shift": shift, "threshold": threshold,
                         "relative_active": int(np.sum((levels < threshold) & alive & ~is_quiet)),
                         "relative_quiet": int(np.sum((levels < threshold) & alive & is_quiet)),
                         "dead_quiet": int(np.sum(~alive & is_quiet)), "dead_active": int(np.sum(~alive & ~is_quiet)),
                         "absolute_active": int(np.sum((levels < config.quiet_below_dbfs) & alive & ~is_quiet)),
                         "absolute_quiet": int(np.sum((levels < config.quiet_below_dbfs) & alive & is_quiet))})
    return rows


def verdict(rows: list[dict], n_quiet: int) -> tuple[bool, bool, str]:
    """Whether the target holds for every history, whether the quiet decision holds for every window the
    health check leaves a label (dead channels aside), and the worst figures."""
    active = max(r["relative_active"] for r in rows if r["shift"] >= ACTIVITY_TARGET_SHIFT_DB)
    missed_quiet = max(n_quiet - r["relative_quiet"] for r in rows)
    missed_alive = max(n_quiet - r["relative_quiet"] - r["dead_quiet"] for r in rows)
    met = active == 0 and missed_quiet == 0
    return met, active == 0 and missed_alive == 0, (f"activity clips `quiet` at shifts >= {ACTIVITY_TARGET_SHIFT_DB} dB: at most {active}; "
                 f"quiet clips not `quiet` at some shift: at most {missed_quiet} of {n_quiet}, of which at most "
                 f"{missed_alive} were not dead channels")


def margin_sweep(levels_by_shift: dict[float, np.ndarray], is_quiet: np.ndarray, config: ActivityConfig,
                 seed: int, dead_floor_dbfs: float) -> str:
    """Markdown: per floor percentile and history, the margins (0.25 dB steps) whose quiet decision meets the
    target on every window the health check leaves a label."""
    margins = np.arange(6.0, 18.01, 0.25)
    names = list(histories(len(is_quiet), is_quiet, seed))
    out = ["| floor percentile | " + " | ".join(f"margins meeting the target: {n}" for n in names) + " |",
           "|---|" + "---|" * len(names)]
    for percentile in (0.1, 0.5, 1.0, 5.0):
        meeting: dict[str, list[float]] = {n: [] for n in names}
        for margin in margins:
            rows = measure(levels_by_shift, is_quiet, config.model_copy(
                update={"quiet_floor_percentile": percentile, "quiet_margin_db": float(margin)}), seed, dead_floor_dbfs)
            for name in names:
                if verdict([r for r in rows if r["history"] == name], int(is_quiet.sum()))[1]:
                    meeting[name].append(float(margin))
        out.append(f"| {percentile:g} | " + " | ".join(
            f"{min(m):g}..{max(m):g} dB" if m else "none" for m in meeting.values()) + " |")
    return "\n".join(out)


def table(rows: list[dict], n_quiet: int, n_active: int, config: ActivityConfig) -> str:
    """Markdown: one table per history."""
    out = []
    for name in dict.fromkeys(r["history"] for r in rows):
        out += [f"History: {name}.", "",
                "| shift | learnt threshold | activity clips `quiet` (relative) | quiet clips `quiet` (relative) "
                "| dead channel (no label): quiet / activity clips "
                f"| activity clips `quiet` (absolute {config.quiet_below_dbfs:g}) | quiet clips `quiet` (absolute) |",
                "|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["history"] == name):
            out.append(f"| {r['shift']:+g} dB | {r['threshold']:.1f} dBFS | {r['relative_active']} / {n_active} | "
                       f"{r['relative_quiet']} / {n_quiet} | {r['dead_quiet']} / {r['dead_active']} | "
                       f"{r['absolute_active']} / {n_active} | {r['absolute_quiet']} / {n_quiet} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with homesounds/ and music/")
    parser.add_argument("--seed", type=int, default=0, help="order of the windows in the histories")
    parser.add_argument("--margin-db", type=float, default=None, help="override activity.quiet_margin_db")
    parser.add_argument("--percentile", type=float, default=None, help="override activity.quiet_floor_percentile")
    parser.add_argument("--dead-floor-dbfs", type=float, default=HealthConfig().dead_floor_dbfs,
                        help="health.dead_floor_dbfs: below it a window is a dead channel with no label")
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/sounds.md")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("quiet_margin_db", args.margin_db), ("quiet_floor_percentile", args.percentile))
                 if v is not None}
    config = ActivityConfig(**overrides)
    homesounds, music = read_dataset(args.data / "homesounds"), read_dataset(args.data / "music")
    is_quiet = np.asarray([r.label == QUIET_CLASS for r in homesounds] + [False] * len(music))
    levels_by_shift = cached_levels(homesounds + music)
    rows = measure(levels_by_shift, is_quiet, config, args.seed, args.dead_floor_dbfs)
    n_quiet, n_active = int(is_quiet.sum()), int((~is_quiet).sum())
    met, decision_met, worst = verdict(rows, n_quiet)
    text = (f"Floor: percentile {config.quiet_floor_percentile:g} of the history, margin {config.quiet_margin_db:g} dB, "
            f"bounds {config.quiet_min_dbfs:g}..{config.quiet_max_dbfs:g} dBFS; dead channel below "
            f"{args.dead_floor_dbfs:g} dBFS (health.dead_floor_dbfs).\n\n"
            + table(rows, n_quiet, n_active, config)
            + "\nMargins (6..18 dB in 0.25 dB steps) whose quiet decision meets the target on every window that is not "
              "a dead channel, per floor percentile and history:\n\n"
            + margin_sweep(levels_by_shift, is_quiet, config, args.seed, args.dead_floor_dbfs) + "\n"
            + f"\nTarget (no activity clip `quiet` down to {ACTIVITY_TARGET_SHIFT_DB} dB, every quiet clip `quiet` at "
              f"every shift, both histories): **{'met' if met else 'missed'}** ({worst}); the quiet decision itself, "
              f"on the windows that are not dead channels: **{'met' if decision_met else 'missed'}**.\n")
    print(text)
    if args.write_docs:
        write_marked_section(DOCS, "quiet-levels" if args.dead_floor_dbfs == HealthConfig().dead_floor_dbfs
                             else "quiet-levels-dead-floor", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
