"""Dataset readers: every dataset becomes a list of `Record` (path, label, fold, group).

Two layouts are understood:
1. the shared sets (``homesounds``/``music``): a ``meta.csv`` with ``path,label,fold,...``;
2. the DCASE 2018 task 5 development layout: ``audio/DevNode{n}_ex{k}_{seg}.wav`` (4 channels) with
   ``evaluation_setup/fold{k}_train.txt`` (file, label, session), ``fold{k}_evaluate.txt`` (file, label)
   and ``fold{k}_test.txt`` (file).

``group`` ties together clips that must never be split across folds or used as each other's triplet
opposites: the recording session for DCASE (simultaneous recordings of several nodes), the track for
music, the set of source recordings for homesounds.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from encoder.audio import AudioError, audio_info

DCASE_LABELS = (
    "absence", "cooking", "dishwashing", "eating", "other",
    "social_activity", "vacuum_cleaner", "watching_tv", "working",
)
FOLDS = (1, 2, 3, 4)


class DatasetError(ValueError):
    """Malformed dataset metadata; the message names the file (and line) at fault."""


@dataclass(frozen=True)
class Record:
    """One labelled clip: absolute path, class label, held-out fold (1-4), grouping key and the source
    package it was made from ("" when the dataset does not say; P1-lpo folds by it)."""

    path: Path
    label: str
    fold: int
    group: str
    package: str = ""


def _parse_fold(value: str, where: str) -> int:
    """Fold number 1-4 or a DatasetError naming ``where``."""
    try:
        fold = int(value)
    except ValueError:
        raise DatasetError(f"{where}: fold {value!r} is not a number (expected 1-4)") from None
    if fold not in FOLDS:
        raise DatasetError(f"{where}: unknown fold {fold} (expected 1-4)")
    return fold


def _homesounds_group(source_file: str, fold: int) -> str:
    """Sources of a homesounds clip without the fold-wide background bed (which every clip shares)."""
    sources = [s for s in source_file.split(";") if s]
    # The bed is the last source of every non-quiet clip; it is one recording per fold, so keeping it
    # would make a whole fold one group. Drop entries that are beds of many clips (ambience packages).
    primary = [s for s in sources if not s.startswith(("megaglest-data:", "lugaru-data:"))] or sources
    return "|".join(sorted(primary)) or f"fold{fold}"


def read_meta_csv(meta: Path) -> list[Record]:
    """Read a shared-set ``meta.csv`` (homesounds or music); paths are resolved next to the file."""
    root = meta.parent
    with meta.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        missing = [c for c in ("path", "label", "fold") if c not in columns]
        if missing:
            raise DatasetError(f"{meta}: missing column(s) {missing}; found {sorted(columns)}")
        has_track = "track_id" in columns
        records = []
        for line_no, row in enumerate(reader, start=2):
            where = f"{meta}:{line_no}"
            if not row.get("path") or not row.get("label"):
                raise DatasetError(f"{where}: empty path or label")
            fold = _parse_fold(row["fold"], where)
            path = (root / row["path"]).resolve()
            if not path.is_file():
                raise DatasetError(f"{where}: listed file {row['path']} does not exist")
            if has_track and row.get("track_id"):
                group = row["track_id"]
            elif row.get("source_file"):
                group = _homesounds_group(row["source_file"], fold)
            else:
                group = row["path"]
            # The first package is the clip's own sound; a homesounds background bed comes last.
            package = (row.get("source_package") or "").split(";")[0].strip()
            records.append(Record(path, row["label"], fold, group, package))
    if not records:
        raise DatasetError(f"{meta}: lists no clips")
    return records


def _read_tab_file(path: Path, min_columns: int) -> list[tuple[int, list[str]]]:
    """Non-empty tab-separated lines with their line numbers; too few columns is an error."""
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < min_columns:
            raise DatasetError(
                f"{path}:{line_no}: expected {min_columns} tab-separated columns, got {len(parts)}"
            )
        rows.append((line_no, [p.strip() for p in parts]))
    return rows


def read_dcase(root: Path) -> list[Record]:
    """Read the DCASE 2018 task 5 development layout; fold = the fold whose evaluate list holds the file."""
    setup = root / "evaluation_setup"
    sessions: dict[str, str] = {}
    for k in FOLDS:
        train = setup / f"fold{k}_train.txt"
        if not train.is_file():
            raise DatasetError(f"{train}: missing (DCASE layout needs fold1..4 train/evaluate lists)")
        for line_no, (name, label, session, *_) in _read_tab_file(train, 3):
            if label not in DCASE_LABELS:
                raise DatasetError(f"{train}:{line_no}: unknown label {label!r}")
            sessions[name] = session
    records: list[Record] = []
    seen: dict[str, str] = {}
    for k in FOLDS:
        evaluate = setup / f"fold{k}_evaluate.txt"
        if not evaluate.is_file():
            raise DatasetError(f"{evaluate}: missing (DCASE layout needs fold1..4 train/evaluate lists)")
        for line_no, (name, label, *_) in _read_tab_file(evaluate, 2):
            where = f"{evaluate}:{line_no}"
            if label not in DCASE_LABELS:
                raise DatasetError(f"{where}: unknown label {label!r}")
            if name in seen:
                raise DatasetError(f"{where}: {name} is already in the evaluate list {seen[name]}")
            seen[name] = where
            path = (root / name).resolve()
            if not path.is_file():
                raise DatasetError(f"{where}: listed file {name} does not exist")
            group = sessions.get(name, Path(name).stem)
            records.append(Record(path, label, k, group))
    if not records:
        raise DatasetError(f"{setup}: the evaluate lists name no files")
    return records


def read_dataset(path: str | Path) -> list[Record]:
    """Read a dataset from its directory (or its meta.csv), recognising the layout by its files."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    if path.is_file():
        if path.name.endswith(".csv"):
            return read_meta_csv(path)
        raise DatasetError(f"{path}: not a dataset (expected a directory or a meta.csv)")
    if (path / "meta.csv").is_file():
        return read_meta_csv(path / "meta.csv")
    if (path / "evaluation_setup").is_dir():
        return read_dcase(path)
    raise DatasetError(
        f"{path}: not a dataset: expected meta.csv (shared sets) or evaluation_setup/ (DCASE 2018 task 5)"
    )


@dataclass(frozen=True)
class DatasetSummary:
    """Counts for `roomtone dataset summary`."""

    clips: int
    classes: dict[str, dict[int, int]]
    minutes: float
    channels: Counter
    sample_rates: Counter
    problems: list[str]


def summarize(records: list[Record]) -> DatasetSummary:
    """Classes x folds clip counts, total minutes and per-file problems (unreadable headers, groups split across folds)."""
    classes: dict[str, dict[int, int]] = {}
    seconds = 0.0
    channels: Counter = Counter()
    rates: Counter = Counter()
    problems: list[str] = []
    group_folds: dict[str, set[int]] = {}
    for record in records:
        classes.setdefault(record.label, {k: 0 for k in FOLDS})[record.fold] += 1
        group_folds.setdefault(record.group, set()).add(record.fold)
        try:
            info = audio_info(record.path)
        except AudioError as exc:
            problems.append(str(exc))
            continue
        seconds += info.frames / info.samplerate
        channels[info.channels] += 1
        rates[info.samplerate] += 1
    for group, folds in sorted(group_folds.items()):
        if len(folds) > 1:
            problems.append(f"group {group!r} appears in folds {sorted(folds)}")
    return DatasetSummary(len(records), dict(sorted(classes.items())), seconds / 60, channels, rates, problems)


# ------------------------------------------------------------------------------------------ unlabelled

#: File endings the folder reader takes as audio (what libsndfile decodes).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff")


@dataclass(frozen=True)
class UnlabelledRecord:
    """One unlabelled file: path, the group it must not be contrasted with, its recording domain, and
    (from a manifest) its source_package value (";"-separated) and kind ("" when unknown)."""

    path: Path
    group: str
    domain: str
    package: str = ""
    kind: str = ""


def is_unlabelled_folder(path: Path) -> bool:
    """True for a folder with a ``manifest.csv`` or, failing that, audio files anywhere below it."""
    if not path.is_dir():
        return False
    return (path / "manifest.csv").is_file() or any(p.suffix.lower() in AUDIO_SUFFIXES for p in path.rglob("*") if p.is_file())


def read_unlabelled(path: str | Path) -> list[UnlabelledRecord]:
    """Files of an unlabelled corpus. With a ``manifest.csv`` (``path, source_package, source_files, kind``,
    as ../shared/data/unlabelled): group = the source files (chunks of one track are never opposites),
    domain = ``package:kind`` (one game's music, one package's effects with their shared ambience bed).
    Otherwise every audio file below the folder is its own group and its folder is its domain."""
    root = Path(path)
    manifest = root / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if "path" not in (reader.fieldnames or []):
                raise DatasetError(f"{manifest}: missing column 'path'; found {reader.fieldnames}")
            records = []
            for line_no, row in enumerate(reader, start=2):
                file = (root / row["path"]).resolve()
                if not row["path"] or not file.is_file():
                    raise DatasetError(f"{manifest}:{line_no}: listed file {row['path']!r} does not exist")
                package = row.get("source_package") or ""
                domain = f"{package}:{row.get('kind') or ''}" if package or row.get("kind") else ""
                records.append(UnlabelledRecord(file, row.get("source_files") or row["path"], domain, package, row.get("kind") or ""))
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        records = [UnlabelledRecord(p.resolve(), str(p.relative_to(root)), str(p.parent.relative_to(root))) for p in files]
    else:
        raise DatasetError(f"{root}: not a folder of audio files")
    if not records:
        raise DatasetError(f"{root}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found")
    return records
