"""Validated configuration: strict pydantic models, YAML loading, one-paragraph errors.

Every input model derives from :class:`StrictModel` (unknown fields are errors).
:func:`validate` turns a pydantic ``ValidationError`` into a
:class:`~commsim.errors.ConfigError` that names the file, the field path, the
value, the rule and the fix, so the CLI can print it without a traceback.

>>> class Link(StrictModel):
...     latency: float
>>> validate(Link, {"latency": 5e-7}).latency
5e-07
>>> validate(Link, {"latncy": 5e-7})
Traceback (most recent call last):
...
commsim.errors.ConfigError: latncy = 5e-07: is not a known field (1 more problem in this input). Fix: remove it or correct its spelling; the known fields are: latency.
"""

from __future__ import annotations

import functools
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from commsim.errors import ConfigError, format_loc

__all__ = ["StrictModel", "dump_yaml", "load_yaml", "validate"]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every input model: unknown fields are errors, values are validated on assignment,
    and numbers must be finite (an infinite or NaN float is refused, not propagated)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True,
                              allow_inf_nan=False, defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_booleans_as_numbers(cls, data: Any) -> Any:
        # pydantic's lax mode reads true/false as 1/0, and YAML reads yes/no/on/off as booleans:
        # `dp: yes` would silently become one replica.
        if isinstance(data, dict):
            numbers = _numbers_only(cls)
            for key, value in data.items():
                if (value is True or value is False) and key in numbers:
                    raise _NestedFieldError(field=str(key), value=value, rule="is true/false where a number is expected",
                                            fix="give a number (YAML reads yes/no/on/off/true/false as true/false)")
        return data


class _NestedFieldError(ConfigError):
    """Raised by a model-level validator about one of the model's fields (its name is relative to the model)."""


@functools.cache
def _numbers_only(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` (names and aliases) that take a number and never a boolean."""
    return frozenset(key for name, info in model.model_fields.items() if _is_number_only(info.annotation)
                     for key in (name, info.alias) if key)


def _is_number_only(annotation: Any) -> bool:
    kinds: set[Any] = set()

    def collect(tp: Any) -> None:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            collect(typing.get_args(tp)[0])
        elif origin is typing.Union or type(tp).__name__ == "UnionType":
            for arg in typing.get_args(tp):
                collect(arg)
        elif origin is typing.Literal:
            kinds.update(type(v) for v in typing.get_args(tp))
        else:
            kinds.add(tp)

    collect(annotation)
    return bool(kinds & {int, float}) and not kinds & {bool, Any, object}


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file, turning a missing file or a syntax error into a ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(field="file", value=str(path), rule="does not exist or is not a file",
                          fix="check the path (it is relative to the current directory)")
    try:
        with path.open(encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(field="YAML syntax", value=where, rule=f"cannot be parsed ({problem})",
                          fix="correct the indentation or quoting at that place", source=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError(field="file", value=str(path), rule="is not UTF-8 text",
                          fix="give a YAML text file") from None


def dump_yaml(data: Any, path: str | Path) -> None:
    """Write ``data`` as block-style YAML."""
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def validate(model: type[M], data: Any, *, source: str | None = None, prefix: str = "") -> M:
    """Validate ``data`` against ``model`` or raise one clear :class:`ConfigError`."""
    if data is None:
        data = {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error_from(exc, model, source=source, prefix=prefix) from None


def config_error_from(
    exc: ValidationError, model: type[BaseModel] | None = None, *, source: str | None = None, prefix: str = ""
) -> ConfigError:
    """Convert the first problem of a pydantic ``ValidationError`` into a ``ConfigError``."""
    # A misspelt field shows up as both "unknown" and "missing": name the misspelling first.
    errors = sorted(exc.errors(include_url=False), key=lambda e: e.get("type") != "extra_forbidden")
    first = errors[0]
    raw_loc = tuple(first.get("loc", ()))
    loc, _ = _walk(model, raw_loc)
    field = format_loc(loc)
    if prefix:
        field = f"{prefix}.{field}" if field != "(top level)" else prefix
    more = f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} in this input)" if len(errors) > 1 else ""
    ctx = first.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, _NestedFieldError):
        field = inner.field if field == "(top level)" else f"{field}.{inner.field}"
        return ConfigError(field=field, value=inner.value, rule=inner.rule + more, fix=inner.fix, source=source)
    if isinstance(inner, ConfigError):
        return type(inner)(field=field, value=inner.value, rule=inner.rule + more, fix=inner.fix, source=source)
    kind = first.get("type", "")
    value = first.get("input")
    rule, fix = _explain(kind, first.get("msg", "is invalid"), ctx, model, raw_loc)
    if kind == "missing":
        return ConfigError(field=field, rule=rule + more, fix=fix, source=source)
    return ConfigError(field=field, value=value, rule=rule + more, fix=fix, source=source)


def _explain(kind: str, msg: str, ctx: dict[str, Any], model: type[BaseModel] | None, loc: tuple) -> tuple[str, str]:
    if kind == "missing":
        return "is required but missing", f"add the field '{loc[-1] if loc else '?'}'"
    if kind == "extra_forbidden":
        known = _known_fields(model, loc[:-1])
        listing = f"; the known fields are: {', '.join(known)}" if known else ""
        return "is not a known field", f"remove it or correct its spelling{listing}"
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        bound = next(iter(ctx.values()), "?")
        words = {"greater_than": "above", "greater_than_equal": "at least",
                 "less_than": "below", "less_than_equal": "at most"}[kind]
        return f"must be {words} {bound}", f"give a value {words} {bound}"
    if kind == "finite_number":
        return "is not finite", "give a finite number"
    if kind == "multiple_of":
        step = ctx.get("multiple_of", "?")
        return f"must be a multiple of {step}", f"give a multiple of {step}"
    if kind == "union_tag_invalid":
        return (f"has {ctx.get('discriminator', 'a tag')} {ctx.get('tag')!r}, which is not one of the known kinds",
                f"use one of {ctx.get('expected_tags', '?')}")
    if kind == "union_tag_not_found":
        return f"does not say which {ctx.get('discriminator', 'kind')} it is", f"add the field {ctx.get('discriminator')}"
    if kind == "literal_error":
        return "is not one of the allowed values", f"use one of {ctx.get('expected', '?')}"
    if kind.endswith("_parsing") or kind.endswith("_type"):
        wanted = kind.split("_")[0]
        names = {"float": "number", "int": "whole number", "bool": "true or false", "string": "text",
                 "dict": "mapping (key: value)", "list": "list", "model": "mapping (key: value)"}
        return f"is not a {names.get(wanted, wanted)}", f"give a {names.get(wanted, wanted)}"
    if kind == "value_error":
        # validators raise ConfigError (handled above); a library's own ValueError has no fix to show
        return msg.removeprefix("Value error, "), "see the documentation of this field"
    if kind == "too_short":
        return msg, "add the missing entries"
    return msg, "see the documentation of this field"


def _known_fields(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The fields allowed at ``loc`` (a cleaned location) inside ``model``."""
    _, current = _walk(model, loc)
    if current is None:
        return []
    return [f.alias or name for name, f in current.model_fields.items()]


def _walk(model: type[BaseModel] | None, loc: tuple) -> tuple[tuple, type[BaseModel] | None]:
    """Follow ``loc`` through nested models; drop the union tags pydantic inserts.

    A discriminated union (``workload: {kind: traffic, ...}``) puts the tag in the
    error location (``workload.traffic.load``); users never write it, so it goes.
    Returns the cleaned location and the model it ends in (None when unknown).
    """
    candidates = [model] if model is not None else []
    clean: list[Any] = []
    for part in loc:
        if isinstance(part, int):
            clean.append(part)
            continue
        owner = next((c for c in candidates if part in c.model_fields), None)
        if owner is not None:
            clean.append(part)
            candidates = _models_in(owner.model_fields[part].annotation)
            continue
        tagged = [c for c in candidates if _tag(c) == part]
        if tagged:
            candidates = tagged
            continue
        clean.append(part)
        candidates = []
    return tuple(clean), candidates[0] if len(candidates) == 1 else None


def _tag(model: type[BaseModel]) -> str | None:
    kind = model.model_fields.get("kind")
    return kind.default if kind is not None and isinstance(kind.default, str) else None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found += [m for m in _models_in(arg) if m not in found]
    return found
