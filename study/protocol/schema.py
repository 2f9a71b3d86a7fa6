"""The pydantic models of the study file: Study and its sections, slugify, study_hash."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from study import instruments as ins
from study import texts
from study.completion import check_redirect_url
from study.texts import Words, from_catalogue, t

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class _Section(BaseModel):
    # a typo in a key must be an error, not a silently ignored setting
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _https(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError(f"must be a full https:// address (got {value!r})")
    return value.strip()


class Consent(_Section):
    text: Words = Field(min_length=1, description="Consent information shown on the first page (markdown). Required.")
    agree_label: Words = Field(default=from_catalogue("consent.agree"), min_length=1,
                             description="Label of the button a participant presses to consent (the other button "
                                         "declines; both labels are in the codebook's consent row).")


class StimuliSettings(_Section):
    manifest: str = Field(default="manifest.csv", min_length=1,
                          description="Stimulus manifest (CSV), relative to the study file's folder.")
    practice: str | None = Field(default=None,
                                 description="Id of a practice clip shown first; it is excluded from the main pool and the analysis.")
    base_url: str | None = Field(default=None,
                                 description="https prefix for clips served from a CDN; a clip's `file` is appended to it.")

    @field_validator("base_url")
    @classmethod
    def _base_url_https(cls, v: str | None) -> str | None:
        return _https(v, "base_url")


class CustomItem(ins.Item):
    """A study-specific item: the same shape as a built-in item, plus where it is asked."""

    scope: Literal["per_clip", "session_start", "session_end"] = Field(
        default="per_clip", description="Where the item is asked: after every clip, or once at the start or end of the session."
    )


class InstrumentChoice(_Section):
    """Some items of a built-in instrument, in the order given, e.g. {name: sam, items: [valence, arousal]}."""

    name: str = Field(min_length=1, description="Id of the built-in instrument, e.g. `sam`.")
    items: list[str] = Field(min_length=1,
                             description="Ids of the instrument's items to ask, in this order (a subset or a reordering); "
                                         "a scale whose items are not all asked is not scored.")


def _entry_kind(value: Any) -> str:
    return "instrument-choice" if isinstance(value, dict | InstrumentChoice) else "str"


# An instrument id or a choice of its items; tagged, so that a wrong entry gets only its own
# form's message (a mapping is never told it "must be text").
InstrumentEntry = Annotated[
    Annotated[str, Tag("str")] | Annotated[InstrumentChoice, Tag("instrument-choice")],
    Discriminator(_entry_kind),
]

_ENTRY_HELP = (" Each entry is an instrument id (all its items) or `{name: <id>, items: [<item id>, ...]}` "
               "(only those items, in that order).")


class Measures(_Section):
    session_start: list[InstrumentEntry] = Field(
        default_factory=lambda: ["mood"], description="Session-level instruments asked before the first clip." + _ENTRY_HELP)
    per_clip: list[InstrumentEntry] = Field(
        default_factory=lambda: ["sam", "discrete_emotions", "moved", "attribution"],
        description="Instruments asked after every clip, in this order." + _ENTRY_HELP)
    session_end: list[InstrumentEntry] = Field(
        default_factory=lambda: ["mood"], description="Session-level instruments asked after the last clip." + _ENTRY_HELP)
    custom_items: list[CustomItem] = Field(default_factory=list,
                                           description="Study-specific items, declared like built-in items (see below).")
    randomize_item_order: bool = Field(default=False,
                                       description="Shuffle the item order within each instrument per page; the order shown is stored.")


class Design(_Section):
    clips_per_participant: int | None = Field(default=None, ge=1,
                                              description="How many main clips each participant rates; empty = all main clips.")
    ordering: Literal["random", "blocked_by_source", "latin_square"] = Field(
        default="random", description="Clip order: random, blocked by source (human block and AI block), or Latin square.")
    seed: int = Field(default=1, description="Seed of the assignment and ordering, so that they can be reproduced.")
    pairs: Literal["both", "one_per_participant", "ignore"] = Field(
        default="both",
        description="Matched human/AI pairs: show both members (never back to back), one member per participant, or ignore pairing.")
    label_conditions: list[Literal["none", "true", "swapped"]] = Field(
        default_factory=lambda: ["none"], min_length=1,
        description="Source-label conditions assigned between subjects: none (no label), true (true source shown), swapped.")

    @field_validator("label_conditions", mode="before")
    @classmethod
    def _unquoted_true(cls, v: Any) -> Any:
        # YAML reads an unquoted `true` as a boolean; here it can only mean the condition "true"
        if isinstance(v, list):
            return ["true" if x is True else x for x in v]
        return v

    @field_validator("label_conditions")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"each label condition may appear only once (got {', '.join(v)})")
        return v


class ContinuousRating(_Section):
    """A control moved while the clip plays (CARMA/DARMA-style), sampled at `rate_hz` in video time."""

    mode: Literal["1d", "2d"] = Field(
        default="1d", description="1d: one slider (dimension `rating`); 2d: a valence-arousal grid (dimensions "
                                  "`valence` across, `arousal` up).")
    item: Words = Field(min_length=1, description="Question shown beside the control during playback, e.g. 'How do you feel right now?'.")
    orientation: Literal["horizontal", "vertical"] = Field(
        default="horizontal", description="1d only: a horizontal slider (low end left) or a vertical one (low end at the bottom).")
    min: float = Field(default=1, description="Lowest value (1d: the slider; 2d: the valence axis).")
    max: float = Field(default=9, description="Highest value (1d: the slider; 2d: the valence axis).")
    min_label: Words = Field(default=from_catalogue("study.continuous.min_label"), description="Label at the low end (1d: the slider; 2d: left, valence).")
    max_label: Words = Field(default=from_catalogue("study.continuous.max_label"), description="Label at the high end (1d: the slider; 2d: right, valence).")
    start: float | None = Field(default=None, description="Where the control starts (valence in 2d); empty = the midpoint. Recorded with the trace.")
    arousal_min: float = Field(default=1, description="2d only: lowest arousal (bottom of the grid).")
    arousal_max: float = Field(default=9, description="2d only: highest arousal (top of the grid).")
    arousal_min_label: Words = Field(default=from_catalogue("capture.arousal_low"), description="2d only: label at the bottom of the grid.")
    arousal_max_label: Words = Field(default=from_catalogue("capture.arousal_high"), description="2d only: label at the top of the grid.")
    arousal_start: float | None = Field(default=None, description="2d only: where the arousal starts; empty = the midpoint.")
    rate_hz: float = Field(default=10, ge=1, le=60,
                           description="Samples per second of video time (each sample is stamped with the video's own time).")
    key_steps: int = Field(default=20, ge=2, le=1000,
                           description="How many arrow-key presses cross the whole range (keyboard control).")

    @model_validator(mode="after")
    def _range(self) -> ContinuousRating:
        if self.min >= self.max:
            raise ValueError(f"min ({self.min:g}) must be smaller than max ({self.max:g})")
        if self.arousal_min >= self.arousal_max:
            raise ValueError(f"arousal_min ({self.arousal_min:g}) must be smaller than arousal_max ({self.arousal_max:g})")
        if self.start is not None and not self.min <= self.start <= self.max:
            raise ValueError(f"start ({self.start:g}) must lie between min ({self.min:g}) and max ({self.max:g})")
        if self.arousal_start is not None and not self.arousal_min <= self.arousal_start <= self.arousal_max:
            raise ValueError(f"arousal_start ({self.arousal_start:g}) must lie between arousal_min and arousal_max")
        return self


class MarkPrompt(_Section):
    id: str = Field(description="Stable id of the prompt (lowercase letters, digits, _); the `mark` column of marks.csv.")
    label: Words = Field(min_length=1, description="Text of the button (and of the instruction), e.g. 'This moved me'.")
    key: str = Field(description="One letter or digit that marks the moment from the keyboard (e.g. m).")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ins.ID_PATTERN.match(v):
            raise ValueError(f"id {v!r} {ins.ID_RULE}")
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if len(v) != 1 or not v.isalnum() or not v.isascii():
            raise ValueError(f"key {v!r} must be one letter or digit (the arrows, space and enter are taken)")
        return v.lower()


class Marks(_Section):
    """Moments marked during playback: a key press or a tap, stamped with the video's time."""

    prompts: list[MarkPrompt] = Field(min_length=1, description="What to mark, one entry per kind of moment (at least one).")
    instruction: Words | None = Field(default=None,
                                    description="Sentence above the buttons; empty = a standard one naming the keys.")

    @model_validator(mode="after")
    def _distinct(self) -> Marks:
        ids = [p.id for p in self.prompts]
        keys = [p.key for p in self.prompts]
        if len(set(ids)) != len(ids):
            raise ValueError(f"prompt ids must be distinct (got {', '.join(ids)})")
        if len(set(keys)) != len(keys):
            raise ValueError(f"prompt keys must be distinct (got {', '.join(keys)})")
        return self


class Playback(_Section):
    controls: bool = Field(default=False, description="Show the browser's video controls.")
    allow_seek: bool = Field(default=False, description="Let participants skip forward or back within a clip.")
    min_watched_share: float = Field(default=0.9, ge=0, le=1,
                                     description="Ratings open once this share (0-1) of the clip has actually been watched.")
    allow_skip_on_error: bool = Field(default=True,
                                      description="If a clip cannot be played, let the participant skip it after retrying.")
    require_sound: bool = Field(default=False,
                                description="The clips must be heard: each starts with sound on, the start screen says "
                                            "why, and muting (or volume 0) pauses the clip until the sound is back on.")
    continuous_rating: ContinuousRating | None = Field(
        default=None, description="A control moved during playback (1d slider or 2d valence-arousal grid), sampled "
                                  "in video time, on every clip including the practice clip; empty = none.")
    marks: Marks | None = Field(
        default=None, description="Moments marked during playback by key or button, on every clip including the "
                                  "practice clip; alone or with continuous_rating; empty = none.")


class AttentionCheck(_Section):
    id: str = Field(description="Stable id of the check (lowercase letters, digits, _); becomes a column name.")
    after_clip: int = Field(ge=1, description="Shown after this main clip position (1-based).")
    text: Words = Field(min_length=1, description="The instruction or question.")
    options: list[Words] = Field(min_length=2, description="Answers to choose from (at least two); the wording in the "
                                                          "study's first language is the value stored.")
    correct: str = Field(description="The correct answer; must be one of the options (in the study's first language).")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ins.ID_PATTERN.match(v):
            raise ValueError(f"id {v!r} {ins.ID_RULE}")
        return v

    @model_validator(mode="after")
    def _correct_is_an_option(self) -> AttentionCheck:
        if self.correct not in self.options:
            raise ValueError(f"correct answer {self.correct!r} is not one of the options ({', '.join(map(repr, self.options))})")
        if len(set(self.options)) != len(self.options):
            raise ValueError("options must be distinct")
        return self


class Exclusions(_Section):
    min_watched_share: float = Field(default=0.8, ge=0, le=1,
                                     description="Trials where less than this share of the clip was watched are excluded.")
    max_failed_attention_checks: int = Field(default=0, ge=0,
                                             description="Participants failing more attention checks than this are excluded.")
    exclude_pilot: bool = Field(default=True, description="Leave pilot participants out of the analysis.")
    min_completion: float = Field(default=1.0, ge=0, le=1,
                                  description="Participants who completed less than this share of their main trials are excluded.")
    # Trial-level rules on how the clip was seen and heard (trials columns, study/playback.py);
    # empty = not applied. A trial whose column is empty (not recorded) is kept.
    max_seconds_hidden: float | None = Field(
        default=None, ge=0, description="Trials whose page was hidden or out of focus for more than this many seconds "
                                        "(trials column seconds_hidden) are excluded; empty = no limit.")
    max_share_muted: float | None = Field(
        default=None, ge=0, le=1, description="Trials where more than this share (0-1) of the playback was muted or at "
                                              "volume 0 (share_muted) are excluded; empty = no limit.")
    max_seconds_stalled: float | None = Field(
        default=None, ge=0, description="Trials whose playback stalled (buffering) for more than this many seconds in "
                                        "all (seconds_stalled) are excluded; empty = no limit.")
    max_seconds_offline: float | None = Field(
        default=None, ge=0, description="Trials during which the browser was offline for more than this many seconds "
                                        "(seconds_offline) are excluded; empty = no limit.")
    max_load_ms: int | None = Field(
        default=None, ge=0, description="Trials whose clip took longer than this many milliseconds to become playable "
                                        "(load_ms) are excluded; empty = no limit.")
    max_play_count: int | None = Field(
        default=None, ge=1, description="Trials whose clip was started from the beginning more often than this "
                                        "(play_count) are excluded; empty = no limit.")
    exclude_skipped: bool = Field(default=False,
                                  description="Exclude trials whose clip failed to play and was skipped (skipped).")
    exclude_replayed: bool = Field(default=False,
                                   description="Exclude trials whose clip was played more than once (replayed).")


class Completion(_Section):
    code: str | None = Field(default=None, description="Completion code shown at the end (e.g. the Prolific completion code).")
    redirect_url: str | None = Field(
        default=None,
        description="https address participants are sent to at the end, in the same tab, e.g. "
                    "https://app.prolific.com/submissions/complete?cc={code}. It may carry the placeholders "
                    "{PROLIFIC_PID}, {STUDY_ID}, {SESSION_ID} (as the participant's link carried them), "
                    "{participant} (the pseudonym) and {code} (completion.code), filled in percent-escaped, "
                    "in the path, query or fragment only; plain http only to localhost.")
    redirect_after_s: int = Field(default=5, ge=0, le=120,
                                  description="Seconds the completion page counts down before the redirect "
                                              "(0: at once); a button goes there at once.")
    message: Words = Field(default=from_catalogue("study.completion_message"), min_length=1,
                         description="Message on the final page (markdown).")

    @field_validator("redirect_url")
    @classmethod
    def _redirect_https(cls, v: str | None) -> str | None:
        return None if v is None else check_redirect_url(v)

    @field_validator("code", mode="before")
    @classmethod
    def _code_as_text(cls, v: Any) -> Any:
        # a numeric completion code (e.g. 4711) is still a code
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class AnalysisPlan(_Section):
    primary_outcome: str = Field(default="valence",
                                 description="Item or scale id measured after every clip that the primary test is about.")
    secondary_outcomes: list[str] = Field(default_factory=list,
                                          description="Further per-clip item or scale ids, tested with multiplicity correction.")
    hypothesis: Literal["human_greater", "ai_greater", "two_sided"] = Field(
        default="two_sided", description="Direction of the primary hypothesis: human_greater, ai_greater or two_sided.")
    alpha: float = Field(default=0.05, gt=0, lt=1, description="Significance level of the primary test.")
    sesoi: float = Field(default=0.2, gt=0,
                         description="Smallest effect size of interest (standardised), used for equivalence tests.")
    correction: Literal["holm", "bh"] = Field(default="holm",
                                              description="Multiplicity correction: holm or bh (Benjamini-Hochberg). Adjusted p-values are computed "
                                                          "across all outcomes (primary and secondary); the report judges the primary "
                                                          "outcome on its own p and the secondary outcomes on the adjusted p.")


class DeviceCheck(_Section):
    """The device and browser check before consent (study/device_check.py, components/device_check)."""

    enabled: bool = Field(default=True,
                          description="Check the participant's browser and device before consent; a participant who "
                                      "fails is told why and what to do, and the session ends (status ineligible_device).")
    min_width: int = Field(default=360, ge=0, le=10000,
                           description="Smallest browser window width in CSS pixels (0 = no limit). The default lets "
                                       "phones in portrait take part; e.g. 1024 keeps to computers and tablets.")
    min_height: int = Field(default=400, ge=0, le=10000,
                            description="Smallest browser window height in CSS pixels (0 = no limit).")
    audio_test: bool = Field(default=True,
                             description="A short sound test: three groups of beeps, made on the server, whose counts the "
                                         "participant types back (e.g. 3-1-4).")
    audio_attempts: int = Field(default=3, ge=1, le=5,
                                description="How many tries the sound test allows before the participant fails it.")
    headphone_check: bool = Field(default=False,
                                  description="The antiphase headphone check of Woods et al. (2017): six trials of three "
                                              "tones, pick the quietest; passed with at least 5 of 6 right.")
    min_speed_factor: float = Field(default=1.5, ge=0, le=100,
                                    description="The connection must download a part of the first clip at least this many "
                                                "times faster than the clips' highest bitrate (0 = no speed check).")
    codecs: list[str] = Field(default_factory=list,
                              description="MIME types with codecs to test, e.g. 'video/mp4; codecs=\"avc1.64001e, "
                                          "mp4a.40.2\"'; empty = the codec strings the probe found in the study's clips.")

    @field_validator("codecs")
    @classmethod
    def _codec_strings(cls, v: list[str]) -> list[str]:
        for text in v:
            if not text.strip() or len(text) > 200 or "/" not in text.split(";")[0]:
                raise ValueError(f"{text!r} is not a MIME type such as video/mp4; codecs=\"avc1.64001e\"")
        return [text.strip() for text in v]


class FollowUpAsk(_Section):
    """What a follow-up session asks, in this order: free recall, cued recognition, then per seen clip."""

    free_recall: bool = Field(default=True,
                              description="Free recall first, before any still is shown: one text box, "
                                          "'describe the clips you remember'. Scored by keywords in the export "
                                          "(manifest column recall_keywords).")
    recognition: bool = Field(default=True,
                              description="Cued recognition: a still frame of every clip the participant saw, mixed "
                                          "with `foils` stills of the study's clips they did not see, in a random order "
                                          "(stored); for each: seen before? (yes/no) and how sure (1-5).")
    foils: int = Field(default=2, ge=0, le=50,
                       description="How many stills of unseen main clips the recognition page mixes in; the manifest "
                                   "must have that many main clips a participant does not see.")
    vividness: bool = Field(default=True, description="Per seen clip: how vividly it is remembered (1-7).")
    intrusions: bool = Field(default=True,
                             description="Per seen clip: how often it came back to mind since (0 never .. 4 very often).")
    feeling_now: bool = Field(default=True,
                              description="Per seen clip: the feeling when thinking of it now, on the same valence and "
                                          "arousal items (1-9) as session 1.")
    watch_more: bool = Field(default=True, description="Per seen clip: would watch more of it (1 not at all .. 5 very much).")


class FollowUp(_Section):
    """A later session for participants who completed session 1, e.g. one day after it."""

    name: str = Field(description="Stable id of the follow-up (lowercase letters, digits, _), e.g. `day1`; in the "
                                  "follow-up link (`&followup=day1`) and the export's `followup` column.")
    delay_hours: float = Field(gt=0, le=24 * 366,
                               description="Hours after a participant completed session 1 that the follow-up opens.")
    window_hours: float = Field(default=48, gt=0, le=24 * 366,
                                description="Hours it stays open after that. Later is still allowed, and flagged "
                                            "(`late`, with the actual delay).")
    invite_excluded: bool = Field(default=False,
                                  description="Also invite participants excluded in session 1 (failed attention "
                                              "checks); by default they are not eligible.")
    ask: FollowUpAsk = Field(default_factory=FollowUpAsk, description="What the follow-up asks.")
    intro: Words = Field(default=from_catalogue("followup.intro"), min_length=1,
                         description="Text of the follow-up's first page (markdown).")
    recall_prompt: Words = Field(default=from_catalogue("followup.recall.prompt"), min_length=1,
                                 description="The free recall question.")
    completion: Completion = Field(default_factory=lambda: Completion(message=from_catalogue("followup.completion_message")),
                                   description="The follow-up's own completion code, redirect and message (as "
                                               "`completion` of session 1).")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not ins.ID_PATTERN.match(v):
            raise ValueError(f"name {v!r} {ins.ID_RULE}")
        return v

    @property
    def closes_hours(self) -> float:
        return self.delay_hours + self.window_hours


class Study(_Section):
    """A whole study file."""

    id: str | None = Field(default=None,
                           description="Short id (lowercase letters, digits, - and _); default derived from the title.")
    title: str = Field(min_length=1, description="Title shown to participants and researchers. Required.")
    version: str = Field(default="1", description="Version of this study file; change it when the protocol changes.")
    description: str = Field(default="", description="Notes for researchers (not shown to participants).")
    languages: list[str] = Field(
        default_factory=lambda: [texts.DEFAULT_LANG], min_length=1,
        description="Languages participants can take the study in, the first being the default (shipped: "
                    + ", ".join(texts.languages()) + "). Every participant-facing text of the file (consent, "
                    "instructions, custom items, attention checks, completion message, continuous rating) "
                    "is then written as {language: text}, e.g. `text: {en: Hello, de: Hallo}`.")
    device_check: DeviceCheck = Field(default_factory=DeviceCheck,
                                      description="The device and browser check shown before consent.")
    consent: Consent = Field(description="Consent page. Required.")
    instructions: Words = Field(
        default=from_catalogue("study.instructions"),
        description="Instructions shown before the practice clip (markdown).")
    demographics: list[str] = Field(default_factory=lambda: list(ins.DEFAULT_DEMOGRAPHICS),
                                    description="Built-in demographic item ids asked once after consent.")
    stimuli: StimuliSettings = Field(default_factory=StimuliSettings, description="Where the clips are described.")
    measures: Measures = Field(default_factory=Measures, description="What is asked, and when.")
    design: Design = Field(default_factory=Design, description="Which clips each participant sees, in which order.")
    playback: Playback = Field(default_factory=Playback, description="How clips are played.")
    attention_checks: list[AttentionCheck] = Field(default_factory=list,
                                                   description="Attention-check questions placed between clips.")
    exclusions: Exclusions = Field(default_factory=Exclusions, description="Pre-registered exclusion rules.")
    completion: Completion = Field(default_factory=Completion, description="What participants get at the end.")
    analysis: AnalysisPlan = Field(default_factory=AnalysisPlan, description="The pre-registered analysis plan.")
    follow_ups: list[FollowUp] = Field(
        default_factory=list,
        description="Later sessions of the same participants (e.g. after 1 day and after 7 days): free recall, "
                    "recognition, vividness, intrusions, feeling now; empty = none.")
    timeout_minutes: int = Field(default=120, ge=1,
                                 description="A session unfinished after this many minutes counts as abandoned.")

    _source_path: Path | None = PrivateAttr(default=None)
    _source_bytes: bytes | None = PrivateAttr(default=None)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, v: Any) -> Any:
        # `version: 2` or `version: 1.1` in YAML arrive as numbers; a version is a label
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

    @model_validator(mode="wrap")
    @classmethod
    def _in_default_language(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Study:
        # A {language: text} mapping reads as the study's first language where one wording is needed.
        langs = data.get("languages") if isinstance(data, dict) else None
        first = langs[0] if isinstance(langs, list) and langs and isinstance(langs[0], str) else None
        token = texts.STUDY_DEFAULT.set(first or texts.DEFAULT_LANG)
        try:
            return handler(data)
        finally:
            texts.STUDY_DEFAULT.reset(token)

    @field_validator("languages")
    @classmethod
    def _shipped_languages(cls, v: list[str]) -> list[str]:
        shipped = texts.languages()
        for k, lang in enumerate(v):
            if lang not in shipped:
                raise ValueError(f"language {lang!r} (entry {k + 1}) has no text catalogue "
                                 f"(study/locale/{lang}/LC_MESSAGES/kuleshov.po); shipped: {', '.join(shipped)}")
        if len(set(v)) != len(v):
            raise ValueError(f"each language may appear only once (got {', '.join(v)})")
        return v

    @field_validator("id")
    @classmethod
    def _slug(cls, v: str | None) -> str | None:
        if v is not None and not SLUG.match(v):
            raise ValueError(f"id {v!r} must use only lowercase letters, digits, - and _ (at most 64 characters)")
        return v

    @model_validator(mode="after")
    def _derive_and_cross_check(self, info: ValidationInfo) -> Study:
        if self.id is None:
            self.id = slugify(self.title)
        if not (info.context or {}).get("skip_cross_checks"):
            from study.protocol.checks import cross_check

            found = cross_check(dict(self))
            if found:
                raise ValueError("; ".join(f"{path}: {msg}" for path, msg in found))
        return self

    @property
    def source_path(self) -> Path | None:
        return self._source_path

    @property
    def source_text(self) -> str | None:
        """The study file as read (for the frozen snapshot stored with a run)."""
        return None if self._source_bytes is None else self._source_bytes.decode("utf-8")

    @property
    def manifest_path(self) -> Path:
        """Absolute path of the stimulus manifest (relative paths start at the study file's folder)."""
        base = self._source_path.parent if self._source_path else Path.cwd()
        return (base / self.stimuli.manifest).resolve()

    def spec_hash(self) -> str:
        """sha256 of the study file's bytes as loaded (of the canonical JSON if built in code)."""
        data = self._source_bytes if self._source_bytes is not None else self.model_dump_json().encode()
        return hashlib.sha256(data).hexdigest()


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:64].strip("-")
    return slug or "study"


def study_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

