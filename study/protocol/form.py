"""The study-file schema as form fields, for the builder page (app_pages/builder.py).

The same walk over the pydantic models as the settings reference (docs.settings_reference):
every field of Study, in schema order, with its description as the help text, its default and
what kind of widget it needs. The UI layer turns each FieldSpec into a widget; nothing here
imports streamlit, so the mapping is tested on its own.

Kinds:
  text, number, integer, bool    one value (optional ones may be left empty)
  choice                         one of a Literal's values (a select)
  multichoice                    a list of a Literal's values, or of known ids (instruments, items)
  words                          participant-facing text: one input per study language
  wordslist                      a list of such texts (attention-check options)
  lines                          a list of free text, one per line
  entries                        measures lists: instrument ids or {name, items}
  section                        a nested model (an expander); `optional` ones may be switched off
  rows                           a list of nested models (add/remove rows)
  yaml                           anything else (e.g. an item's anchors mapping), edited as YAML
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from study import instruments as ins
from study import item_types, texts
from study.protocol.docs import _constraints
from study.protocol.schema import Study
from study.protocol.wording import _inner_model


@dataclass
class FieldSpec:
    name: str
    path: str  # dotted path in the study file; rows as name[] (docs.settings_reference's form)
    kind: str
    help: str
    required: bool
    default: Any  # the schema's default (None for required fields)
    optional: bool = False  # the value may be empty (None)
    choices: list[str] = field(default_factory=list)
    constraints: str = ""
    children: list[FieldSpec] = field(default_factory=list)


# Lists of known ids the schema types only as str: offered as choices.
def _known_choices(path: str) -> list[str] | None:
    if path == "languages":
        return texts.languages()
    if path == "demographics":
        return [i.id for i in ins.INSTRUMENTS["demographics"].items]
    if path.endswith("].type") and path.startswith("measures.custom_items"):
        return list(item_types.TYPES)
    return None


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        if len(rest) < len(args):
            return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    return annotation, False


def _is_words(annotation: Any, metadata: Any = ()) -> bool:
    if texts.TRANSLATABLE in metadata:
        return True
    if typing.get_origin(annotation) is typing.Annotated:
        return texts.TRANSLATABLE in typing.get_args(annotation)[1:]
    return False


def _default(info: FieldInfo) -> Any:
    if info.is_required():
        return None
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return None
    if isinstance(value, texts.Text):
        return dict(value) if isinstance(value, dict) else str(value)
    return value


def _spec(name: str, info: FieldInfo, path: str) -> FieldSpec:
    annotation, optional = _strip_optional(info.annotation)
    common = {"name": name, "path": path, "help": info.description or "", "required": info.is_required(),
              "default": _default(info), "optional": optional, "constraints": _constraints(info).strip(" ()")}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if _is_words(annotation, info.metadata):
        return FieldSpec(kind="words", **common)
    if origin is Literal:
        return FieldSpec(kind="choice", choices=[str(a) for a in args], **common)
    if origin is list:
        element = args[0]
        if typing.get_origin(element) is Literal:
            return FieldSpec(kind="multichoice", choices=[str(a) for a in typing.get_args(element)], **common)
        if _is_words(element):
            return FieldSpec(kind="wordslist", **common)
        inner = _inner_model(element)
        if typing.get_origin(element) is typing.Annotated and inner is not element:
            # measures lists: an instrument id, or {name, items}
            return FieldSpec(kind="entries", choices=list(ins.INSTRUMENTS), **common)
        if isinstance(element, type) and issubclass(element, BaseModel):
            return FieldSpec(kind="rows", children=_walk(element, f"{path}[]."), **common)
        known = _known_choices(path)
        if known:
            return FieldSpec(kind="multichoice", choices=known, **common)
        return FieldSpec(kind="lines", **common)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return FieldSpec(kind="section", children=_walk(annotation, f"{path}."), **common)
    if annotation is bool:
        return FieldSpec(kind="bool", **common)
    if annotation is int:
        return FieldSpec(kind="integer", **common)
    if annotation is float:
        return FieldSpec(kind="number", **common)
    if annotation is str:
        known = _known_choices(path)
        if known:
            return FieldSpec(kind="choice", choices=known, **common)
        return FieldSpec(kind="text", **common)
    return FieldSpec(kind="yaml", **common)


def _walk(model: type[BaseModel], prefix: str) -> list[FieldSpec]:
    return [_spec(name, info, f"{prefix}{name}") for name, info in model.model_fields.items()]


def form_fields(model: type[BaseModel] = Study) -> list[FieldSpec]:
    """Every setting of the study file as a FieldSpec tree, in schema order."""
    return _walk(model, "")


def all_paths(fields: list[FieldSpec] | None = None) -> list[str]:
    """Every field path of the tree (rows as name[]), depth first."""
    out: list[str] = []
    for spec in form_fields() if fields is None else fields:
        out.append(spec.path)
        if spec.kind == "rows":
            out.append(spec.path + "[]")  # a row as a whole
        out.extend(all_paths(spec.children))
    return out


_WHERE = re.compile(r"^[^:]*\.ya?ml: ")
_INDEX = re.compile(r"\[\d+\]")


def problem_path(where: str) -> str:
    """The setting path of a Problem's `where` ('study.yaml: design.seed' -> 'design.seed')."""
    return _WHERE.sub("", where, count=1).strip()


def field_for(path: str, known: set[str]) -> str | None:
    """The form field a problem at `path` belongs to: the longest known path it starts with.

    Rows keep their index ('attention_checks[1].correct'); `known` holds schema paths
    ('attention_checks[].correct'), so the index is compared as []. Returns the path with its
    index, or None when it names no field (a manifest problem, the top level)."""
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    best = None
    built = ""
    for part in parts:
        built = built + part if part.startswith("[") else (f"{built}.{part}" if built else part)
        if _INDEX.sub("[]", built) in known:
            best = built
    return best


def errors_by_field(problems: list[Any], known: set[str] | None = None) -> tuple[dict[str, list[str]], list[Any]]:
    """(field path -> messages, problems that belong to no field); warnings included."""
    known = set(all_paths()) if known is None else known
    by_field: dict[str, list[str]] = {}
    loose = []
    for p in problems:
        target = field_for(problem_path(p.where), known)
        if target is None:
            loose.append(p)
        else:
            by_field.setdefault(target, []).append(("warning: " if p.severity == "warning" else "") + p.message)
    return by_field, loose
