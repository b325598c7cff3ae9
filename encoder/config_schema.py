"""The one config system: every typed config derives from `Section` (pydantic, frozen, unknown keys refused,
every number finite), and plain data (a TOML table, a JSON file, a model file's dict) becomes one through one
of the two readers here, whose errors name each bad key:

- `build`: the daemon's sections (service/config.py) and `roomtone health --config`:
  ``store.max_age_days: Input should be ...``, ``mics[0].pth: unknown config key``;
- `Section.from_dict`: the configs stored in model files and training files (`LogMelConfig`, `EncoderConfig`,
  `TrainConfig` and its tables, `DriftConfig`): ``train.toml: unknown key(s) ['learning_rat']; known keys are
  [...]``, ``train.toml: EncoderConfig: unknown key(s) ['widht']; ...``. `Section.to_dict` is its inverse and
  `Section.replaced` a validated copy with some keys changed.

Rules that span keys go in a ``model_validator(mode="after")`` raising ValueError whose message names the
key (``TrainConfig.loss must be one of ...``); both readers pass that message through as written.
"""

from __future__ import annotations

import re
import typing
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys refused, numbers finite."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True)

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> Self:
        """Rebuild from plain data (`to_dict` output, a TOML/JSON table); ConfigError (a ValueError) names
        ``source`` (default: the class name) and every bad key."""
        source = source or cls.__name__
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a table of {cls.__name__} keys, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {_stored_message(cls, exc)}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples as lists, nested sections as dicts) for a model file, JSON or TOML."""
        return self.model_dump(mode="json")

    def replaced(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied, validated like `from_dict` (model_copy would skip validation)."""
        plain = {k: v.to_dict() if isinstance(v, Section) else v for k, v in changes.items()}
        return type(self).from_dict({**self.to_dict(), **plain})


# --- error messages ---------------------------------------------------------------------------------------

def key_of(loc: tuple[Any, ...]) -> str:
    """``('mics', 0, 'path')`` -> ``mics[0].path``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _plain_loc(error: Any) -> tuple[Any, ...]:
    """The error's key path without pydantic's internal steps (validator and union tags)."""
    return tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith(("function-", "tagged-union"))))


def _is_unknown_key(error: Any) -> bool:
    return error["type"] in ("extra_forbidden", "unexpected_keyword_argument")


def _message(exc: ValidationError, origin: typing.Mapping[str, str] | None = None) -> str:
    """`build`'s format: one line per error, each naming its key (and the environment variable it came from)."""
    lines = []
    for error in exc.errors(include_url=False):
        key = key_of(_plain_loc(error))
        msg = "unknown config key" if _is_unknown_key(error) else error["msg"].removeprefix("Value error, ")
        if re.match(r"^\w+(\.\w+|\[\d+\])+: ", msg):  # a model validator that names its own key
            lines.append(msg)
            continue
        source = f" (from {origin[key]})" if origin and key in origin else ""
        shown = error.get("input")
        got = "" if isinstance(shown, dict) or _is_unknown_key(error) else f", got {shown!r}"
        lines.append(f"{key}{source}: {msg}{got}")
    return "; ".join(lines)


def build(cls: type[BaseModel], data: dict[str, Any], origin: typing.Mapping[str, str] | None = None) -> Any:
    """An instance of the config model ``cls`` from plain data; ConfigError names every bad key."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_message(exc, origin)) from None


def _section_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The nested section class that ``loc`` (a path of field names) leads to from ``cls``."""
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        cls = field.annotation
    return cls


def _stored_message(cls: type[BaseModel], exc: ValidationError) -> str:
    """`Section.from_dict`'s format: unknown keys listed per table beside the table's known keys (a nested table
    named by its class), a validator's message as written, any other error as ``key: message, got value``."""
    unknown: dict[tuple[Any, ...], list[str]] = {}
    lines = []
    for error in exc.errors(include_url=False):
        loc = _plain_loc(error)
        if _is_unknown_key(error):
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
        elif error["type"] == "value_error":
            lines.append(error["msg"].removeprefix("Value error, "))
        else:
            lines.append(f"{key_of(loc)}: {error['msg']}, got {error.get('input')!r}")
    for table, keys in unknown.items():
        section = _section_at(cls, table)
        known = sorted(section.model_fields) if section else []
        name = f"{section.__name__}: " if table and section else (f"{key_of(table)}: " if table else "")
        lines.insert(0, f"{name}unknown key(s) {sorted(keys)}; known keys are {known}")
    return "; ".join(lines)
