"""Specification of the k-Means sweep: elbow, silhouette, purity and NMI at the best k."""

from __future__ import annotations

import numpy as np

from encoder.clusters import kmeans_sweep, plot_sweep, purity


def _blobs(k: int, per: int = 15, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """k tight, well separated blobs labelled l0..l{k-1}."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(k, 5))
    x = np.concatenate([c + rng.normal(scale=0.3, size=(per, 5)) for c in centres])
    return x, [f"l{i}" for i in range(k) for _ in range(per)]


def test_best_silhouette_k_is_the_number_of_separated_blobs_with_perfect_purity_and_nmi():
    x, labels = _blobs(4)
    sweep = kmeans_sweep(x, labels, ks=range(2, 9), progress=False, restarts=3)
    assert sweep.ks == (2, 3, 4, 5, 6, 7, 8)
    assert sweep.best_k == 4
    assert sweep.purity == 1.0 and abs(sweep.nmi - 1.0) < 1e-9


def test_inertia_never_grows_with_k():
    x, labels = _blobs(3)
    inertia = kmeans_sweep(x, labels, ks=range(2, 7), progress=False, restarts=3).inertia
    assert all(a >= b for a, b in zip(inertia, inertia[1:]))


def test_purity_counts_each_clusters_majority_label():
    labels = ["a", "a", "b", "b", "b", "c"]
    assert purity(labels, np.array([0, 0, 1, 1, 1, 1])) == 5 / 6
    assert purity(labels, np.zeros(6, dtype=int)) == 3 / 6


def test_ks_that_do_not_fit_the_data_are_skipped():
    x, labels = _blobs(2, per=3)
    assert kmeans_sweep(x, labels, ks=range(2, 16), progress=False, restarts=3).ks == (2, 3, 4, 5)


def test_elbow_and_silhouette_plots_are_written(tmp_path):
    x, labels = _blobs(3)
    elbow, silhouette = plot_sweep(kmeans_sweep(x, labels, ks=range(2, 5), progress=False, restarts=3), tmp_path, num_classes=3)
    for path in (elbow, silhouette):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
