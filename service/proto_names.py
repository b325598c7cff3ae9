"""The strings used in records ("ok", "health_changed", ...) and their proto enum values, both ways."""

from __future__ import annotations

from service.rpc import roomtone_pb2 as pb

HEALTH_TO_PB = {"ok": pb.HEALTH_STATE_OK, "degraded": pb.HEALTH_STATE_DEGRADED, "faulty": pb.HEALTH_STATE_FAULTY}
HEALTH_FROM_PB = {v: k for k, v in HEALTH_TO_PB.items()}
KIND_TO_PB = {"window": pb.EVENT_KIND_WINDOW, "activity_changed": pb.EVENT_KIND_ACTIVITY_CHANGED,
              "health_changed": pb.EVENT_KIND_HEALTH_CHANGED}
KIND_FROM_PB = {v: k for k, v in KIND_TO_PB.items()}
