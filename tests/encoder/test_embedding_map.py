"""Specification of the embedding map: t-SNE coordinates, a PNG, and a self-contained hover HTML."""

from __future__ import annotations

import re

import numpy as np

from encoder.embedding_map import map_html, plot_map_png, tsne_2d


def test_tsne_gives_one_2d_point_per_embedding():
    x = np.random.default_rng(0).normal(size=(20, 8))
    assert tsne_2d(x).shape == (20, 2)


def test_html_shows_every_points_file_and_label_on_hover_without_fetching_anything():
    points = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, -1.0]])
    page = map_html(points, ["speech", "typing", "speech"], ["a/x.flac", "b/<y>.flac", "c/z.flac"], "map")
    assert page.count("<circle") == 3
    assert 'data-file="b/&lt;y&gt;.flac"' in page and 'data-label="typing"' in page
    assert "<title>a/x.flac\nspeech</title>" in page
    assert "mouseenter" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)


def test_png_map_is_written(tmp_path):
    points = np.random.default_rng(1).normal(size=(10, 2))
    path = plot_map_png(points, ["a"] * 5 + ["b"] * 5, tmp_path / "map.png", "map")
    assert path.read_bytes()[:4] == b"\x89PNG"
