"""Languages: choosing one (?lang=, Accept-Language), study files in several languages, the
missing-translation report of `kuleshov validate`, and the language stored with a participant."""

from __future__ import annotations

from pathlib import Path

import pytest

import cli
from conftest import enrol  # noqa: E402
from study import flow, store, texts
from study.instruments import INSTRUMENTS, items_for
from study.protocol import Study, load_study, validate_study_file
from test_texts import page_db  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"


# --------------------------------------------------------------------------- choosing the language


@pytest.mark.parametrize("asked, header, expected", [
    ("de", "en-GB,en;q=0.9", "de"),                 # the link's ?lang= wins
    (None, "de-CH,de;q=0.9,en;q=0.8", "de"),       # a regional tag matches its language
    (None, "fr-FR,fr;q=0.9,en;q=0.5,de;q=0.7", "de"),  # in order of q: fr is not offered, de before en
    (None, "en;q=0.2, de;q=0.8", "de"),
    (None, "de;q=0, en", "en"),                    # q=0 means "not this one"
    (None, "fr-FR", "en"),                         # nothing offered: the study's first language
    ("xx", None, "en"),                            # an unknown ?lang= is ignored
    (None, "de;q=abc,en", "en"),                   # a broken weight counts as 0
    (None, "", "en"),
    (None, "DE-de", "de"),                         # tags are case-insensitive
])
def test_choose_language_from_the_link_and_accept_language(asked, header, expected):
    assert texts.choose_language(["en", "de"], asked, header) == expected


@pytest.mark.parametrize("lang", texts.languages())
def test_the_buttons_of_one_clip_page_have_different_names(lang):
    # A participant who paused the clip has the player's button and the ratings' Continue on one
    # page: a screen reader's list of buttons (and a test's click by name) must tell them apart.
    names = [texts.t(key, lang) for key in ("player.continue_label", "player.resume_label", "player.replay_label",
                                            "questionnaire.submit", "withdraw.ask")]
    assert len(set(names)) == len(names), names


def test_a_study_whose_first_language_is_german_defaults_to_german():
    assert texts.choose_language(["de", "en"], None, "fr") == "de"


def test_german_is_shipped_and_t_speaks_the_active_language():
    assert texts.languages() == ["en", "de"]
    assert texts.t("button.continue", "de") == "Weiter"
    with texts.active("de"):
        assert texts.t("step.trial.title", position=2, total=6) == "Clip 2 von 6"
        assert texts.current() == "de"
    assert texts.t("button.continue") == "Continue"
    with texts.active("xx"):  # not shipped: English
        assert texts.current() == "en"


def test_builtin_items_carry_every_shipped_language():
    for ins in INSTRUMENTS.values():
        for item in ins.items:
            assert set(item.text.by_lang) == set(texts.languages()), item.id
            for label in [*item.anchors.values(), *(o.label for o in item.options)]:
                assert set(label.by_lang) == set(texts.languages()), item.id
    valence = INSTRUMENTS["sam"].item("valence")
    assert str(valence.text) == "How did this clip make you feel?"  # the codebook's wording
    assert texts.local(valence.text, "de") == "Wie haben Sie sich bei diesem Clip gefühlt?"
    assert texts.local(INSTRUMENTS["demographics"].item("age").unit, "de") == "Jahre"


def test_step_titles_and_answer_checks_follow_the_active_language():
    study = load_study(DEMO)
    steps = flow.build_steps(study, ["h1", "a1"], "practice")
    trial = next(s for s in steps if s.kind == "trial")
    assert texts.local(trial.title, "de") == "Clip 1 von 2" and str(trial.title) == "Clip 1 of 2"
    with texts.active("de"):
        errors = flow.validate_answers(trial, {})
    assert errors["valence"] == "Bitte beantworten Sie diese Frage."


# --------------------------------------------------------------------------- study files in several languages


BILINGUAL = """\
title: Zwei Sprachen
languages: [de, en]
consent:
  text: {de: Bitte lesen., en: Please read.}
  agree_label: {de: Ja, en: "Yes"}
instructions: {de: Anleitung hier., en: Instructions here.}
measures:
  per_clip: [sam]
  custom_items:
    - id: liked
      type: likert
      min: 1
      max: 5
      text: {de: "Hat Ihnen der Clip gefallen?", en: "Did you like the clip?"}
      anchors: {1: {de: gar nicht, en: not at all}, 5: {de: sehr, en: very much}}
      description: Liking of the clip.
attention_checks:
  - id: attn
    after_clip: 1
    text: {de: Wählen Sie Rot., en: Choose red.}
    options: [{de: Rot, en: Red}, {de: Grün, en: Green}]
    correct: Rot
completion:
  message: {de: Danke!, en: Thanks!}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    manifest = ROOT / "stimuli" / "demo" / "manifest.csv"  # the demo's clips, where they are
    path.write_text(text + f"stimuli: {{manifest: '{manifest}', practice: practice}}\n", encoding="utf-8")
    return path


def test_a_bilingual_study_file_keeps_every_wording_and_reads_as_its_first_language(tmp_path):
    study = load_study(_write(tmp_path, BILINGUAL))
    assert study.languages == ["de", "en"]
    assert str(study.consent.text) == "Bitte lesen." and texts.local(study.consent.text, "en") == "Please read."
    liked = next(i for i in items_for(study, "per_clip") if i.id == "liked")
    assert str(liked.text) == "Hat Ihnen der Clip gefallen?"
    assert texts.local(liked.anchors[5], "en") == "very much"
    attention = items_for(study, "attention")[0]
    # The stored value is the first language's wording, whichever language was shown.
    assert [o.value for o in attention.options] == ["Rot", "Grün"]
    assert [texts.local(o.label, "en") for o in attention.options] == ["Red", "Green"]


def test_validate_reports_each_missing_translation_with_its_place_and_language(tmp_path, capsys):
    broken = (BILINGUAL
              .replace("instructions: {de: Anleitung hier., en: Instructions here.}", "instructions: Nur Deutsch.")
              .replace("5: {de: sehr, en: very much}", "5: {de: sehr}")
              .replace("[{de: Rot, en: Red}, {de: Grün, en: Green}]", "[{de: Rot, en: Red}, {de: Grün, en: Green, fr: Vert}]")
              .replace("message: {de: Danke!, en: Thanks!}", "message: {en: Thanks!}"))
    path = _write(tmp_path, broken)
    # Warnings: the study runs, and these texts show in its first language (de) instead.
    assert cli.main(["validate", str(path), "--no-check-media"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "translation" in line or "wording in" in line]
    assert lines == [
        "warning: study.yaml: instructions: has no translation for en (English) (shown in de instead); the "
        "study's languages are de, en, so write it as {de: ..., en: ...}",
        "warning: study.yaml: measures.custom_items[0].anchors.5: has no translation for en (English) (shown in "
        "de instead); the study's languages are de, en, so write it as {de: ..., en: ...}",
        "warning: study.yaml: attention_checks[0].options[1]: has wording in 'fr', which is not in the study's "
        "languages (de, en) and is never shown; add it to `languages` or remove it",
        "warning: study.yaml: completion.message: has no translation for de (Deutsch) (shown in en instead); "
        "the study's languages are de, en, so write it as {de: ..., en: ...}",
    ], out
    assert out.splitlines()[-1].startswith("OK: Zwei Sprachen") and out.splitlines()[-1].endswith("languages de, en)")
    # The complete file has none.
    assert not [p for p in validate_study_file(_write(tmp_path, BILINGUAL)) if "translation" in p.message]


def test_a_language_without_a_catalogue_is_refused(tmp_path):
    problems = validate_study_file(_write(tmp_path, BILINGUAL.replace("languages: [de, en]", "languages: [de, fr]")))
    assert any(p.where.endswith("languages") and "'fr'" in p.message and "shipped: en, de" in p.message
               for p in problems), problems


def test_a_one_language_study_needs_no_mappings_and_keeps_plain_strings():
    study = Study.model_validate({"title": "T", "consent": {"text": "Hello"}})
    assert study.languages == ["en"] and study.consent.text == "Hello"
    # Settings left out come from the catalogue, so they exist in every shipped language.
    assert texts.local(study.instructions, "de").startswith("Sie sehen eine Reihe kurzer Videoclips.")


def test_the_demo_study_is_complete_in_english_and_german():
    study = load_study(DEMO)
    assert study.languages == ["en", "de"]
    assert texts.local(study.consent.agree_label, "de").startswith("Ich habe dies gelesen")
    assert texts.local(study.attention_checks[0].options[2], "de") == "Blau"


# --------------------------------------------------------------------------- the participant's language


@pytest.fixture
def demo_engine(engine):
    study_id = store.register_study(engine, str(DEMO), actor="test")
    return engine, study_id


def test_enrolment_stores_the_language_and_only_an_offered_one_can_be_set(demo_engine):
    engine, study_id = demo_engine
    german = store.enrol(engine, study_id, prolific_pid="p-de", accept_language="de-AT,de;q=0.9")
    asked = store.enrol(engine, study_id, prolific_pid="p-asked", language="de", accept_language="en")
    french = store.enrol(engine, study_id, prolific_pid="p-fr", accept_language="fr")
    assert (german.language, asked.language, french.language) == ("de", "de", "en")
    assert store.set_language(engine, french.token, "fr") == "en"  # not offered: unchanged
    assert store.set_language(engine, french.token, "de") == "de"
    assert store.get_state(engine, french.token).language == "de"
    assert store.set_language(engine, "no-such-token", "de") is None


def test_the_store_answers_in_the_participant_s_language(demo_engine):
    engine, study_id = demo_engine
    state = enrol(engine, study_id, prolific_pid="p-msg", language="de")  # past the device check
    result = store.submit_step(engine, state.token, "consent", {})
    assert not result.ok
    assert result.message == "Bitte prüfen Sie die unten markierten Antworten."
    assert result.errors == {"consent": "Bitte beantworten Sie diese Frage."}
    assert store.submit_step(engine, state.token, "debrief", {}).message == "Dies ist nicht die aktuelle Seite; hier sind Sie gerade."


# --------------------------------------------------------------------------- pages before a participant is known


def test_link_messages_speak_the_link_s_language(page_db):
    from test_texts import _render, _shown

    assert texts.t("link.incomplete", "de") in _shown(_render(None, lang="de"))
    assert texts.t("link.invalid", "de") in _shown(_render("not-a-token", lang="de"))
    assert texts.t("link.incomplete") in _shown(_render(None))
    eng, study_id = page_db
    at = _render(None, study=study_id, lang="de", PROLIFIC_PID="p-apptest")
    assert texts.t("step.device_check.title", "de") in _shown(at)  # the first page, before consent
    token = at.query_params["t"]
    token = token[0] if isinstance(token, list) else token
    assert store.get_state(eng, token).language == "de"


def test_manifest_titles_in_other_languages(tmp_path):
    from types import SimpleNamespace

    from app_pages.participant import _title
    from study.stimuli import load_manifest

    (tmp_path / "manifest.csv").write_text("id,file,source,title,title_de,title_fr\n"
                                           "h1,h1.mp4,human,Sea,Meer,Mer\na1,a1.mp4,ai,Sky,,Ciel\n", encoding="utf-8")
    for name in ("h1.mp4", "a1.mp4"):
        (tmp_path / name).write_bytes(b"x")
    stimuli, problems = load_manifest(tmp_path / "manifest.csv")
    assert [(s.id, s.title, s.titles) for s in stimuli] == [("h1", "Sea", {"de": "Meer"}), ("a1", "Sky", {})]
    # French is not shipped: its column is ignored, with the reason.
    assert [p.where for p in problems if "unknown column" in p.message] == ["manifest.csv line 1, column title_fr"]
    state = SimpleNamespace(language="de", stimuli={s.id: {"titles": s.titles} for s in stimuli})
    assert _title(state, {"stimulus_id": "h1", "title": "Sea"}) == "Meer"
    assert _title(state, {"stimulus_id": "a1", "title": "Sky"}) == "Sky"  # no German title: the title
