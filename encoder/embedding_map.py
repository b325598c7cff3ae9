"""The embedding map (the thesis's Figure 1): a t-SNE projection to 2-D, coloured by label, as a PNG
and as one self-contained HTML file (inline SVG + a few lines of JS, no CDN) where hovering a point
shows its file and label."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import numpy as np

# matplotlib's tab10 + a few more, so PNG and HTML use the same colour for a label.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
)


def tsne_2d(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE to 2-D (PCA init, cosine metric, perplexity min(30, (n-1)/3)) -> [n, 2]."""
    from sklearn.manifold import TSNE

    x = np.asarray(embeddings, dtype=np.float64)
    if len(x) < 4:
        raise ValueError(f"tsne_2d needs at least 4 points, got {len(x)}")
    perplexity = float(min(30.0, (len(x) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", metric="cosine", random_state=seed).fit_transform(x)


def label_colours(labels: Sequence[str]) -> dict[str, str]:
    """A fixed colour per sorted distinct label."""
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(sorted(set(labels)))}


def plot_map_png(points: np.ndarray, labels: Sequence[str], path: str | Path, title: str) -> Path:
    """Scatter plot of the 2-D points coloured by label, legend outside, written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    colours = label_colours(labels.tolist())
    fig, ax = plt.subplots(figsize=(8, 6), dpi=120)
    for label, colour in colours.items():
        mask = labels == label
        ax.scatter(points[mask, 0], points[mask, 1], s=12, c=colour, label=f"{label} ({mask.sum()})", alpha=0.85)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def map_html(points: np.ndarray, labels: Sequence[str], names: Sequence[str], title: str) -> str:
    """One HTML page: an SVG scatter with a legend; hovering a point shows its file and label."""
    width, height, pad = 760, 560, 20
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    xy = pad + (points - lo) / span * np.array([width - 2 * pad, height - 2 * pad])
    colours = label_colours(list(labels))
    circles = []
    for (x, y), label, name in zip(xy, labels, names):
        text = html.escape(f"{name}\n{label}")
        circles.append(
            f'<circle cx="{x:.1f}" cy="{height - y:.1f}" r="4" fill="{colours[label]}" '
            f'data-file="{html.escape(str(name))}" data-label="{html.escape(str(label))}"><title>{text}</title></circle>'
        )
    legend = "".join(
        f'<li><span style="background:{c}"></span>{html.escape(label)} ({list(labels).count(label)})</li>'
        for label, c in colours.items()
    )
    script = """
const tip = document.getElementById('tip');
document.querySelectorAll('circle').forEach(c => {
  c.addEventListener('mouseenter', e => {
    tip.textContent = c.dataset.file + '  \\u2014  ' + c.dataset.label;
    tip.style.display = 'block';
  });
  c.addEventListener('mousemove', e => { tip.style.left = (e.pageX + 12) + 'px'; tip.style.top = (e.pageY + 12) + 'px'; });
  c.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
});"""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; }}
.wrap {{ display: flex; gap: 16px; align-items: flex-start; }}
svg {{ border: 1px solid #ccc; background: #fff; }}
circle {{ stroke: #fff; stroke-width: 0.5; opacity: 0.9; }}
circle:hover {{ stroke: #000; stroke-width: 1.5; r: 6; }}
ul {{ list-style: none; padding: 0; font-size: 13px; }}
li span {{ display: inline-block; width: 11px; height: 11px; margin-right: 6px; border-radius: 50%; }}
#tip {{ position: absolute; display: none; background: #222; color: #fff; padding: 4px 8px; font-size: 12px;
        border-radius: 3px; pointer-events: none; white-space: pre; }}
</style></head><body>
<h2>{html.escape(title)}</h2>
<p>t-SNE of one embedding per segment ({len(names)} points). Hover a point for its file and label.</p>
<div class="wrap">
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">
{chr(10).join(circles)}
</svg>
<ul>{legend}</ul>
</div>
<div id="tip"></div>
<script>{script}</script>
</body></html>
"""
