"""A home's activity corrections as head-training rows: what `roomtone train-head --corrections` adds to the
shared set. A correction is one stored window's embedding with the class a user says it really was; it
weighs more than a shared-set row because it comes from the home's own microphone, which the shared set
never heard (bench/corrections.py measures the weight and how many corrections fix a confusion).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: Weight of one correction against one shared-set row (bench/corrections.py, docs/sounds.md).
DEFAULT_CORRECTION_WEIGHT = 10.0


class CorrectionsError(ValueError):
    """Corrections that cannot be added to a head's training rows; the message says which and why."""


def rows_with_corrections(features: np.ndarray, labels: Sequence[str], corrected: np.ndarray,
                          corrected_labels: Sequence[str], weight: float = DEFAULT_CORRECTION_WEIGHT
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features, labels, sample weights)``: the shared rows at weight 1 followed by the corrections at
    ``weight``. A correction's class must be one of the shared set's (the head cannot learn a class from a
    handful of windows alone) and its embedding must have the shared rows' size."""
    x, y = np.asarray(features, dtype=np.float64), np.asarray(labels)
    cx, cy = np.asarray(corrected, dtype=np.float64).reshape(-1, x.shape[1]), np.asarray(corrected_labels)
    if not (np.isfinite(weight) and weight > 0):
        raise CorrectionsError(f"correction weight must be a positive number, got {weight}")
    if cx.shape[0] != cy.shape[0]:
        raise CorrectionsError(f"{cx.shape[0]} corrected embeddings but {cy.shape[0]} labels")
    unknown = sorted(set(cy.tolist()) - set(y.tolist()))
    if unknown:
        raise CorrectionsError(f"correction class(es) {unknown} are not classes of the training data "
                               f"{sorted(set(y.tolist()))}")
    weights = np.concatenate([np.ones(len(y)), np.full(len(cy), float(weight))])
    return np.concatenate([x, cx]), np.concatenate([y, cy]), weights
