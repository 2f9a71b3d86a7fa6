"""Every participant-facing word of the platform, looked up by a stable key.

The catalogue is a gettext file per language, study/locale/<lang>/LC_MESSAGES/kuleshov.po,
read with Babel; the msgid is the key (e.g. `step.trial.title`), the msgstr the wording, with
`{name}` placeholders filled by `t(key, **fmt)`. English is the reference: every key exists
there, and a test checks that every other shipped language has every key. Adding a language is
adding a folder. Texts a study file writes (consent, instructions, custom items) stay in the
study file.
"""

from __future__ import annotations

import functools
from pathlib import Path

from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "kuleshov"
DEFAULT_LANG = "en"


def languages() -> list[str]:
    """The shipped languages (folders with a catalogue), English first."""
    found = sorted(p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    return sorted(found, key=lambda lang: lang != DEFAULT_LANG)


@functools.lru_cache(maxsize=None)
def catalogue(lang: str = DEFAULT_LANG) -> dict[str, str]:
    """key -> wording for one language (empty translations left out, so English shows instead)."""
    path = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.is_file():
        raise KeyError(f"no catalogue for language {lang!r}; shipped: {', '.join(languages())}")
    with path.open("rb") as fh:
        po = read_po(fh, locale=None if lang == DEFAULT_LANG else lang, domain=DOMAIN)
    return {str(m.id): str(m.string) for m in po if m.id and m.string}


def t(key: str, lang: str = DEFAULT_LANG, **fmt) -> str:
    """The wording of `key` in `lang` (English where the language lacks it), placeholders filled."""
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
