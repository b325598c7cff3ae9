"""Entry point of the `roomtone` command: builds the subcommand parsers and dispatches.

Every subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and imports heavy
libraries (torch, grpc) inside ``run`` so that ``roomtone --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Exit code of a command whose optional dependencies are not installed.
EXIT_MISSING_EXTRA = 3
#: Top-level modules only the train extra installs (pyproject.toml); a command that needs one says so.
TRAIN_MODULES = frozenset({"torch", "torchaudio", "scipy", "sklearn", "tqdm", "matplotlib", "onnx", "onnxscript"})

# (command, module, one-line help). Order is the order shown in --help.
COMMANDS: list[tuple[str, str, str]] = [
    ("run", "service.cli.run_command", "run the daemon: capture, windows, embedding, activity + health, store, gRPC, /metrics"),
    ("dataset", "service.cli.dataset_command", "inspect a dataset (shared meta.csv or DCASE 2018 task 5 layout)"),
    ("features", "service.cli.features_command", "compute log-Mel features of audio files and save them as .npz"),
    ("events", "service.cli.events_command", "show stored and live window records and state changes from a running daemon"),
    ("sessions", "service.cli.sessions_command", "show activity sessions (\"cooking 18:02-18:25\") from a running daemon"),
    ("mics", "service.cli.mics_command", "list a running daemon's microphones with capture state and health"),
    ("similar", "service.cli.similar_command", "find stored windows that sound like a stored window or an audio file"),
    ("sounds", "service.cli.sounds_command", "teach a running daemon custom sounds from a few examples; list or remove them"),
    ("corrections", "service.cli.corrections_command", "say what stored windows really were (activity corrections); list or remove them"),
    ("health", "service.cli.health_command", "check microphone health (clipping, dropouts, dead channel, DC, hum, stuck) per 10 s window of audio files"),
    ("classify", "service.cli.classify_command", "label, class probabilities and health of every 10 s window of audio files, offline (what Classify answers)"),
    ("train", "service.cli.train_command", "train the self-supervised encoder and write a model file"),
    ("embed", "service.cli.embed_command", "embed audio files or a dataset with a model file into an .npz"),
    ("evaluate", "service.cli.evaluate_command", "linear probe on the dataset's folds vs baselines, clusters, embedding map -> report.md"),
    ("neighbours", "service.cli.neighbours_command", "the k most similar segments of an embedding index to a query recording"),
    ("audit", "service.cli.audit_command", "rank a dataset's clips by suspected mislabels, broken recordings and outliers -> CSV"),
    ("train-head", "service.cli.train_head_command", "fit the activity head on labelled clips and store it in a copy of the model file"),
    ("adapt", "service.cli.adapt_command", "continue a model's self-supervised training on a home's own unlabelled audio (head kept valid)"),
    ("export", "service.cli.export_command", "export a model file's ONNX serving graph (for the torch-free daemon, pipeline.backend = onnx)"),
]


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already names its default or there is
    none to name (None, False, an empty list: the option only overrides the config, or adds, when given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "default" in help_text or action.default in (None, False, [], argparse.SUPPRESS):
            return help_text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="roomtone",
        description="roomtone: household sound monitoring on a self-supervised audio embedding.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        command = sub.add_parser(
            name, help=help_text, description=(module.__doc__ or help_text).strip(),
            formatter_class=DefaultsHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAIN_MODULES:
            raise
        print(f"roomtone {args.command}: needs the train extra, which is not installed (no module {exc.name!r}): "
              "pip install 'roomtone[train]'", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    except KeyboardInterrupt:
        print("roomtone: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
