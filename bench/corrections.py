"""How many activity corrections it takes to fix a systematic error of the head on a simulated home.

The home: every homesounds clip through ONE draw of the P2 capture chain (encoder/degradation.py: room,
pink noise, microphone, sound-server resampling; the same room and microphone for every clip), so the
home's windows differ from the shared set the way a real microphone's do. For each held-out fold f (4
rotations) the head is fitted as `roomtone train-head` fits it: on the shared set (the clean clips of the
other three folds), plus, with corrections, the home's corrected windows weighted ``--weight`` each.

A systematic error is a class whose home windows the shared-set head mostly gets wrong (recall on the
home below 80 %). For such a class and a number k, the user corrects k of its home windows that the head
got wrong, drawn at random from the other three folds' home windows (a user corrects mistakes they see,
in windows other than the ones scored); the class's recall is then scored on the held-out fold's home
windows, which no correction and no shared-set row comes from. Besides: macro-F1 of the home's held-out
fold and of the clean held-out fold, to show what the corrections cost the other classes.

    .venv/bin/python -m bench.corrections                       # prints the tables
    .venv/bin/python -m bench.corrections --write-docs          # also writes them into docs/sounds.md
    .venv/bin/python -m bench.corrections --model models/roomtone-p1.pt

Degrading and embedding the 320 clips takes a few minutes on 2 CPU cores the first time (cached in
bench/.cache by model sha256 and chain seed); the fits take about a minute.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.clip_embeddings import CACHE, DATA, _embed, _waveforms, load_set
from bench.doc_sections import write_marked_section
from encoder.head_corrections import DEFAULT_CORRECTION_WEIGHT, rows_with_corrections
from encoder.head import ActivityHead, fit_head

REPO = Path(__file__).resolve().parents[1]

DOCS = REPO / "docs" / "sounds.md"
TARGET_RECALL = 0.8
TARGET_CORRECTIONS = 10


def home_embeddings(model_path: Path, seed: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(clean [n, D], home [n, D], records)`` of homesounds: clean clips and the same clips through one
    capture-chain draw (``seed``), cached by model sha256 and seed."""
    from encoder.degradation import DEGRADATION_VERSION, degrade_clip
    from encoder.evaluation import file_sha256
    from encoder.model_file import load_model

    clean = load_set("homesounds", model_path, progress=progress)
    cache = CACHE / f"homesounds-home{seed}-v{DEGRADATION_VERSION}-{file_sha256(model_path)[:16]}.npz"
    paths = [str(r.path) for r in clean.records]
    if cache.is_file():
        stored = np.load(cache)
        if list(stored["paths"]) == paths:
            return clean.embeddings, stored["embeddings"], clean.records
    bundle = load_model(model_path)
    rate = bundle.feature_config.sample_rate
    home = [degrade_clip(w[None, :], rate, seed, "home")[0] for w in _waveforms(clean.records, rate)]
    embeddings = _embed(bundle, home, progress, "embed the home")
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.asarray(paths), embeddings=embeddings)
    return clean.embeddings, embeddings, clean.records


def macro_f1(head: ActivityHead, embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Macro-F1 (%) of ``head`` on labelled embeddings."""
    from sklearn.metrics import f1_score

    return 100.0 * float(f1_score(labels, head.predict(embeddings), average="macro"))


def corrected_head(clean: np.ndarray, labels: np.ndarray, shared: np.ndarray, home: np.ndarray,
                   corrections: np.ndarray, weight: float) -> ActivityHead:
    """The head `roomtone train-head --corrections` fits: the shared rows at weight 1 plus the corrected home
    windows (indices into ``home``, labelled with their true class) at ``weight``."""
    x, y, w = rows_with_corrections(clean[shared], labels[shared], home[corrections], labels[corrections], weight)
    return fit_head(x, y, sample_weight=w)


def run(clean: np.ndarray, home: np.ndarray, labels: np.ndarray, folds: np.ndarray, counts: list[int],
        weights: list[float], draws: int, seed: int) -> dict:
    """Every fold x class x count x weight x draw; pooled recall and macro-F1 figures."""
    classes = sorted(set(labels.tolist()))
    base = {"recall": {c: [0, 0] for c in classes}, "home_f1": [], "clean_f1": []}
    heads = {}
    for fold in sorted(set(folds.tolist())):
        shared = folds != fold
        head = heads[fold] = fit_head(clean[shared], labels[shared])
        test = folds == fold
        predicted = np.asarray(head.predict(home))
        for c in classes:
            held = test & (labels == c)
            base["recall"][c][0] += int(np.sum(predicted[held] == c))
            base["recall"][c][1] += int(held.sum())
        base["home_f1"].append(macro_f1(head, home[test], labels[test]))
        base["clean_f1"].append(macro_f1(head, clean[test], labels[test]))
    recall0 = {c: hits / total for c, (hits, total) in base["recall"].items()}
    confused = [c for c in classes if recall0[c] < TARGET_RECALL]
    # (class, k, weight) -> [hits, total, corrections used, home F1 list, clean F1 list, other-class recall hits/total]
    results: dict[tuple[str, int, float], dict] = {}
    rng = np.random.default_rng(seed)
    for c in confused:
        for k in counts:
            for weight in weights:
                cell = results[(c, k, weight)] = {"hits": 0, "total": 0, "used": [], "home_f1": [], "clean_f1": [],
                                                  "other_hits": 0, "other_total": 0}
                for fold in sorted(set(folds.tolist())):
                    shared, test = folds != fold, folds == fold
                    predicted = np.asarray(heads[fold].predict(home))
                    wrong = np.flatnonzero(shared & (labels == c) & (predicted != c))
                    for _ in range(draws if k else 1):
                        picked = rng.choice(wrong, size=min(k, len(wrong)), replace=False) if k else np.zeros(0, int)
                        head = (corrected_head(clean, labels, shared, home, picked, weight) if len(picked)
                                else heads[fold])
                        after = np.asarray(head.predict(home[test]))
                        truth = labels[test]
                        cell["hits"] += int(np.sum(after[truth == c] == c))
                        cell["total"] += int(np.sum(truth == c))
                        cell["other_hits"] += int(np.sum(after[truth != c] == truth[truth != c]))
                        cell["other_total"] += int(np.sum(truth != c))
                        cell["used"].append(len(picked))
                        cell["home_f1"].append(macro_f1(head, home[test], truth))
                        cell["clean_f1"].append(macro_f1(head, clean[test], truth))
    return {"classes": classes, "recall0": recall0, "confused": confused, "base": base, "results": results}


def tables(figures: dict, counts: list[int], weights: list[float], chosen: float) -> tuple[str, dict]:
    """Markdown tables and the verdict per confused class."""
    recall0, confused, results = figures["recall0"], figures["confused"], figures["results"]
    base = figures["base"]
    lines = ["Home recall per class with the shared-set head (pooled over the 4 held-out folds):", "",
             "| class | " + " | ".join(figures["classes"]) + " |", "|---|" + "---|" * len(figures["classes"]),
             "| home recall | " + " | ".join(f"{100 * recall0[c]:.0f} %" for c in figures["classes"]) + " |", "",
             f"Home macro-F1 {np.mean(base['home_f1']):.1f} %, clean macro-F1 {np.mean(base['clean_f1']):.1f} % "
             f"(held-out folds, no corrections). Classes below {TARGET_RECALL:.0%} on the home: "
             f"{', '.join(confused) or 'none'}.", ""]
    verdicts = {}
    if not confused:
        return "\n".join(lines), verdicts
    lines += [f"Recall of the corrected class on the home's held-out windows after k corrections of that class "
              f"(weight {chosen:g} each):", "",
              "| class | " + " | ".join(f"k={k}" for k in counts) + " | corrections to reach 80 % |",
              "|---|" + "---|" * (len(counts) + 1)]
    for c in confused:
        cells, needed = [], None
        for k in counts:
            cell = results[(c, k, chosen)]
            recall = cell["hits"] / max(cell["total"], 1)
            used = np.mean(cell["used"])
            cells.append(f"{100 * recall:.0f} %" + (f" ({used:.1f} avail.)" if used < k else ""))
            if needed is None and recall >= TARGET_RECALL:
                needed = k
        verdicts[c] = needed
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {needed if needed is not None else f'> {counts[-1]}'} |")
    lines += ["", f"What the corrections cost (weight {chosen:g}; mean over the confused classes and the folds):", "",
              "| k | home macro-F1 | clean macro-F1 | home recall of the other classes |", "|---|---|---|---|"]
    for k in counts:
        cells = [results[(c, k, chosen)] for c in confused]
        lines.append(f"| {k} | {np.mean([np.mean(x['home_f1']) for x in cells]):.1f} % | "
                     f"{np.mean([np.mean(x['clean_f1']) for x in cells]):.1f} % | "
                     f"{100 * np.mean([x['other_hits'] / max(x['other_total'], 1) for x in cells]):.1f} % |")
    if len(weights) > 1:
        lines += ["", "Weight of a correction (mean over the confused classes: corrected class's home recall / "
                      "clean macro-F1):", "",
                  "| k | " + " | ".join(f"weight {w:g}" for w in weights) + " |", "|---|" + "---|" * len(weights)]
        for k in counts:
            if k == 0:
                continue
            row = []
            for w in weights:
                cells = [results[(c, k, w)] for c in confused]
                recall = np.mean([x["hits"] / max(x["total"], 1) for x in cells])
                row.append(f"{100 * recall:.0f} % / {np.mean([np.mean(x['clean_f1']) for x in cells]):.1f} %")
            lines.append(f"| {k} | " + " | ".join(row) + " |")
    return "\n".join(lines), verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "roomtone.pt", help="model file to measure")
    parser.add_argument("--seed", type=int, default=0, help="the home's capture-chain draw")
    parser.add_argument("--counts", default="0,1,2,3,5,10,20", help="corrections per class to try (comma-separated)")
    parser.add_argument("--weight", type=float, default=None,
                        help="weight of one correction in the table (default: train-head's default)")
    parser.add_argument("--weights", default="1,3,10,30", help="weights compared in the weight table")
    parser.add_argument("--draws", type=int, default=5, help="random draws of the corrected windows per fold")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/sounds.md")
    args = parser.parse_args(argv)
    chosen = DEFAULT_CORRECTION_WEIGHT if args.weight is None else args.weight
    counts = sorted({int(k) for k in args.counts.split(",")})
    weights = sorted({float(w) for w in args.weights.split(",")} | {chosen})
    load = open("/proc/loadavg").read().split()[:3]
    clean, home, records = home_embeddings(args.model, args.seed, progress=not args.no_progress)
    labels = np.asarray([r.label for r in records])
    folds = np.asarray([r.fold for r in records])
    figures = run(clean, home, labels, folds, counts, weights, args.draws, args.seed)
    text, verdicts = tables(figures, counts, weights, chosen)
    met = [c for c, k in verdicts.items() if k is not None and k <= TARGET_CORRECTIONS]
    summary = (f"Model {args.model.name}; home = homesounds through capture-chain draw {args.seed}; "
               f"{args.draws} draws of the corrected windows per fold and count (load average {' '.join(load)}).\n\n"
               f"{text}\n\nTarget (a confused class >= {TARGET_RECALL:.0%} right with <= {TARGET_CORRECTIONS} "
               f"corrections): met for {len(met)} of {len(verdicts)} confused classes"
               + (f" ({', '.join(met)})" if met else "") + ".\n")
    print(summary)
    if args.write_docs:
        write_marked_section(DOCS, "corrections", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
