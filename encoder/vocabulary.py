"""Words and levels that encoder/ and service/ share, written once (service/daemon_vocabulary.py adds the
daemon's own: capture states, addresses, status reasons)."""

from __future__ import annotations

#: A window's health, best to worst (records, the store, the wire and the CLI all use these strings).
HEALTH_OK, HEALTH_DEGRADED, HEALTH_FAULTY = "ok", "degraded", "faulty"
HEALTH_STATES = (HEALTH_OK, HEALTH_DEGRADED, HEALTH_FAULTY)

#: The level, in dBFS, reported for digital silence (an all-zero window) and the floor of every level:
#: store, gRPC and Prometheus all carry this finite number, never -inf.
SILENCE_DBFS = -120.0

#: Batch-norm statistics while training: re-learnt from every batch, or kept as the starting model's
#: (`roomtone adapt`'s default: re-learning them from a home's audio forgets clean audio, docs/sounds.md).
NORM_UPDATE, NORM_FROZEN = "update", "frozen"
NORM_STATISTICS = (NORM_UPDATE, NORM_FROZEN)
