"""`roomtone adapt` on a simulated new home: head macro-F1 on the home's held-out audio before and after
adapting on its unlabelled audio, and the clean figure before and after.

The home: homesounds through one draw of the P2 capture chain (encoder/degradation.py: room, pink noise,
microphone, sound-server resampling; not used in the bundled model's training, whose augmentation is
off), the same draw for every clip (one room, one microphone). Its training part is folds 1-3 (240 clips,
used without labels for adaptation), its held-out part fold 4 (80 clips). The head is the user's: fitted
on clean folds 1-3 with the original encoder. After adaptation that head is kept (what `roomtone adapt`
writes) or re-aligned (`--head realign`, fitted on the home's training part); a head refitted on clean
folds 1-3 with the adapted encoder is shown for reference (it needs labels a user does not have).

    .venv/bin/python bench/adapt.py --minutes 4                    # prints the table
    .venv/bin/python bench/adapt.py --minutes 4 --write-docs       # also writes it into docs/sounds.md

Takes the adaptation budget plus a few minutes (degrading and embedding 320 clips twice) on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from encoder.adapt import AdaptConfig, adapt  # noqa: E402
from doc_sections import write_marked_section  # noqa: E402
from encoder.datasets import read_dataset  # noqa: E402
from encoder.head import ActivityHead, fit_head  # noqa: E402

DOCS = REPO / "docs" / "sounds.md"
DATA = REPO.parent / "shared" / "data" / "homesounds"
HELD_OUT_FOLD = 4


def macro_f1(head: ActivityHead, embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Macro-F1 (%) of ``head`` on labelled embeddings."""
    from sklearn.metrics import f1_score

    return 100.0 * float(f1_score(labels, head.predict(embeddings), average="macro"))


def embed(model_path: Path, waves: list[np.ndarray]) -> np.ndarray:
    """Embeddings of 10 s mono clips with a model file."""
    import torch

    from encoder.embedding import embed_windows
    from encoder.model_file import load_model

    return embed_windows(load_model(model_path), torch.from_numpy(np.stack(waves).astype(np.float32)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "roomtone.pt")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--minutes", type=float, default=4.0, help="adaptation budget (wall clock)")
    parser.add_argument("--seed", type=int, default=0, help="the home's capture-chain draw")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    import soundfile

    from encoder.audio import load_audio
    from encoder.degradation import degrade_clip

    records = read_dataset(args.data)
    labels = np.asarray([r.label for r in records])
    held_out = np.asarray([r.fold == HELD_OUT_FOLD for r in records])
    clean = [load_audio(r.path, 16000, mono=True)[0][0].numpy() for r in records]
    home = [degrade_clip(w[None, :], 16000, args.seed, "home")[0] for w in clean]  # one room for the whole home
    with tempfile.TemporaryDirectory(prefix="roomtone-adapt-bench-") as tmp:
        folder = Path(tmp) / "home"
        folder.mkdir()
        for i in np.flatnonzero(~held_out):
            soundfile.write(folder / f"clip{i:03d}.flac", home[i], 16000, subtype="PCM_16")
        before_clean, before_home = embed(args.model, clean), embed(args.model, home)
        user_head = fit_head(before_clean[~held_out], labels[~held_out])
        load = open("/proc/loadavg").read().split()[:3]
        started = time.monotonic()
        result = adapt(AdaptConfig(args.model, (str(folder),), Path(tmp) / "home.pt", args.minutes, seed=args.seed))
        took = time.monotonic() - started
        from encoder.model_file import load_model

        adapted = load_model(Path(tmp) / "home.pt")
        after_clean, after_home = embed(Path(tmp) / "home.pt", clean), embed(Path(tmp) / "home.pt", home)
    from encoder.adapt import aligned_head, alignment

    a, c = alignment(after_home[~held_out], before_home[~held_out])  # what --head realign fits
    aligned = aligned_head(user_head, a, c)
    refit = fit_head(after_clean[~held_out], labels[~held_out])
    rows = [
        ("before (original encoder, user's head)", macro_f1(user_head, before_home[held_out], labels[held_out]),
         macro_f1(user_head, before_clean[held_out], labels[held_out])),
        ("after, user's head kept (what `roomtone adapt` writes)", macro_f1(user_head, after_home[held_out], labels[held_out]),
         macro_f1(user_head, after_clean[held_out], labels[held_out])),
        ("after, head re-aligned (`--head realign`)", macro_f1(aligned, after_home[held_out], labels[held_out]),
         macro_f1(aligned, after_clean[held_out], labels[held_out])),
        ("after, head refitted on clean labels (reference)", macro_f1(refit, after_home[held_out], labels[held_out]),
         macro_f1(refit, after_clean[held_out], labels[held_out])),
    ]
    table = ["| encoder and head | home (degraded fold 4) macro-F1 | clean fold 4 macro-F1 |", "|---|---|---|"]
    table += [f"| {name} | {home_f1:.1f} % | {clean_f1:.1f} % |" for name, home_f1, clean_f1 in rows]
    gain, clean_change = rows[1][1] - rows[0][1], rows[1][2] - rows[0][2]
    verdict = ("met" if gain >= 5.0 and clean_change >= -1.0 else "missed")
    text = (f"Model {args.model.name}; adaptation {args.minutes:g} min budget, {result.steps} steps in {took / 60:.1f} min "
            f"(load average {' '.join(load)} at the start: a shared, busy 2-core machine); alignment on "
            f"{result.align_windows} windows, R^2 {result.align_r2:.3f}.\n\n" + "\n".join(table) +
            f"\n\nHome: {gain:+.1f} points; clean: {clean_change:+.1f} points. Target (+5 on the home, clean no more "
            f"than 1 point worse): **{verdict}**.\n")
    print(text)
    if args.write_docs:
        write_marked_section(DOCS, "adapt", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
