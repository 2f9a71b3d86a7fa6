"""Missing translations: every participant-facing text of a study file in each of its languages.

A study lists its languages (`languages: [en, de]`, the first the default). Each translatable
setting (typed `texts.Words`) may then be written as a mapping `{en: ..., de: ...}`; a plain
string is the default language's wording only. This check names each text that lacks a
language, or has one the study does not list, by its place in the file
(`measures.custom_items[0].anchors.7`). They are warnings, as gettext's own tools treat an
untranslated message: the study still runs, and a participant who chose the missing language
reads that text in the study's first language.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from study import texts
from study.errors import Problem


def _translatable(annotation: Any, metadata: list[Any] = ()) -> bool:
    """Is this field (or the elements of this list/mapping field) a translatable text?"""
    if texts.TRANSLATABLE in metadata:
        return True
    if typing.get_origin(annotation) is typing.Annotated:
        return texts.TRANSLATABLE in typing.get_args(annotation)[1:]
    return False


def _element(annotation: Any) -> Any:
    """The element type of list[X] / dict[K, X] / X | None (else None)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Annotated or not args:
        return None
    return args[-1]


def texts_in(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, text) for every translatable text inside a validated study section."""
    if not isinstance(value, BaseModel):
        return
    for name, field in type(value).model_fields.items():
        yield from _walk(getattr(value, name, None), f"{path}{name}", field.annotation, list(field.metadata))


def _walk(value: Any, path: str, annotation: Any, metadata: list[Any]) -> Iterator[tuple[str, Any]]:
    if value is None:
        return
    if isinstance(value, str):
        if _translatable(annotation, metadata):
            yield path, value
        return
    if isinstance(value, BaseModel):
        yield from texts_in(value, path + ".")
        return
    element = _element(annotation)
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _walk(sub, f"{path}.{key}", element, [])
    elif isinstance(value, (list, tuple)):
        for k, sub in enumerate(value):
            yield from _walk(sub, f"{path}[{k}]", element, [])


def _name(lang: str) -> str:
    try:
        return f"{lang} ({texts.t('language.name', lang)})"
    except KeyError:
        return lang


def translation_problems(sections: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, message) for each text that lacks one of the study's languages or has another."""
    from study.protocol.schema import Study

    langs = sections.get("languages") or [texts.DEFAULT_LANG]
    out: list[tuple[str, str]] = []
    for section, value in sections.items():
        field = Study.model_fields.get(section)
        if section == "languages" or field is None:
            continue
        for path, text in _walk(value, section, field.annotation, list(field.metadata)):
            missing = texts.missing_languages(text, langs)
            if missing:
                example = ", ".join(f"{lang}: ..." for lang in langs)
                out.append((path, f"has no translation for {', '.join(_name(m) for m in missing)} (shown in "
                                  f"{getattr(text, 'lang', langs[0])} instead); the study's languages are {', '.join(langs)}, so write "
                                  f"it as {{{example}}}"))
            extra = [lang for lang in getattr(text, "by_lang", {}) if lang not in langs]
            if extra and not _is_catalogue_default(text):
                out.append((path, f"has wording in {', '.join(map(repr, extra))}, which is not in the study's "
                                  f"languages ({', '.join(langs)}) and is never shown; add it to `languages` or "
                                  "remove it"))
    return out


def _is_catalogue_default(text: Any) -> bool:
    # A default from the catalogue holds every shipped language, whichever the study uses.
    return set(getattr(text, "by_lang", {})) == set(texts.languages())


def translation_warnings(study: Any, label: str = "study.yaml") -> list[Problem]:
    """translation_problems of a whole study, as warnings of `kuleshov validate`."""
    sections = {name: getattr(study, name) for name in type(study).model_fields}
    return [Problem(f"{label}: {path}", msg, "warning") for path, msg in translation_problems(sections)]
