"""Every participant-facing word of the platform, looked up by a stable key.

The catalogue is a gettext file per language, study/locale/<lang>/LC_MESSAGES/kuleshov.po,
read with Babel; the msgid is the key (e.g. `step.trial.title`), the msgstr the wording, with
`{name}` placeholders filled by `t(key, **fmt)`. English is the reference: every key exists
there, and a test checks that every other shipped language has every key. Adding a language is
adding a folder. Texts a study file writes (consent, instructions, custom items) stay in the
study file, where each may be a mapping {language: wording} (`Text`).

The language of a page is explicit (`t(key, lang)`) or, as Django's `translation.override`
does it, the active one: `with active(lang):` around a participant's page makes every `t(key)`
below it (step titles, answer checks, the store's messages) speak that language.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

from babel.messages.pofile import read_po
from pydantic import WrapValidator

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "kuleshov"
DEFAULT_LANG = "en"
# The language `t` uses when none is given: set around one participant's page by `active`.
_ACTIVE: contextvars.ContextVar[str] = contextvars.ContextVar("kuleshov_language", default=DEFAULT_LANG)


def languages() -> list[str]:
    """The shipped languages (folders with a catalogue), English first."""
    return list(_languages_in(LOCALE_DIR))


@functools.lru_cache(maxsize=8)
def _languages_in(folder: Path) -> tuple[str, ...]:
    # Read once per folder: a participant page asks several times per script run, and the glob
    # (a stat per folder) cost about 1 ms a run on a loaded server. Shipped files never change
    # while a process runs; a test that points LOCALE_DIR elsewhere gets that folder's own list.
    found = sorted(p.parent.parent.name for p in folder.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    return tuple(sorted(found, key=lambda lang: lang != DEFAULT_LANG))


@functools.lru_cache(maxsize=None)
def catalogue(lang: str = DEFAULT_LANG) -> dict[str, str]:
    """key -> wording for one language (empty translations left out, so English shows instead)."""
    path = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.is_file():
        raise KeyError(f"no catalogue for language {lang!r}; shipped: {', '.join(languages())}")
    with path.open("rb") as fh:
        po = read_po(fh, locale=None if lang == DEFAULT_LANG else lang, domain=DOMAIN)
    return {str(m.id): str(m.string) for m in po if m.id and m.string}


def validation_study(lang: str) -> str | None:
    """What a catalogue's `X-Validation-Study` header says about its instrument wording.

    English is the wording the instruments were written in (None). A translation says which
    validation study it went through, or "none" when it was made without one (the codebook
    then marks the instruments' wording in that language as not validated). Read from the file
    itself: Babel keeps no unknown headers.
    """
    if lang == DEFAULT_LANG:
        return None
    path = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    found = re.search(r'^"X-Validation-Study:\s*(.*?)\\n"$', path.read_text(encoding="utf-8"), re.M)
    return found.group(1).strip() if found else "none"


def t(key: str, lang: str | None = None, **fmt) -> str:
    """The wording of `key` in `lang` (default: the active language; English where the language
    lacks it), placeholders filled."""
    lang = lang or _ACTIVE.get()
    words = catalogue(lang).get(key) if lang != DEFAULT_LANG else None
    if words is None:
        try:
            words = catalogue(DEFAULT_LANG)[key]
        except KeyError:
            raise KeyError(f"text {key!r} is not in the catalogue {LOCALE_DIR / DEFAULT_LANG}") from None
    return words.format(**fmt) if fmt else words


def keys(prefix: str = "", lang: str = DEFAULT_LANG) -> list[str]:
    """Catalogue keys starting with `prefix`, in file order."""
    return [k for k in catalogue(lang) if k.startswith(prefix)]


# --------------------------------------------------------------------------- the active language


def current() -> str:
    """The active language (English unless `active` set another)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def active(lang: str) -> Iterator[str]:
    """Make `lang` the language of every `t(key)` inside the block (in this thread only)."""
    token = _ACTIVE.set(lang if lang in languages() else DEFAULT_LANG)
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def choose_language(offered, asked: str | None = None, accept_language: str | None = None) -> str:
    """The language to show, from those `offered` (the first is the default).

    `asked` (a `?lang=` parameter) wins if offered; else the browser's preferences, an
    Accept-Language header such as "de-CH,de;q=0.9,en;q=0.8" (or navigator.language), in order of
    their q weights, each matched by its primary tag (de-CH -> de); else the default.
    """
    offered = [str(x).lower() for x in offered] or [DEFAULT_LANG]
    if asked and asked.strip().lower() in offered:
        return asked.strip().lower()
    ranked: list[tuple[float, int, str]] = []
    for k, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if tag and weight > 0:
            ranked.append((-weight, k, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        primary = tag.replace("_", "-").split("-")[0]
        if tag in offered:
            return tag
        if primary in offered:
            return primary
    return offered[0]


# --------------------------------------------------------------------------- texts in several languages


class Text(str):
    """A text with its wording in several languages; as a plain `str` it is the default language's.

    Built-in item wording is a Text made from the catalogue (`from_catalogue`), a study file's
    translatable settings are Texts made from `{en: ..., de: ...}` mappings, so code that only
    needs one wording (the codebook, the export) keeps treating them as strings, and a page
    asks `local(text, lang)` for its language.
    """

    __slots__ = ("by_lang", "lang")
    by_lang: dict[str, str]
    lang: str  # the language of the plain-string wording (shown where another one is missing)

    def __new__(cls, by_lang: Mapping[str, str], default: str | None = None) -> Text:
        if not by_lang:
            raise ValueError("a text needs its wording in at least one language")
        default = default if default in by_lang else next(iter(by_lang))
        obj = super().__new__(cls, by_lang[default])
        obj.by_lang = dict(by_lang)
        obj.lang = default
        return obj

    def in_lang(self, lang: str) -> str:
        return self.by_lang.get(lang, str(self))

    def __reduce__(self):
        return (Text, (self.by_lang, self.lang))

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self


def from_catalogue(key: str, **fmt) -> Text:
    """The catalogue wording of `key` in every shipped language, English as the default."""
    return Text({lang: t(key, lang, **fmt) for lang in languages()}, DEFAULT_LANG)


def local(value, lang: str | None = None):
    """`value` in `lang` (default: the active language) if it is a `Text`, else `value` itself."""
    return value.in_lang(lang or _ACTIVE.get()) if isinstance(value, Text) else value


def missing_languages(value, wanted) -> list[str]:
    """Which of the languages `wanted` a text lacks (a plain string has only the default's)."""
    have = value.by_lang if isinstance(value, Text) else {}
    return [lang for lang in wanted if lang not in have] if have else list(wanted)[1:]


# The default language of the study file being validated (its first `languages` entry): the
# wording a mapping's Text gives as a plain string. Set by protocol.Study while it validates.
STUDY_DEFAULT: contextvars.ContextVar[str | None] = contextvars.ContextVar("kuleshov_study_default", default=None)


def _translatable(value: Any, handler) -> Any:
    """A text setting written as a string, or as {language: wording}: a mapping becomes a Text."""
    if isinstance(value, Mapping):
        if not value:
            raise ValueError("a mapping of languages to wording needs at least one language")
        by_lang: dict[str, str] = {}
        for lang, words in value.items():
            if not isinstance(words, str) or not words.strip():
                raise ValueError(f"the {lang!r} wording must be a non-empty text (got {words!r})")
            by_lang[str(lang)] = words
        value = Text(by_lang, STUDY_DEFAULT.get())
    if isinstance(value, Text):
        handler(str(value))  # the field's own constraints (min_length ...) on the default wording
        return value
    return handler(value)


class _Marker:
    """Marks a setting as translatable (for the generated docs and the missing-translation check)."""

    def __repr__(self) -> str:
        return "TRANSLATABLE"


TRANSLATABLE = _Marker()
# A text shown to participants: a string, or a mapping {language: wording}, kept as a Text.
Words = Annotated[str, WrapValidator(_translatable), TRANSLATABLE]
