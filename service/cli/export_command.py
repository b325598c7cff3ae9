"""Export a model file's serving graph to ONNX, for the torch-free daemon (pipeline.backend = "onnx").
Example: "roomtone export --model models/roomtone.pt" writes models/roomtone.onnx beside it.

The graph holds the Mel filterbank, the dB step and the encoder, exported from the same torch code that
training uses; the daemon computes the FFT in front of it with numpy. It records the model file's sha256
and a graph version: the daemon refuses a graph whose model file changed since (retrained, replaced)
and says to run this command again. After writing, the graph is run with ONNX Runtime and compared with
torch on a test signal; the differences are printed. Needs the train extra (torch, onnx, onnxscript).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `export` options."""
    parser.add_argument("--model", default="models/roomtone.pt", help="model file to export")
    parser.add_argument("--out", default=None, help="graph file to write (default: the model file's name with .onnx)")


def run(args: argparse.Namespace) -> int:
    """Write and verify the graph; exit 2 naming the file when the model file is unusable."""
    import logging
    import warnings

    from encoder.model_file import ModelFileError
    from encoder.onnx_export import export_graph
    from encoder.onnx_graph import graph_path_for

    out = Path(args.out) if args.out else graph_path_for(args.model)
    print(f"roomtone export: exporting {args.model} -> {out} (about 10 CPU-seconds)", file=sys.stderr)
    logging.getLogger("torch").setLevel(logging.ERROR)  # the exporter's notes on torchvision ops are noise here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path, differences = export_graph(args.model, out)
    except ModelFileError as exc:
        print(f"roomtone export: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"roomtone export: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}: embedding max abs diff {differences['embedding_max_abs_diff']:.2e} "
          f"(min cosine {differences['min_cosine']:.7f}) vs torch, log-Mel max abs diff "
          f"{differences['log_mel_max_abs_diff_db']:.2e} dB vs the float64 log-Mel")
    return 0
