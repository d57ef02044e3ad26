"""Command-line flags derived from the configuration's fields: one name, one default, one help text.

A field of :class:`~unetkit.config.ModelConfig`, :class:`~unetkit.config.DataConfig`,
:class:`~unetkit.config.TrainConfig` or :class:`~unetkit.config.PredictConfig` becomes the flag
``--field-name`` (underscores → hyphens), with its type, its choices, the help written beside the field
(``config.option``) and "(default: …)" from the field's default. Booleans are ``--x/--no-x``. An unset flag
is ``None``: the value of the plan, ``--config`` or the default is kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any

from ..config import DataConfig, EvaluateConfig, ModelConfig, OutputConfig, PredictConfig, TrainConfig

__all__ = ["add_options", "apply_options", "field_of", "given_options"]

SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "predict": PredictConfig,
    "output": OutputConfig,
    "evaluate": EvaluateConfig,
}


def field_of(section: str, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(SECTIONS[section]):
        if f.name == name:
            return f
    raise KeyError(f"{section}.{name}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(f: dataclasses.Field) -> str:
    meta = f.metadata
    if "default_text" in meta:
        return meta["default_text"]
    default = f.default if f.default is not dataclasses.MISSING else None
    if isinstance(default, bool):
        return "on" if default else "off"
    if default is None:
        return ""
    return f"{default:g}" if isinstance(default, float) else str(default)


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(element type, is_list) of a field's type hint, ``X | None`` unwrapped."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True
    return hint, False


def add_options(
    group: argparse._ActionsContainer, section: str, names: Sequence[str], **overrides: dict[str, Any]
) -> None:
    """Add the flags of ``section``'s fields ``names`` to ``group`` (``overrides[name]``: argparse keywords
    that differ for this command, e.g. a default)."""
    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    for name in names:
        f = field_of(section, name)
        meta = f.metadata
        base, is_list = _base_type(hints[name])
        default = _default_text(f)
        text = meta.get("help", "")
        said = [f"default: {default}"] if default else []
        if meta.get("valid") is not None:  # the range, as check_values refuses outside it
            said.append(str(meta["valid"]))
        help_text = f"{text} ({'; '.join(said)})" if said and text else text
        kw: dict[str, Any] = {"dest": name, "default": None, "help": help_text.replace("%", "%%")}
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = base if base in (int, float) else str
            if is_list:
                kw["nargs"] = "+"
            if meta.get("choices"):
                kw["choices"] = meta["choices"]
            if meta.get("metavar"):
                kw["metavar"] = meta["metavar"]
        kw.update(overrides.get(name, {}))
        group.add_argument(_flag(name), **kw)
        for alias in meta.get("aliases", ()):  # earlier spellings still work; not shown in --help
            group.add_argument(alias, dest=name, type=kw.get("type", str), help=argparse.SUPPRESS)


def apply_options(args: argparse.Namespace, obj: Any, section: str, skip: Sequence[str] = ()) -> Any:
    """``obj`` (a config section) with every flag of ``section`` that was given on the command line
    (``skip``: fields the command sets itself, e.g. ``train``'s ``--time-budget``, a duration)."""
    changes = {}
    for f in dataclasses.fields(SECTIONS[section]):
        if f.name in skip:
            continue
        value = getattr(args, f.name, None)
        if value is not None:
            changes[f.name] = value
    return dataclasses.replace(obj, **changes)


def given_options(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The fields of ``section`` given on the command line, as keyword arguments: the rest are left to the
    Python function's defaults, which are the section's (tests/unit/test_house.py checks every surface)."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(SECTIONS[section])
        if getattr(args, f.name, None) is not None
    }
