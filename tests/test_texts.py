"""The text catalogue: every language has every key, and participant pages show only catalogue
or study-file text (walked through the real page with streamlit's AppTest)."""

from __future__ import annotations

import random
import re
import string
from pathlib import Path

import pytest

from study import flow, store, texts
from study.protocol import load_study

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"


# --------------------------------------------------------------------------- the catalogue


def _placeholders(words: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(words) if name}


@pytest.mark.parametrize("lang", texts.languages())
def test_every_shipped_language_has_every_key_with_the_same_placeholders(lang):
    english, other = texts.catalogue("en"), texts.catalogue(lang)
    missing = [k for k in english if k not in other]
    assert not missing, f"{lang} lacks {len(missing)} texts: {missing[:10]}"
    extra = [k for k in other if k not in english]
    assert not extra, f"{lang} has keys English does not: {extra[:10]}"
    wrong = [k for k in english if _placeholders(english[k]) != _placeholders(other[k])]
    assert not wrong, f"{lang} changes the {{placeholders}} of: {wrong}"


def test_english_comes_first_and_is_complete():
    assert texts.languages()[0] == "en"
    words = texts.catalogue("en")
    assert len(words) > 100 and all(v.strip() for v in words.values())
    assert texts.t("step.trial.title", position=2, total=6) == "Clip 2 of 6"


def test_a_missing_key_names_the_catalogue():
    with pytest.raises(KeyError, match="not in the catalogue"):
        texts.t("no.such.key")


def test_a_language_missing_a_text_falls_back_to_english(tmp_path, monkeypatch):
    folder = tmp_path / "xx" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    (folder / "kuleshov.po").write_text('msgid ""\nmsgstr ""\n"Language: xx\\n"\n\n'
                                        'msgid "button.continue"\nmsgstr "Weiter-xx"\n', encoding="utf-8")
    monkeypatch.setattr(texts, "LOCALE_DIR", tmp_path)
    texts.catalogue.cache_clear()
    try:
        assert texts.languages() == ["xx"]
        assert texts.t("button.continue", lang="xx") == "Weiter-xx"
        with pytest.raises(KeyError):
            texts.t("button.start", lang="xx")  # no English here either: the fallback is real
    finally:
        texts.catalogue.cache_clear()


def test_builtin_item_wording_comes_from_the_catalogue():
    from study.instruments import INSTRUMENTS

    valence = INSTRUMENTS["sam"].item("valence")
    assert valence.text == texts.t("item.valence.text")
    assert valence.anchors[9] == texts.t("item.valence.anchor.9")
    gender = INSTRUMENTS["demographics"].item("gender")
    assert [o.label for o in gender.options][0] == texts.t("item.gender.option.woman")
    assert INSTRUMENTS["moved"].item("moved_1").anchors[7] == texts.t("scale.agree7.7")


def test_the_consent_row_of_the_codebook_has_the_page_s_labels():
    study = load_study(DEMO)
    item = flow.consent_item(study)
    assert [o.label for o in item.options] == [study.consent.agree_label, texts.t("consent.decline")]


# --------------------------------------------------------------------------- pages show only catalogue text


def _study_strings(study, stimuli, lang: str = "en") -> set[str]:
    """Every string a study file (and its manifest) gives the pages, in `lang`."""
    from pydantic import BaseModel

    out: set[str] = set()

    def walk(x):
        if isinstance(x, str):
            out.add(texts.local(x, lang).strip())
        elif isinstance(x, BaseModel):
            for name in type(x).model_fields:
                walk(getattr(x, name))
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(study)
    walk(list(stimuli.values()))
    return out


def _catalogue_patterns(lang: str = "en") -> list[re.Pattern]:
    pats = []
    for words in texts.catalogue(lang).values():
        parts = re.split(r"\{[a-z_]+\}", words)
        pats.append(re.compile("".join(re.escape(p) + "(.+?)" for p in parts[:-1]) + re.escape(parts[-1]), re.S))
    return pats


class _Allowed:
    def __init__(self, study_strings: set[str], lang: str = "en"):
        # The language switcher names each language in that language.
        names = {texts.t("language.name", other) for other in texts.languages()}
        self.plain = study_strings | names | {v.strip() for v in texts.catalogue(lang).values()}
        self.patterns = _catalogue_patterns(lang)

    def __call__(self, shown: str) -> bool:
        s = re.sub(r"^#+\s*", "", shown.strip())
        s = re.sub(r"^\*\*\d+\.\*\* ", "", s)  # the item number on a page of several items
        if not s or re.fullmatch(r"-?\d+(\.\d+)?", s) or s in self.plain:
            return True
        if "\n" in s:
            return all(self(line) for line in s.splitlines())
        if " · " in s:
            return all(self(part) for part in s.split(" · "))
        anchor = re.fullmatch(r"-?\d+(\.\d+)? = (.+)", s, re.S)
        if anchor:
            return self(anchor.group(2))
        for pat in self.patterns:
            m = pat.fullmatch(s)
            # A placeholder holds catalogue or study text, a number, an id or a unit sign (%).
            if m and all(self(g) or re.fullmatch(r"[\W\d_]+|[a-z0-9_-]+", g.strip()) for g in m.groups()):
                return True
        return False


def _shown(at) -> list[str]:
    """Every text the page put in front of the participant."""
    out: list[str] = []
    for kind in ("markdown", "subheader", "info", "caption", "error", "warning", "success", "title", "header"):
        for el in at.get(kind):
            value = getattr(el, "value", None) or getattr(el, "body", None) or ""
            if not str(value).lstrip().startswith("<style>"):
                out.append(str(value))
    for kind in ("button", "radio", "slider", "text_area", "number_input", "checkbox", "selectbox"):
        for el in at.get(kind):
            out.append(el.label)
            out.extend(str(o) for o in getattr(el, "options", None) or ())
    for el in at.get("link_button"):
        out.append(getattr(el, "label", "") or el.proto.label)
    return [s for s in out if s]


def _page_script():
    from app_pages import get_engine, participant

    get_engine.clear()  # the test's database, not a previous test's
    participant.page()


@pytest.fixture
def page_db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'pages.db'}"
    monkeypatch.setenv("KULESHOV_DATABASE_URL", url)
    eng = store.make_engine(url)
    store.upgrade(eng)
    study_id = store.register_study(eng, str(DEMO), actor="test")
    try:
        yield eng, study_id
    finally:
        eng.dispose()


def _render(token: str | None, **params):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_page_script, default_timeout=60)
    if token:
        at.query_params["t"] = token
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def _english_only() -> set[str]:
    """English catalogue wording that no other language shares (a German page must not show it)."""
    english = {v.strip() for k, v in texts.catalogue("en").items() if k != "language.name"}
    return english - {v.strip() for lang in texts.languages()[1:] for v in texts.catalogue(lang).values()}


@pytest.mark.parametrize("lang", texts.languages())
def test_every_participant_page_shows_only_catalogue_or_study_text(page_db, lang):
    from study.simulate import Bot

    eng, study_id = page_db
    unknown: dict[str, list[str]] = {}
    english: dict[str, list[str]] = {}
    seen_kinds: set[str] = set()
    # Three participants: the three label conditions (none, true, swapped) in turn.
    for number in range(3):
        bot = Bot(eng, study_id, number, random.Random(number), 0.0, False)
        bot.fate, bot.stop_at = "complete", None
        assert store.set_language(eng, bot.state.token, lang) == lang
        bot.state = store.get_state(eng, bot.state.token)
        allowed = _Allowed(_study_strings(bot.state.study, bot.state.stimuli, lang), lang)
        state = bot.state
        while True:
            step = state.step
            if step.has_clip:
                meta = bot.watch(step)  # the questions open once the clip counts as watched
            at = _render(state.token)
            seen_kinds.add(step.kind)
            shown = _shown(at)
            bad = [s for s in shown if not allowed(s)]
            if bad:
                unknown[f"{state.label_condition} {step.key}"] = bad
            if lang != "en":
                leaked = [s for s in shown if s.strip() in _english_only()]
                if leaked:
                    english[f"{state.label_condition} {step.key}"] = leaked
            if flow.is_final(step):
                break
            answers = bot.answers_for(step) if step.collects_data else {}
            result = store.submit_step(eng, state.token, step.key, answers, trial_meta=meta if step.has_clip else None)
            assert result.ok, (step.key, result.message, result.errors)
            state = bot.state = result.state
    assert seen_kinds == set(flow.KINDS), f"not walked: {set(flow.KINDS) - seen_kinds}"
    assert not unknown, f"text on participant pages that is neither in the catalogue nor the study file: {unknown}"
    assert not english, f"English text on {lang} pages: {english}"


def test_message_pages_show_only_catalogue_text(page_db):
    eng, study_id = page_db
    allowed = _Allowed(set())
    pages = [_render(None), _render("not-a-token"), _render(None, study="no-such-study")]
    state = store.enrol(eng, study_id, prolific_pid="msg-test")
    store.withdraw(eng, state.token)
    pages.append(_render(state.token))
    store.set_study_status(eng, study_id, "closed")
    pages.append(_render(None, study=study_id))
    shown = [s for at in pages for s in _shown(at)]
    assert store.INVALID_LINK_MESSAGE in shown and texts.t("status.withdrawn") in shown
    assert texts.t("enrol.closed") in shown
    assert [s for s in shown if not allowed(s)] == []


def test_the_check_catches_text_that_is_not_in_the_catalogue():
    allowed = _Allowed({"A consent text from the study file."})
    assert allowed("A consent text from the study file.")
    assert allowed(texts.t("step.trial.title", position=3, total=6))
    assert allowed("**2.** " + texts.t("item.valence.text"))
    assert not allowed("Please press the big button.")
    assert not allowed("Clip 3 of 6 and some words of our own")
