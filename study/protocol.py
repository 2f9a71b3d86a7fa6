"""The study file: one pydantic schema holding every setting, its default and its help text.

`validate_study_file` reports every problem at once, each with the setting's path and a plain
sentence; `load_study` returns a `Study` or raises `UserError` carrying those problems.
`settings_reference()` walks the schema; docs/study_file.md is generated from it.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import types
import typing
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from study import instruments as ins
from study.errors import Problem, UserError
from study.texts import t

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ManifestLoader = Callable[[Path], tuple[list[Any], list[Problem]]]


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
    text: str = Field(min_length=1, description="Consent information shown on the first page (markdown). Required.")
    agree_label: str = Field(default=t("consent.agree"), min_length=1,
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


class Measures(_Section):
    session_start: list[str] = Field(default_factory=lambda: ["mood"],
                                     description="Session-level instrument ids asked before the first clip.")
    per_clip: list[str] = Field(default_factory=lambda: ["sam", "discrete_emotions", "moved", "attribution"],
                                description="Instrument ids asked after every clip, in this order.")
    session_end: list[str] = Field(default_factory=lambda: ["mood"],
                                   description="Session-level instrument ids asked after the last clip.")
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
    item: str = Field(min_length=1, description="Question shown beside the slider during playback, e.g. 'How do you feel right now?'.")
    min: float = Field(default=1, description="Lowest slider value.")
    max: float = Field(default=9, description="Highest slider value.")
    min_label: str = Field(default="very negative", description="Label at the low end of the slider.")
    max_label: str = Field(default="very positive", description="Label at the high end of the slider.")

    @model_validator(mode="after")
    def _range(self) -> ContinuousRating:
        if self.min >= self.max:
            raise ValueError(f"min ({self.min:g}) must be smaller than max ({self.max:g})")
        return self


class Playback(_Section):
    controls: bool = Field(default=False, description="Show the browser's video controls.")
    allow_seek: bool = Field(default=False, description="Let participants skip forward or back within a clip.")
    min_watched_share: float = Field(default=0.9, ge=0, le=1,
                                     description="Ratings open once this share (0-1) of the clip has actually been watched.")
    allow_skip_on_error: bool = Field(default=True,
                                      description="If a clip cannot be played, let the participant skip it after retrying.")
    continuous_rating: ContinuousRating | None = Field(
        default=None, description="A slider moved during playback (CARMA-style), sampled over time; empty = none.")


class AttentionCheck(_Section):
    id: str = Field(description="Stable id of the check (lowercase letters, digits, _); becomes a column name.")
    after_clip: int = Field(ge=1, description="Shown after this main clip position (1-based).")
    text: str = Field(min_length=1, description="The instruction or question.")
    options: list[str] = Field(min_length=2, description="Answers to choose from (at least two).")
    correct: str = Field(description="The correct answer; must be one of the options.")

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


class Completion(_Section):
    code: str | None = Field(default=None, description="Completion code shown at the end (e.g. the Prolific completion code).")
    redirect_url: str | None = Field(
        default=None,
        description="https address participants are sent to at the end, e.g. https://app.prolific.com/submissions/complete?cc=CODE.")
    message: str = Field(default="Thank you for taking part. Your answers have been saved.", min_length=1,
                         description="Message on the final page (markdown).")

    @field_validator("redirect_url")
    @classmethod
    def _redirect_https(cls, v: str | None) -> str | None:
        return _https(v, "redirect_url")

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


class Study(_Section):
    """A whole study file."""

    id: str | None = Field(default=None,
                           description="Short id (lowercase letters, digits, - and _); default derived from the title.")
    title: str = Field(min_length=1, description="Title shown to participants and researchers. Required.")
    version: str = Field(default="1", description="Version of this study file; change it when the protocol changes.")
    description: str = Field(default="", description="Notes for researchers (not shown to participants).")
    consent: Consent = Field(description="Consent page. Required.")
    instructions: str = Field(
        default="You will watch a series of short video clips. After each clip you will answer a few questions "
                "about how it made you feel. There are no right or wrong answers.",
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
    timeout_minutes: int = Field(default=120, ge=1,
                                 description="A session unfinished after this many minutes counts as abandoned.")

    _source_path: Path | None = PrivateAttr(default=None)
    _source_bytes: bytes | None = PrivateAttr(default=None)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, v: Any) -> Any:
        # `version: 2` or `version: 1.1` in YAML arrive as numbers; a version is a label
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

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


# ---------------------------------------------------------------------------------------------
# Checks across sections. They take whichever sections validated, so that a type error in one
# section does not hide a contradiction between two others.

def _measured_per_clip(measures: Measures) -> tuple[dict[str, ins.Item], set[str]]:
    items: dict[str, ins.Item] = {}
    scales: set[str] = set()
    for iid in measures.per_clip:
        if iid in ins.INSTRUMENTS:
            items.update({it.id: it for it in ins.INSTRUMENTS[iid].items})
            scales.update(ins.INSTRUMENTS[iid].scales)
    items.update({c.id: c for c in measures.custom_items if c.scope == "per_clip"})
    return items, scales


def cross_check(sections: dict[str, Any], partial: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(field path, message) for contradictions between settings of a parsed study.

    `sections` maps top-level names to validated values; list entries may be None where they
    failed validation (their own errors are reported elsewhere). Sections named in `partial`
    are incomplete, so checks that need all of them are skipped.
    """
    out: list[tuple[str, str]] = []
    known = ", ".join(ins.INSTRUMENTS)
    measures: Measures | None = sections.get("measures")
    if measures is not None:
        for scope in ("session_start", "per_clip", "session_end"):
            ids = getattr(measures, scope)
            for k, iid in enumerate(ids):
                where = f"measures.{scope}[{k}]"
                if iid not in ins.INSTRUMENTS:
                    hint = difflib.get_close_matches(iid, list(ins.INSTRUMENTS), n=1)
                    out.append((where, f"unknown instrument {iid!r}"
                                + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; known instruments: {known}"))
                    continue
                want = "per_clip" if scope == "per_clip" else "session"
                if ins.INSTRUMENTS[iid].scope != want:
                    out.append((where, f"instrument {iid!r} is asked "
                                + ("once per session" if want == "per_clip" else "after each clip")
                                + f", so it cannot be listed under {scope}"))
                if iid == "demographics":
                    out.append((where, "demographic questions are chosen with the top-level `demographics` list"))
                if ids.index(iid) != k:
                    out.append((where, f"instrument {iid!r} is listed twice"))
        builtin = ins.builtin_item_ids()
        taken = builtin | ins.builtin_scale_ids() | set(ins.INSTRUMENTS) | ins.RESERVED_NAMES
        seen: set[str] = set()
        for k, item in enumerate(measures.custom_items):
            where = f"measures.custom_items[{k}].id"
            if item is None:
                continue
            if item.id in seen:
                out.append((where, f"custom item id {item.id!r} is used twice"))
            elif item.id in taken:
                out.append((where, f"custom item id {item.id!r} is already taken by a built-in item, scale, "
                                   "instrument or data column; choose another id"))
            seen.add(item.id)
        if "measures" not in partial and not measures.per_clip and not [
                c for c in measures.custom_items if c.scope == "per_clip"]:
            out.append(("measures.per_clip", "no questions are asked after the clips; list at least one instrument"))

    demographics = sections.get("demographics")
    if demographics is not None:
        demo_ids = [it.id for it in ins.INSTRUMENTS["demographics"].items]
        for k, did in enumerate(demographics):
            if did not in demo_ids:
                out.append((f"demographics[{k}]", f"unknown demographic item {did!r}; known: {', '.join(demo_ids)}"))
            elif demographics.index(did) != k:
                out.append((f"demographics[{k}]", f"{did!r} is listed twice"))

    checks = sections.get("attention_checks")
    if checks is not None:
        seen_ids: set[str] = set()
        taken_ids = ins.builtin_item_ids() | ins.builtin_scale_ids() | ins.RESERVED_NAMES
        if measures is not None:
            taken_ids |= {c.id for c in measures.custom_items if c is not None}
        for k, check in enumerate(checks):
            if check is None:
                continue
            if check.id in seen_ids:
                out.append((f"attention_checks[{k}].id", f"attention check id {check.id!r} is used twice"))
            elif check.id in taken_ids:
                out.append((f"attention_checks[{k}].id", f"id {check.id!r} is already used by an item or column"))
            seen_ids.add(check.id)
        design: Design | None = sections.get("design")
        if design is not None and design.clips_per_participant is not None:
            for k, check in enumerate(checks):
                if check is not None and check.after_clip > design.clips_per_participant:
                    out.append((f"attention_checks[{k}].after_clip",
                                f"is {check.after_clip}, but each participant sees only "
                                f"{design.clips_per_participant} clips (design.clips_per_participant)"))

    plan: AnalysisPlan | None = sections.get("analysis")
    if plan is not None and measures is not None and "measures" not in partial:
        items, scales = _measured_per_clip(measures)
        measured = sorted({i for i, it in items.items() if it.is_numeric} | scales)

        def check_outcome(where: str, oid: str) -> None:
            if oid in scales:
                return
            if oid not in items:
                hint = difflib.get_close_matches(oid, measured, n=1)
                out.append((where, f"{oid!r} is not measured after each clip"
                            + (f" (did you mean {hint[0]!r}?)" if hint else "")
                            + f"; choose one of: {', '.join(measured)}"))
            elif not items[oid].is_numeric:
                out.append((where, f"{oid!r} is a {items[oid].type} item, not a number; choose a numeric item or scale"))

        check_outcome("analysis.primary_outcome", plan.primary_outcome)
        for k, oid in enumerate(plan.secondary_outcomes):
            check_outcome(f"analysis.secondary_outcomes[{k}]", oid)
            if oid == plan.primary_outcome:
                out.append((f"analysis.secondary_outcomes[{k}]", f"{oid!r} is already the primary outcome"))
    return out


# ---------------------------------------------------------------------------------------------
# Reading and validating a file.

class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loader that refuses repeated keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} appears twice in the same mapping", mark)
        seen[key] = True
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> tuple[Any, bytes | None, list[Problem]]:
    name = path.name
    if not path.exists():
        return None, None, [Problem(str(path), "file not found")]
    if path.is_dir():
        return None, None, [Problem(str(path), "is a folder, not a study file")]
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, raw, [Problem(name, f"is not UTF-8 text (bad byte at position {exc.start})")]
    if not text.strip():
        return None, raw, [Problem(name, "the file is empty; a study file needs at least `title` and `consent`")]
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name} line {mark.line + 1}, column {mark.column + 1}" if mark else name
        what = (exc.problem or "cannot be read") + (f" ({exc.context})" if exc.context else "")
        return None, raw, [Problem(where, f"YAML syntax error: {what}")]
    except yaml.YAMLError as exc:
        return None, raw, [Problem(name, f"YAML syntax error: {exc}")]
    except RecursionError:
        # PyYAML recurses once per level of nesting: thousands of `[` exhaust the stack.
        return None, raw, [Problem(name, "lists or mappings are nested too deeply to read")]
    except ValueError as exc:
        # A constructor refused a value: an integer of thousands of digits, a date like 2026-13-45.
        return None, raw, [Problem(name, f"a value cannot be read: {str(exc)[:200]}")]
    if data is None:
        return None, raw, [Problem(name, "the file holds only comments; a study file needs at least `title` and `consent`")]
    if not isinstance(data, dict):
        kind = {list: "a list", str: "a single piece of text"}.get(type(data), f"a {type(data).__name__}")
        return None, raw, [Problem(name, f"must be a mapping of settings (key: value lines), but it is {kind}")]
    return data, raw, []


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
    loc = tuple(p for p in loc if not (isinstance(p, str) and (p.startswith(("function-", "literal[")) or p in ("str", "int", "float", "bool", "none"))))
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


def _validated_sections(data: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """Each top-level setting validated on its own, salvaging what validates.

    Returns the sections and the names of those only partly valid: invalid list entries are
    None (so indexes still match the file) and invalid settings inside a section fall back to
    their defaults. Settings that cannot be salvaged are left out.
    """
    sections: dict[str, Any] = {}
    partial: set[str] = set()
    for name, field in Study.model_fields.items():
        if name not in data:
            if not field.is_required():
                sections[name] = field.get_default(call_default_factory=True)
            continue
        raw = data[name]
        try:
            sections[name] = _adapter(field).validate_python(raw)
            continue
        except ValidationError:
            pass
        element = _list_model(field.annotation)
        section = _inner_model(field.annotation)
        if element is not None and isinstance(raw, list):
            sections[name] = [_valid_or_none(element, x) for x in raw]
            partial.add(name)
        elif isinstance(section, type) and issubclass(section, BaseModel) and isinstance(raw, dict):
            values: dict[str, Any] = {}
            for key, sub in section.model_fields.items():
                if key not in raw:
                    continue
                try:
                    values[key] = _adapter(sub).validate_python(raw[key])
                except ValidationError:
                    sub_element = _list_model(sub.annotation)
                    if sub_element is not None and isinstance(raw[key], list):
                        values[key] = [_valid_or_none(sub_element, x) for x in raw[key]]
                    elif sub.is_required():
                        break
            else:
                sections[name] = section.model_construct(**values)
                partial.add(name)
    return sections, partial


def _parse(data: dict[str, Any], label: str) -> tuple[Study | None, list[Problem]]:
    try:
        study = Study.model_validate(data, context={"skip_cross_checks": True})
        sections, partial = dict(study), set()
    except ValidationError as exc:
        study = None
        sections, partial = _validated_sections(data)
        problems = [Problem(f"{label}: {p}", m) for p, m in (_plain(e) for e in exc.errors(include_url=False))]
    else:
        problems = []
    problems += [Problem(f"{label}: {p}", m) for p, m in cross_check(sections, partial)]
    return (study if not problems else None), _dedupe(problems)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _default_manifest_loader() -> ManifestLoader | None:
    try:
        from study.stimuli import load_manifest
    except ImportError:
        return None
    return load_manifest


def manifest_problems(study: Study, stimuli: list[Any], label: str = "study.yaml") -> list[Problem]:
    """Contradictions between the study's design and the clips its manifest lists."""
    out: list[Problem] = []

    def add(path: str, msg: str, severity: str = "error") -> None:
        out.append(Problem(f"{label}: {path}", msg, severity))

    ids = [s.id for s in stimuli]
    practice = study.stimuli.practice
    if practice is not None and practice not in ids:
        add("stimuli.practice", f"practice clip {practice!r} is not in the manifest ({study.manifest_path.name})")
    pool = [s for s in stimuli if s.id != practice]
    if not pool:
        add("stimuli.manifest", "the manifest lists no main clips (besides the practice clip)")
        return out
    by_source = {src: [s for s in pool if s.source == src] for src in ("human", "ai")}
    if not by_source["human"] or not by_source["ai"]:
        only = "human" if by_source["human"] else "ai"
        add("stimuli.manifest", f"every main clip is {only}; a human-AI comparison needs clips of both sources", "warning")
    pairs: dict[str, list[Any]] = {}
    for s in pool:
        if getattr(s, "pair_id", None):
            pairs.setdefault(s.pair_id, []).append(s)
    unpaired = [s for s in pool if not getattr(s, "pair_id", None)]
    design = study.design
    cpp = design.clips_per_participant
    # the default "both" quietly means "no pairs" for a manifest without pair_id; said explicitly, it is a mistake
    explicit = "pairs" in design.model_fields_set
    if design.pairs in ("both", "one_per_participant") and not pairs and explicit:
        add("design.pairs", f"is {design.pairs!r}, but no clip in the manifest has a pair_id; "
                            "add pair_id values or set pairs: ignore")
    # how many distinct clips one participant can be given at most
    capacity = len(pool) if design.pairs != "one_per_participant" else len(pairs) + len(unpaired)
    if cpp is not None and cpp > capacity:
        why = " (one clip per pair)" if design.pairs == "one_per_participant" else ""
        add("design.clips_per_participant", f"is {cpp}, but only {capacity} main clips are available{why}")
    shown = min(cpp, capacity) if cpp is not None else capacity
    if design.ordering == "blocked_by_source":
        if shown % 2:
            add("design.clips_per_participant", f"is {shown}, an odd number, so the human block and the AI block "
                                                "cannot be the same size; use an even number")
        for src, clips in by_source.items():
            if len(clips) < shown // 2:
                add("design.clips_per_participant", f"blocked_by_source gives each participant {shown // 2} {src} "
                                                    f"clips, but the manifest has only {len(clips)}")
    if design.ordering == "latin_square" and len(by_source["human"]) != len(by_source["ai"]):
        add("design.ordering", f"the manifest has {len(by_source['human'])} human and {len(by_source['ai'])} AI "
                               "clips, so the Latin square's lists cannot all hold as many of each", "warning")
    if not any(p.where.split(": ", 1)[-1].startswith("design.") and p.severity == "error" for p in out):
        out += _design_problems(study, pool, label)
    for k, check in enumerate(study.attention_checks):
        if check.after_clip > shown:
            add(f"attention_checks[{k}].after_clip", f"is {check.after_clip}, but each participant sees only {shown} clips")
    return out


def design_warnings(study: Study, label: str = "study.yaml") -> list[Problem]:
    """Settings that are valid together but undermine what the study measures (warnings)."""
    out: list[Problem] = []
    # Only the attribution instrument asks it: custom items may not reuse its item ids.
    if "true" in study.design.label_conditions and "attribution" in study.measures.per_clip:
        out.append(Problem(
            f"{label}: design.label_conditions",
            'includes "true", and measures.per_clip asks whether each clip was made by AI (attribution): '
            "participants in the true condition were told the answer with the clip, so their judgments "
            'measure reading the label, not telling the sources apart. Analyse attribution only in the "none" '
            'condition, or drop "true" (or attribution) from the study', "warning"))
    return out


def _design_problems(study: Study, pool: list[Any], label: str) -> list[Problem]:
    """Ask the assignment engine itself whether it can build lists for this design and pool."""
    try:
        from study.design import Clip, DesignError, DesignSpec, build_lists
    except ImportError:
        return []
    d = study.design
    spec = DesignSpec(clips_per_participant=d.clips_per_participant, ordering=d.ordering, seed=d.seed,
                      pairs=d.pairs, label_conditions=tuple(d.label_conditions))
    clips = [Clip(id=s.id, source=s.source, pair_id=getattr(s, "pair_id", None) or None) for s in pool]
    try:
        build_lists(spec, clips)
    except DesignError as exc:
        text = str(exc.args[0])
        found = re.search(r"design\.(\w+)", text)
        path = f"design.{found.group(1)}" if found else "design"
        return [Problem(f"{label}: {path}", re.sub(r"^study file: design\.\w+ ", "", text))]
    return []


def validate_study_file(path: str | Path, check_media: bool = False,
                        manifest_loader: ManifestLoader | None = None) -> list[Problem]:
    """Every problem with a study file and its manifest, errors and warnings, all at once."""
    return _validate(Path(path), check_media, manifest_loader)[1]


def _validate(path: Path, check_media: bool, manifest_loader: ManifestLoader | None,
              ) -> tuple[Study | None, list[Problem], list[Any] | None]:
    data, raw, problems = _read_yaml(path)
    if problems:
        return None, problems, None
    study, problems = _parse(data, path.name)
    if study is None:
        return None, problems, None
    study._source_path = path.resolve()
    study._source_bytes = raw
    problems += design_warnings(study, path.name)
    loader = manifest_loader or _default_manifest_loader()
    stimuli = None
    manifest = study.manifest_path
    if not manifest.is_file():
        problems.append(Problem(f"{path.name}: stimuli.manifest", f"manifest file not found: {manifest}"))
    elif loader is None:
        problems.append(Problem(f"{path.name}: stimuli.manifest",
                                "manifest not checked (study.stimuli is not available)", "warning"))
    else:
        try:
            stimuli, found = loader(manifest)
        except UserError as exc:
            stimuli, found = None, exc.problems or [Problem(str(manifest), str(exc.args[0]))]
        problems += found
        if stimuli is not None and not any(p.severity == "error" for p in found):
            problems += manifest_problems(study, stimuli, path.name)
        if check_media:
            try:
                from study.stimuli import check_manifest
            except ImportError:
                problems.append(Problem(str(manifest), "media not checked (study.stimuli is not available)", "warning"))
            else:
                _, media = check_manifest(manifest, hash=False)
                problems += [p for p in media if p not in found]
    return study, _dedupe(problems), stimuli


def load_study(path: str | Path, manifest_loader: ManifestLoader | None = None,
               check_manifest: bool = True) -> Study:
    """The study in a file; UserError with every problem if it has errors (warnings are allowed)."""
    path = Path(path)
    if check_manifest:
        study, problems, _ = _validate(path, False, manifest_loader)
    else:
        data, raw, problems = _read_yaml(path)
        study = None
        if not problems:
            study, problems = _parse(data, path.name)
            if study is not None:
                study._source_path, study._source_bytes = path.resolve(), raw
    errors = [p for p in problems if p.severity == "error"]
    if errors or study is None:
        raise UserError(f"{path} is not a valid study file ({len(errors)} problem{'s' if len(errors) != 1 else ''})",
                        errors)
    return study


def cli_validate(args: Any) -> int:
    """`kuleshov validate STUDY.yaml [--no-check-media]`: OK with a summary, or every problem; 0 or 1.

    Every clip is probed (codecs, duration) unless --no-check-media; --check-media, the old way
    to ask for probing, is still accepted and changes nothing.
    """
    path = Path(args.study_file)
    # Probing is the default: a study whose clips no browser can play should not pass validate.
    study, problems, stimuli = _validate(path, not getattr(args, "no_check_media", False), None)
    if getattr(args, "no_check_media", False):
        problems.append(Problem(f"{path.name}: stimuli.manifest", "media not probed (--no-check-media): "
                                "codecs, durations and readability of the clip files were not checked", "warning"))
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        print(f"{'warning' if p.severity == 'warning' else 'error'}: {p}")
    if errors or study is None:
        print(f"{path}: {len(errors)} problem{'s' if len(errors) != 1 else ''} found")
        return 1
    per_clip = ins.items_for(study, "per_clip")
    if stimuli is not None:
        main = [s for s in stimuli if s.id != study.stimuli.practice]
        n_pairs = len({s.pair_id for s in main if getattr(s, "pair_id", None)})
        clips = f"{len(main)} clips, {n_pairs} pairs" + (", 1 practice" if study.stimuli.practice else "")
    else:
        clips = "manifest not checked"
    shown = study.design.clips_per_participant or "all"
    print(f"OK: {study.title} ({clips}; {shown} per participant; {len(per_clip)} items per clip; "
          f"conditions {', '.join(study.design.label_conditions)})")
    return 0


# ---------------------------------------------------------------------------------------------
# Reference of every setting, for docs/study_file.md and the docs-drift test.

def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
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
        return "section"
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
            rows.append({"path": path, "type": _type_name(field.annotation) + _constraints(field),
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
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    head, _, rest = text.partition(DOC_START)
    _, _, tail = rest.partition(DOC_END)
    new = f"{head}{DOC_START}\n{settings_markdown()}{DOC_END}{tail}"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def cli_codebook(args: Any) -> int:
    """`kuleshov codebook [STUDY] [--out FILE]`: the codebook of a study file (or of every built-in item) as CSV."""
    study = load_study(args.study_file) if getattr(args, "study_file", None) else None
    return ins.write_codebook(study, getattr(args, "out", None))


if __name__ == "__main__":  # python -m study.protocol docs/study_file.md
    import sys

    changed = update_settings_doc(sys.argv[1] if len(sys.argv) > 1 else "docs/study_file.md")
    print("updated" if changed else "already up to date")
