"""The base of every typed config section: the daemon's sections (service/config.py) and the health
thresholds the daemon shares with the offline tools (encoder/signal_checks.py). Pydantic, frozen, unknown
keys refused, every number finite; each field carries its default, bounds and unit."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys refused, numbers finite."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True)
