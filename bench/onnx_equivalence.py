"""The ONNX serving graph against torch on every homesounds clip: embeddings, labels, log-Mel.

Embeds each clip (10 s, mono) with the torch backend (`encoder.embedder.TorchEmbedder`) and the onnx
backend (`encoder.onnx_embedder.OnnxEmbedder` over the graph beside the model file, or one exported to a
temporary folder with --export), labels both with the model's head, and prints: clips, labels identical,
lowest cosine, largest absolute embedding difference, and the largest log-Mel difference from
`encoder.features.log_mel` (float32) and from its float64 evaluation. Issue 16's bar: cosine >= 0.9999
(or max abs diff <= 1e-4), labels identical on all 320 clips.

    .venv/bin/python -m bench.onnx_equivalence [--data ../shared/data/homesounds] [--export] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import torch

from encoder.embedder import TorchEmbedder
from encoder.features import log_mel
from encoder.head import ActivityHead
from encoder.model_file import load_model
from encoder.onnx_embedder import OnnxEmbedder
from encoder.onnx_export import exact_log_mel, export_graph
from encoder.onnx_graph import graph_path_for

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Compare both backends on every clip and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "roomtone.pt"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "homesounds"))
    parser.add_argument("--export", action="store_true", help="export a fresh graph instead of using the one beside the model")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    root = Path(args.data)
    paths = [root / row["path"] for row in csv.DictReader(open(root / "meta.csv", newline=""))]
    bundle = load_model(args.model)
    head = ActivityHead.from_dict(bundle.head) if bundle.head else None
    with tempfile.TemporaryDirectory() as folder:
        graph = export_graph(args.model, Path(folder) / "g.onnx")[0] if args.export else graph_path_for(args.model)
        onnx = OnnxEmbedder(graph, check_model=args.model)
        torch_embedder = TorchEmbedder(bundle)
        cosines, diffs, same, db_float32, db_float64 = [], [], 0, 0.0, 0.0
        for start in range(0, len(paths), args.batch):
            clips = np.stack([soundfile.read(p, dtype="float32", always_2d=True)[0].mean(axis=1) for p in paths[start:start + args.batch]])
            a, features = onnx.embed_with_features(list(clips))
            b = torch_embedder.embed(list(clips))
            cosines.extend(np.sum(a * b, axis=1).tolist())
            diffs.append(float(np.abs(a - b).max()))
            if head is not None:
                same += int(np.sum(head.predict_proba(a).argmax(1) == head.predict_proba(b).argmax(1)))
            db_float32 = max(db_float32, float(np.abs(features - log_mel(torch.from_numpy(clips), bundle.feature_config).numpy()).max()))
            db_float64 = max(db_float64, float(np.abs(features - exact_log_mel(clips, bundle.feature_config)).max()))
    result = {"clips": len(paths), "labels_identical": same if head is not None else None,
              "min_cosine": float(min(cosines)), "max_abs_diff": float(max(diffs)),
              "log_mel_max_db_vs_log_mel_float32": db_float32, "log_mel_max_db_vs_float64": db_float64,
              "graph": str(graph), "model": args.model}
    for key, value in result.items():
        print(f"{key:36s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
