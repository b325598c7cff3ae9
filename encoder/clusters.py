"""k-Means sweep over the embedding: inertia (elbow), silhouette, and purity/NMI at the best-silhouette k."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ClusterSweep:
    """Per-k inertia and silhouette, the best-silhouette k, and purity/NMI of its clustering."""

    ks: tuple[int, ...]
    inertia: tuple[float, ...]
    silhouette: tuple[float, ...]
    best_k: int
    purity: float
    nmi: float
    assignment: np.ndarray


def purity(labels: Sequence[str], clusters: np.ndarray) -> float:
    """Fraction of points whose cluster's majority label is their own label."""
    labels = np.asarray(labels)
    hits = 0
    for c in np.unique(clusters):
        _, counts = np.unique(labels[clusters == c], return_counts=True)
        hits += counts.max()
    return hits / len(labels)


def kmeans_sweep(
    embeddings: np.ndarray, labels: Sequence[str], ks: Sequence[int] = range(2, 16), seed: int = 0, progress: bool = True,
    restarts: int = 10,
) -> ClusterSweep:
    """Fit k-Means (``restarts`` initialisations, best kept) for every k; silhouette on the Euclidean distance of the given vectors."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score, silhouette_score
    from tqdm import tqdm

    x = np.asarray(embeddings, dtype=np.float64)
    ks = tuple(k for k in ks if 2 <= k < len(x))
    if not ks:
        raise ValueError(f"kmeans_sweep: {len(x)} points are too few for k >= 2")
    inertia, silhouette, assignments = [], [], []
    for k in tqdm(ks, desc="k-Means", unit="k", disable=not progress):
        model = KMeans(n_clusters=k, n_init=restarts, random_state=seed).fit(x)
        inertia.append(float(model.inertia_))
        silhouette.append(float(silhouette_score(x, model.labels_)))
        assignments.append(model.labels_)
    best = int(np.argmax(silhouette))
    labels = np.asarray(labels)
    return ClusterSweep(
        ks=ks,
        inertia=tuple(inertia),
        silhouette=tuple(silhouette),
        best_k=ks[best],
        purity=float(purity(labels, assignments[best])),
        nmi=float(normalized_mutual_info_score(labels, assignments[best])),
        assignment=assignments[best],
    )


def plot_sweep(sweep: ClusterSweep, out_dir: str | Path, num_classes: int | None = None) -> tuple[Path, Path]:
    """Write ``kmeans_elbow.png`` (inertia vs k) and ``kmeans_silhouette.png``; returns both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    paths = []
    for name, values, ylabel in (("kmeans_elbow.png", sweep.inertia, "inertia (within-cluster sum of squares)"),
                                 ("kmeans_silhouette.png", sweep.silhouette, "mean silhouette")):
        fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=120)
        ax.plot(sweep.ks, values, marker="o")
        ax.axvline(sweep.best_k, color="tab:red", ls="--", lw=1, label=f"best silhouette k={sweep.best_k}")
        if num_classes is not None:
            ax.axvline(num_classes, color="tab:green", ls=":", lw=1, label=f"classes={num_classes}")
        ax.set_xlabel("k")
        ax.set_ylabel(ylabel)
        ax.set_xticks(list(sweep.ks))
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths[0], paths[1]
