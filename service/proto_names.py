"""The strings used in records ("ok", "health_changed", ...) and their proto enum values, both ways."""

from __future__ import annotations

from service.rpc import roomtone_pb2 as pb
from service.vocabulary import (ACTIVITY_CHANGED, HEALTH_CHANGED, HEALTH_DEGRADED, HEALTH_FAULTY, HEALTH_OK, SESSION_ENDED,
                                SESSION_STARTED, WINDOW)

HEALTH_TO_PB = {HEALTH_OK: pb.HEALTH_STATE_OK, HEALTH_DEGRADED: pb.HEALTH_STATE_DEGRADED, HEALTH_FAULTY: pb.HEALTH_STATE_FAULTY}
HEALTH_FROM_PB = {v: k for k, v in HEALTH_TO_PB.items()}
KIND_TO_PB = {WINDOW: pb.EVENT_KIND_WINDOW, ACTIVITY_CHANGED: pb.EVENT_KIND_ACTIVITY_CHANGED,
              HEALTH_CHANGED: pb.EVENT_KIND_HEALTH_CHANGED, SESSION_STARTED: pb.EVENT_KIND_SESSION_STARTED,
              SESSION_ENDED: pb.EVENT_KIND_SESSION_ENDED}
KIND_FROM_PB = {v: k for k, v in KIND_TO_PB.items()}
