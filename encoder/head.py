"""The activity head: standardisation + multinomial logistic regression on frozen embeddings.

Fitting uses scikit-learn; prediction is pure numpy so the daemon needs nothing but the arrays stored
in the model file (`ActivityHead.to_dict`). The linear probe of the evaluation fits the same head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

#: Inverse L2 strength of the logistic regression; also what the evaluation probe uses.
DEFAULT_C = 1.0


class HeadError(ValueError):
    """A head dict or its input that cannot be used; the message says which field and why."""


@dataclass(frozen=True)
class ActivityHead:
    """Class names, scaler mean/scale [D] and logistic-regression coef [classes, D] / intercept [classes]."""

    class_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    def __post_init__(self) -> None:
        classes, dim = len(self.class_names), self.mean.shape[0]
        if classes < 2:
            raise HeadError(f"ActivityHead needs at least 2 classes, got {list(self.class_names)}")
        expected = {"mean": (dim,), "scale": (dim,), "coef": (classes, dim), "intercept": (classes,)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise HeadError(f"ActivityHead.{name} has shape {getattr(self, name).shape}, expected {shape}")

    @property
    def embedding_dim(self) -> int:
        """Dimension of the embeddings the head takes."""
        return int(self.mean.shape[0])

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """Class scores [n, classes] before the softmax."""
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.embedding_dim:
            raise HeadError(f"ActivityHead expects embeddings [n, {self.embedding_dim}], got {x.shape}")
        return ((x - self.mean) / self.scale) @ self.coef.T + self.intercept

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """Class posteriors [n, classes] (softmax of `logits`), in `class_names` order."""
        z = self.logits(embeddings)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, embeddings: np.ndarray) -> list[str]:
        """Most probable class name per row."""
        return [self.class_names[i] for i in self.predict_proba(embeddings).argmax(axis=1)]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (JSON- and torch.save-friendly) for storing in a model file."""
        return {
            "class_names": list(self.class_names),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ActivityHead":
        """Rebuild from `to_dict` output; a missing or unknown key is a HeadError naming it."""
        keys = {"class_names", "mean", "scale", "coef", "intercept"}
        if not isinstance(data, dict):
            raise HeadError(f"ActivityHead.from_dict expects a dict, got {type(data).__name__}")
        missing, unknown = sorted(keys - set(data)), sorted(set(data) - keys)
        if missing or unknown:
            raise HeadError(f"ActivityHead dict: missing key(s) {missing}, unknown key(s) {unknown}")
        arrays = {k: np.asarray(data[k], dtype=np.float64) for k in keys - {"class_names"}}
        if not np.all(np.isfinite(arrays["scale"])) or np.any(arrays["scale"] <= 0):
            raise HeadError("ActivityHead dict: scale must be finite and positive")
        return cls(class_names=tuple(str(c) for c in data["class_names"]), **arrays)


def fit_head(embeddings: np.ndarray, labels: Sequence[str], C: float = DEFAULT_C, seed: int = 0,
             sample_weight: Sequence[float] | None = None) -> ActivityHead:
    """Fit StandardScaler + multinomial LogisticRegression on embeddings [n, D] with string labels; rows
    weigh ``sample_weight`` each (default 1; a home's corrections weigh more than the shared set's rows)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise HeadError(f"fit_head needs embeddings [n, D] and n labels, got {x.shape} and {y.shape[0]} labels")
    weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if weights is not None and (weights.shape != y.shape or not np.all(np.isfinite(weights)) or np.any(weights <= 0)):
        raise HeadError(f"fit_head: sample_weight must be {y.shape[0]} finite positive numbers, got shape {weights.shape}")
    class_names = tuple(sorted(set(y.tolist())))
    if len(class_names) < 2:
        raise HeadError(f"fit_head needs at least 2 classes, got {list(class_names)}")
    scaler = StandardScaler().fit(x, sample_weight=weights)
    # Constant dimensions get scale 1 from sklearn already; keep the guard for hand-made dicts.
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    model = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    model.fit((x - scaler.mean_) / scale, y, sample_weight=weights)
    coef, intercept = model.coef_, model.intercept_
    if len(class_names) == 2:
        # sklearn keeps one logit for two classes; softmax over [0, w.x+b] gives the same posterior.
        coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
        intercept = np.array([0.0, intercept[0]])
    order = [list(model.classes_).index(c) for c in class_names]
    return ActivityHead(class_names, scaler.mean_.copy(), scale.copy(), coef[order], intercept[order])
