"""Typed settings: the base of every algorithm's config dataclass, and `--set key=value`
parsing driven by the dataclass's own type hints.

Each algorithm declares its hyperparameters as one dataclass beside its agent (CleanRL's
`Args`), every field with a one-line doc (`param`), and checks its own values in `validate`
(each class checks what it adds and calls `super().validate()`, so a config that combines
several, e.g. the Dyna loop with the SAC and TD3 settings, checks all of them). The presets and
the paper's per-task tables that fill these configs live in `runs/config.py`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from usbpo_cli.errors import UsageError


def param(default: Any, doc: str) -> Any:
    """A dataclass field with its one-line documentation attached."""
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata={"doc": doc})


@dataclass
class Settings:
    """Base of the config dataclasses: validation hooks and the `--set` parser."""

    # Keys a user may try that this config deliberately lacks, with the message that explains
    # why, formatted with {value} (e.g. `--set policy=td3` on the model-free sac algo).
    refused_keys: ClassVar[dict[str, str]] = {}

    def validate(self) -> None:
        """Reject values that would crash or silently misbehave deep inside a run."""

    # --- helpers for validate ------------------------------------------------------------
    def require_positive(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be positive, got {getattr(self, name)}")

    def require_non_negative(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must be >= 0, got {getattr(self, name)}")


def config_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config_cls)}


def _annotation_text(kind: Any) -> str:
    """The type as a user reads it in an error ("int | None", "tuple[int, int, int, int]")."""
    if isinstance(kind, type) and not typing.get_args(kind):
        return kind.__name__
    return str(kind).replace("typing.", "")


def _parse_number(text: str, kind: type) -> int | float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError
    if kind is int:
        if not value.is_integer():
            raise ValueError
        return int(value)
    return value


def _parse_tuple(text: str, kind: Any, name: str) -> tuple:
    # (1, 2), [1, 2], 1, 2 and a one-item (7,) all read as a list of numbers
    bracketed = text[:1] + text[-1:] in ("()", "[]")
    body = (text[1:-1] if bracketed else text).strip().removesuffix(",")
    parsed = json.loads(f"[{body}]")
    args = typing.get_args(kind)
    variable = len(args) == 2 and args[1] is Ellipsis
    item_types = {args[0]} if variable else set(args)
    allowed = int if item_types == {int} else (int, float)
    if not isinstance(parsed, list) or not all(
        isinstance(v, allowed) and not isinstance(v, bool) and math.isfinite(v) for v in parsed
    ):
        raise ValueError
    # variable-length tuples are checked by validate (their length depends on other settings)
    if not variable and len(parsed) != len(args):
        raise UsageError(f"--set {name}: expected {len(args)} numbers, got {len(parsed)}")
    return tuple(parsed)


def parse_value(raw: str, kind: Any, name: str) -> Any:
    """Parse `raw` into `kind` (a resolved type hint), naming the field in any error."""
    text = raw.strip()
    options = (
        typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else ()
    )
    optional = type(None) in options
    if optional:
        if text.lower() in ("none", "null"):
            return None
        (kind,) = [option for option in options if option is not type(None)]
    try:
        if typing.get_origin(kind) is tuple:
            return _parse_tuple(text, kind, name)
        if kind is bool:
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no"):
                return False
            raise ValueError
        if kind in (int, float):
            return _parse_number(text, kind)
        if kind is str:
            return text
        raise TypeError(f"setting {name}: no parser for {kind!r}")
    except (ValueError, json.JSONDecodeError):
        shown = _annotation_text(kind) + (" | None" if optional else "")
        raise UsageError(f"--set {name}={raw!r}: not a valid {shown}") from None


def parse_overrides(pairs: list[str], config_cls: type) -> dict[str, Any]:
    """Turn `key=value` strings into values of the config's field types, rejecting unknown keys
    with a suggestion.

    A dotted key is an alias for the field with underscores: `cmlo.alpha=3` sets `cmlo_alpha`
    (and `phase2.lr=1e-5` sets `phase2_lr`), so an algorithm's own settings read as a group.
    """
    fields = config_fields(config_cls)
    hints = typing.get_type_hints(config_cls)
    refused: dict[str, str] = getattr(config_cls, "refused_keys", {})
    overrides: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--set {pair!r}: expected key=value")
        given, raw = pair.split("=", 1)
        given = given.strip()
        key = given.replace(".", "_")
        if key not in fields and key in refused:
            raise UsageError(refused[key].format(value=raw.strip()))
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"--set {given}: no such setting for this algorithm{hint}")
        overrides[key] = parse_value(raw, hints[key], key)
    return overrides
