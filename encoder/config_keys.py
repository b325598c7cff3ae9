"""Strict reading of typed configs from plain dicts (TOML tables, model files): a misspelt key is an
error that names it, never silently ignored. Every config dataclass's ``from_dict`` calls this."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def reject_unknown_keys(config_class: type, data: dict[str, Any], name: str) -> None:
    """Raise ValueError naming the keys of ``data`` that are not fields of ``config_class``."""
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {unknown}; known keys are {sorted(known)}")
