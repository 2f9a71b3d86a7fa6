"""What the player needs to run a study's continuous rating and moment marking (pure).

`player_config` turns the study file's playback.continuous_rating and playback.marks into the
plain dict components/player/continuous.js reads, with every word from the catalogue or the
study file; `practice_notes` is what the practice clip's page says to teach the control.
"""

from __future__ import annotations

from typing import Any

from study.texts import local, t

TRACES_URL = "/api/traces"


def mode(study: Any) -> str | None:
    """1d | 2d | marks, or None when the study records nothing during playback."""
    cr = getattr(study.playback, "continuous_rating", None)
    if cr is not None:
        return cr.mode
    return "marks" if getattr(study.playback, "marks", None) is not None else None


def player_config(study: Any, lang: str | None = None) -> dict | None:
    which = mode(study)
    if which is None:
        return None
    cr = study.playback.continuous_rating
    marks = study.playback.marks
    texts = {"offline": t("capture.offline", lang), "marked": t("capture.marked", lang)}
    config: dict[str, Any] = {"mode": which, "traces_url": TRACES_URL, "texts": texts, "prompts": []}
    if cr is not None:
        config.update({
            "item": local(cr.item, lang), "orientation": cr.orientation, "min": cr.min, "max": cr.max,
            "min_label": local(cr.min_label, lang), "max_label": local(cr.max_label, lang), "start": cr.start,
            "rate_hz": cr.rate_hz, "key_steps": cr.key_steps,
        })
        texts["slider_hint"] = t("capture.slider_hint", lang)
        if cr.mode == "2d":
            config.update({"arousal_min": cr.arousal_min, "arousal_max": cr.arousal_max,
                           "arousal_min_label": local(cr.arousal_min_label, lang), "arousal_max_label": local(cr.arousal_max_label, lang),
                           "arousal_start": cr.arousal_start})
            texts["grid_role"] = t("capture.grid_role", lang)
            texts["grid_hint"] = t("capture.grid_hint", lang, low=local(cr.min_label, lang), high=local(cr.max_label, lang),
                                   alow=local(cr.arousal_min_label, lang), ahigh=local(cr.arousal_max_label, lang))
            # {v} and {a} are filled in by the browser as the point moves.
            texts["grid_value"] = t("capture.grid_value", lang, vname=t("capture.valence_name", lang), v="{v}",
                                    aname=t("capture.arousal_name", lang), a="{a}")
    if marks is not None:
        config["marks_hint"] = local(marks.instruction, lang) if marks.instruction else t("capture.marks_hint", lang)
        config["prompts"] = [{"id": p.id, "label": local(p.label, lang), "key": p.key,
                              "text": t("capture.mark_button", lang, label=local(p.label, lang), letter=p.key.upper())}
                             for p in marks.prompts]
    return config


def practice_notes(study: Any, lang: str | None = None) -> list[str]:
    """Paragraphs (markdown) shown above the practice clip to teach the control; [] if none is used."""
    which = mode(study)
    if which is None:
        return []
    notes = [t("capture.practice_intro", lang)]
    if which in ("1d", "2d"):
        notes.append(t(f"capture.practice_{which}", lang))
    if study.playback.marks is not None:
        notes.append(t("capture.practice_marks", lang))
    return notes
