"""Pydantic errors turned into a setting's path and a plain sentence; the helpers that validate one setting alone."""

from __future__ import annotations

import difflib
import typing
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from study.protocol.schema import Study


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema model that holds the setting at loc (for did-you-mean suggestions)."""
    model: Any = Study
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = _inner_model(model.model_fields[part].annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    for arg in typing.get_args(annotation) or ():
        found = _inner_model(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation


def _plain(error: dict[str, Any]) -> tuple[str, str]:
    """A pydantic error as (field path, plain sentence)."""
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    shown = repr(got) if not isinstance(got, dict | list) else ("a mapping" if isinstance(got, dict) else "a list")
    # pydantic adds the union member or the model name into loc for some errors; drop those
    loc = tuple(p for p in loc if not (isinstance(p, str) and (p.startswith(("function-", "literal[")) or p in ("str", "int", "float", "bool", "none", "instrument-choice"))))
    path = _path(loc)
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        key = str(loc[-1])
        known = list(parent.model_fields) if parent else []
        hint = difflib.get_close_matches(key, known, n=1)
        msg = f"{key!r} is not a known setting"
        msg += f"; did you mean {hint[0]!r}?" if hint else ""
        msg += f" Known settings here: {', '.join(known)}." if known else ""
        return path, msg
    if kind == "missing":
        return path, "is required but missing"
    if kind == "literal_error":
        return path, f"must be one of {ctx.get('expected', '')} (got {shown})"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return path, f"must be a whole number (got {shown})"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return path, f"must be a number (got {shown})"
    if kind in ("bool_type", "bool_parsing"):
        return path, f"must be true or false (got {shown})"
    if kind == "string_type":
        return path, f"must be text (got {shown})"
    if kind in ("list_type", "tuple_type", "set_type"):
        return path, f"must be a list (got {shown})"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return path, f"must be a mapping of settings (key: value lines), got {shown}"
    if kind == "greater_than":
        return path, f"must be greater than {ctx['gt']} (got {shown})"
    if kind == "greater_than_equal":
        return path, f"must be at least {ctx['ge']} (got {shown})"
    if kind == "less_than":
        return path, f"must be less than {ctx['lt']} (got {shown})"
    if kind == "less_than_equal":
        return path, f"must be at most {ctx['le']} (got {shown})"
    if kind in ("too_short", "string_too_short"):
        if isinstance(got, str):
            return path, "must not be empty"
        return path, f"must have at least {ctx.get('min_length', 1)} entr{'y' if ctx.get('min_length') == 1 else 'ies'}"
    if kind in ("too_long", "string_too_long"):
        return path, f"is too long (at most {ctx.get('max_length')})"
    if kind == "value_error":
        return path, str(ctx.get("error", error["msg"])).removeprefix("Value error, ")
    return path, error["msg"]


def _adapter(field: FieldInfo) -> TypeAdapter:
    annotation = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    return TypeAdapter(annotation)


def _list_model(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is list:
        inner = typing.get_args(annotation)[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return None


def _valid_or_none(model: type[BaseModel], value: Any) -> BaseModel | None:
    try:
        return model.model_validate(value)
    except ValidationError:
        return None
