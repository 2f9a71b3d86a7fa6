"""The reference of every setting, for docs/study_file.md and the docs-drift test; cli_codebook."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from study import instruments as ins
from study import texts
from study.protocol.loading import load_study
from study.protocol.schema import Study
from study.protocol.wording import _inner_model

# ---------------------------------------------------------------------------------------------
# Reference of every setting, for docs/study_file.md and the docs-drift test.

def _type_name(annotation: Any, metadata: Any = ()) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if texts.TRANSLATABLE in metadata or (origin is typing.Annotated and texts.TRANSLATABLE in args[1:]):
        return "text or {language: text}"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in rest)
        return f"{inner} or empty" if len(rest) < len(args) else inner
    if origin is list:
        if isinstance(args[0], type) and issubclass(args[0], BaseModel):
            return "list of entries (fields below)"
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "entry (fields below)" if annotation.__name__ == "InstrumentChoice" else "section"
    return {str: "text", int: "whole number", float: "number", bool: "true/false"}.get(annotation, str(annotation))


def _constraints(field: FieldInfo) -> str:
    bits = []
    for meta in field.metadata:
        for attr, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "min length")):
            value = getattr(meta, attr, None)
            if value is not None:
                bits.append(f"{word} {value}")
    return f" ({', '.join(bits)})" if bits else ""


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "empty"
    if value == "":
        return '""'
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def settings_reference() -> list[dict[str, str]]:
    """Every setting of the study file: path, type, default and help, in schema order."""
    rows: list[dict[str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            path = f"{prefix}{name}"
            rows.append({"path": path, "type": _type_name(field.annotation, field.metadata) + _constraints(field),
                         "default": _default_text(field), "help": field.description or ""})
            inner = _inner_model(field.annotation)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                is_list = typing.get_origin(field.annotation) is list
                walk(inner, f"{path}[]." if is_list else f"{path}.")

    walk(Study, "")
    return rows


def settings_markdown() -> str:
    """The settings table of docs/study_file.md."""
    lines = ["| setting | type | default | meaning |", "| --- | --- | --- | --- |"]
    for row in settings_reference():
        cells = [f"`{row['path']}`", row["type"], f"`{row['default']}`" if row["default"] not in ("required", "(section)") else row["default"], row["help"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


DOC_START, DOC_END = "<!-- settings:start -->", "<!-- settings:end -->"


def update_settings_doc(path: str | Path) -> bool:
    """Regenerate the settings table between the markers of docs/study_file.md; True if it changed."""
    from study.config import replace_between_markers

    return replace_between_markers(path, DOC_START, DOC_END, settings_markdown())


def cli_codebook(args: Any) -> int:
    """`kuleshov codebook [STUDY] [--out FILE]`: the codebook of a study file (or of every built-in item) as CSV."""
    study = load_study(args.study_file) if getattr(args, "study_file", None) else None
    return ins.write_codebook(study, getattr(args, "out", None))
