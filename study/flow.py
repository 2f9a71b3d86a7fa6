"""A participant's session as declared data: the kinds of step, the ordered steps, the rules.

Pure: no Streamlit, no database. Each kind of step (consent, items pages, clips, attention
checks, debrief ...) is one `StepKind` in `KINDS`: where its steps come from in the study file
(its `slots` in the session order `SESSION`), whether it collects answers or shows a clip, how
its answers are checked, how a bot answers it and what submitting it does to the session
(`on_submit`). `advance` applies those rules and returns an `Outcome` that study.store only
persists; the participant page keeps its own table kind -> renderer (app_pages/participant.py).
Step keys are stable and stored with every response:

    device_check, consent, demographics, mood_pre, instructions, practice, trial:<pos>, attention:<id>,
    mood_post, debrief, complete
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from study import item_types
from study.item_types import TEXT_MAX_CHARS, as_number, option_values  # noqa: F401  (part of this API)
from study.texts import from_catalogue, t

CONSENT_AGREE = "agree"
CONSENT_DECLINE = "decline"
ACTIVE_STATUSES = ("started", "in_progress")


@dataclass(frozen=True)
class Step:
    key: str
    kind: str  # a name in KINDS
    position: int | None = None  # clip position (0 = practice, 1.. main clips)
    stimulus_id: str | None = None
    items: tuple[Any, ...] = ()
    title: str = ""  # a texts.Text: steps are shared by participants of every language
    randomize_items: bool = False

    @property
    def declared(self) -> StepKind:
        return kind_of(self)

    @property
    def has_clip(self) -> bool:
        return self.declared.has_clip

    @property
    def collects_data(self) -> bool:
        return self.declared.collects_data


@dataclass(frozen=True)
class Answer:
    """One answer as the page gives it. `untouched`: a slider the participant never moved."""

    value: float | str | None
    untouched: bool = False
    response_time_ms: int | None = None
    shown_position: int | None = None


@dataclass(frozen=True)
class Plan:
    """What the steps of one participant are built from."""

    study: Any
    sequence: list[str]  # main clip ids, position 1..n
    practice_id: str | None


@dataclass(frozen=True)
class Session:
    """The part of a participant's state the session rules read."""

    status: str
    step_index: int
    attention_failed: int = 0
    excluded_reason: str | None = None
    max_failed_attention: int | None = None  # study.exclusions.max_failed_attention_checks
    study: Any = None  # the participant's protocol.Study (rules that read its settings)
    device_info: Any = None  # participants.device_info as stored so far
    token: str = ""


@dataclass(frozen=True)
class Outcome:
    """What submitting a step does to the session; study.store writes exactly this.

    stamps: timestamp columns to set to now (withdrawn_at, completed_at).
    """

    new_index: int
    status: str
    attention_failed: int
    excluded_reason: str | None
    stamps: tuple[str, ...] = ()
    device_info: Any = None  # when not None: the new participants.device_info


def _no_change(session: Session, step: Step, answers: dict, outcome: Outcome) -> Outcome:
    return outcome


def _bot_answers_items(bot, step: Step) -> dict[str, Answer]:
    """A bot's answers to a page: each item answered as its response type says."""
    out: dict[str, Answer] = {}
    for item in step.items:
        answer = item_types.get(item.type).simulate(bot, item, step)
        if answer is not None:
            out[item.id] = answer
    return out


@dataclass(frozen=True)
class StepKind:
    """Everything that varies by kind of step.

    slots: name -> builder(plan) -> list of Steps; SESSION orders the slots. validate(step,
    answers) -> {item_id: problem}. bot_answers(bot, step) -> {item_id: Answer}: how
    study/simulate.py answers. on_submit(session, step, answers, outcome) -> Outcome: the
    session rule of this kind, given the default outcome (move on one step, nothing else).
    """

    name: str
    collects_data: bool = True
    has_clip: bool = False
    shows_progress: bool = True
    withdrawable: bool = True  # the page offers "Withdraw from the study"
    marks_completion: bool = False  # reaching this step completes the session
    final: bool = False  # the last step: submitting it changes nothing
    slots: dict[str, Callable[[Plan], list[Step]]] = field(default_factory=dict)
    validate: Callable[[Step, dict], dict[str, str]] = None  # type: ignore[assignment]  # set below
    bot_answers: Callable[[Any, Step], dict[str, Answer]] = _bot_answers_items
    on_submit: Callable[[Session, Step, dict, Outcome], Outcome] = _no_change

    def __post_init__(self):
        if self.validate is None:
            object.__setattr__(self, "validate", validate_items if self.collects_data else _nothing_to_check)


KINDS: dict[str, StepKind] = {}
SESSION: list[str] = []  # slot names in session order


def register(kind: StepKind, after: str | None = None) -> StepKind:
    """Declare a kind of step; its slots go after the slot `after` (default: at the end)."""
    KINDS[kind.name] = kind
    new = [s for s in kind.slots if s not in SESSION]
    at = SESSION.index(after) + 1 if after is not None else len(SESSION)
    SESSION[at:at] = new
    return kind


def unregister(name: str) -> None:
    """Forget a kind of step and its slots (tests that declare their own kinds clean up with it)."""
    kind = KINDS.pop(name)
    SESSION[:] = [s for s in SESSION if s not in kind.slots]


def kind_of(step: Step) -> StepKind:
    try:
        return KINDS[step.kind]
    except KeyError:
        raise KeyError(f"unknown step kind {step.kind!r}; known kinds: {', '.join(KINDS)}") from None


def is_final(step: Step) -> bool:
    return kind_of(step).final


def shows_progress(step: Step) -> bool:
    return kind_of(step).shows_progress


def withdrawable(step: Step) -> bool:
    return kind_of(step).withdrawable


# --------------------------------------------------------------------------- steps


def _items(study, scope: str) -> tuple:
    from study.instruments import items_for

    return tuple(items_for(study, scope))


def consent_item(study) -> Any:
    """The consent answer as an item (for the codebook): the labels are the buttons' labels."""
    from study.instruments import Item, Option

    agree = getattr(study.consent, "agree_label", None) or from_catalogue("consent.agree")
    return Item(
        id="consent", instrument="consent", type="choice", text=from_catalogue("consent.question"),
        label="Consent",
        options=[Option(value=CONSENT_AGREE, label=agree),
                 Option(value=CONSENT_DECLINE, label=from_catalogue("consent.decline"))],
        description="Consent given (agree) or refused (decline) on the first page.",
    )


def build_steps(study, sequence: list[str], practice_id: str | None) -> list[Step]:
    """Every step of one participant's session, in order, for their planned clip sequence.

    Each slot of SESSION adds its steps (a slot with nothing to ask, e.g. no demographics,
    adds none). Attention checks come right after the clip whose position is their
    `after_clip` (1-based); a check placed after the last clip, or beyond it, comes after the
    last clip.
    """
    plan = Plan(study, list(sequence), practice_id)
    builders = {slot: build for kind in KINDS.values() for slot, build in kind.slots.items()}
    return [step for slot in SESSION for step in builders[slot](plan)]


def participant_seed(study_seed: int, participant_number: int) -> int:
    """The seed for one participant's orderings: reproducible from the study seed and their number."""
    return int(study_seed) * 1_000_003 + int(participant_number)


def item_order(step: Step, participant_seed: int) -> list[str]:
    """Item ids in the order to show them (stored with the trial, so the data keep stable ids).

    With randomisation on, items are shuffled within each instrument, and instruments keep
    their declared order: a judgment and its confidence rating (two items) stay together and
    in order, and a scale's items stay on one block.
    """
    ids = [item.id for item in step.items]
    if not step.randomize_items:
        return ids
    rng = random.Random(f"{participant_seed}:{step.key}")
    blocks: dict[str, list[str]] = {}
    for item in step.items:
        blocks.setdefault(item.instrument, []).append(item.id)
    ordered: list[str] = []
    for block in blocks.values():
        if len(block) > 2:
            block = block[:]
            rng.shuffle(block)
        ordered.extend(block)
    return ordered


# --------------------------------------------------------------------------- answers


def validate_answers(step: Step, answers: dict[str, Answer]) -> dict[str, str]:
    """Problems with a page's answers, keyed by item id, each a sentence for the participant.

    Empty dict: the answers may be stored. Checked as the step's kind says (items pages:
    `validate_items`; steps that collect nothing accept nothing to check).
    """
    return kind_of(step).validate(step, answers)


def _nothing_to_check(step: Step, answers: dict[str, Answer]) -> dict[str, str]:
    return {}


def validate_items(step: Step, answers: dict[str, Answer]) -> dict[str, str]:
    """Each item's answer checked as its response type says (item_types).

    An unmoved slider is accepted (stored as untouched, no value) only where the item is optional.
    """
    errors: dict[str, str] = {}
    by_id = {item.id: item for item in step.items}
    for item_id in answers:
        if item_id not in by_id:
            errors[item_id] = t("error.not_on_page")
    for item in step.items:
        kind = item_types.get(item.type)
        answer = answers.get(item.id)
        required = bool(getattr(item, "required", True))
        value = None if answer is None else answer.value
        if isinstance(value, str) and not value.strip() and not (kind.free_text and not required):
            value = None
        if answer is not None and answer.untouched:
            if required:
                errors[item.id] = t("error.slider_untouched")
            elif value is not None:
                errors[item.id] = t("error.untouched_value")
            continue
        if value is None:
            if required:
                errors[item.id] = t("error.required")
            continue
        problem = kind.check(item, value)
        if problem:
            errors[item.id] = problem
    return errors


def is_numeric(item) -> bool:
    return item_types.get(item.type).numeric


def stored_value(item, answer: Answer) -> tuple[float | None, str | None]:
    """(value_num, value_text) for the responses table: numbers as numbers, everything else as text."""
    if answer.untouched or answer.value is None:
        return None, None
    if is_numeric(item):
        return as_number(answer.value), None
    if isinstance(answer.value, (int, float)) and not isinstance(answer.value, bool) and not option_values(item):
        return float(answer.value), None
    return None, str(answer.value)


def attention_passed(step: Step, answers: dict[str, Answer]) -> bool:
    """True when every attention item on the step was answered with its correct option."""
    for item in step.items:
        correct = getattr(item, "correct", None)
        if correct is None:
            continue
        answer = answers.get(item.id)
        if answer is None or answer.value is None or str(answer.value) != str(correct):
            return False
    return True


def consent_given(answers: dict[str, Answer]) -> bool:
    answer = answers.get("consent")
    return answer is not None and str(answer.value) == CONSENT_AGREE


# --------------------------------------------------------------------------- session rules


def advance(session: Session, steps, answers: dict[str, Answer]) -> Outcome:
    """What submitting the current step with these (valid) answers does to the session.

    The step's kind decides its own effect (consent declined ends the session, a failed
    attention check counts and may exclude); then reaching a step that marks completion
    (debrief, complete) while still active completes the session, so a tab closed on the
    debrief still counts as complete.
    """
    index = session.step_index
    step = steps[index]
    outcome = Outcome(index + 1, session.status, session.attention_failed, session.excluded_reason)
    outcome = kind_of(step).on_submit(session, step, answers, outcome)
    if kind_of(steps[outcome.new_index]).marks_completion and outcome.status in ACTIVE_STATUSES:
        outcome = replace(outcome, status="completed", stamps=(*outcome.stamps, "completed_at"))
    return outcome


def watched_enough(watched_share: float | None, study) -> bool:
    """Has the clip been watched far enough for its ratings to open (playback.min_watched_share)?"""
    needed = float(study.playback.min_watched_share or 0.0)
    return needed <= 0 or (watched_share is not None and watched_share + 1e-9 >= needed)


def shown_label(source: str | None, label_condition: str) -> str | None:
    """The source label shown with a clip: none, the true source, or the opposite one (swapped)."""
    if label_condition == "true":
        return source
    if label_condition == "swapped" and source in ("human", "ai"):
        return "ai" if source == "human" else "human"
    return None


def debrief_info(study, stimuli_rows, sequence: list[str]) -> list[dict]:
    """The clips this participant saw, in order, saying which were AI-generated.

    `stimuli_rows`: mapping stimulus_id -> row (dict or object with source/title), or a list of
    such rows with a `stimulus_id` or `id`.
    """
    if not isinstance(stimuli_rows, dict):
        stimuli_rows = {_get(r, "stimulus_id") or _get(r, "id"): r for r in stimuli_rows}
    out = []
    for pos, sid in enumerate(sequence, start=1):
        row = stimuli_rows.get(sid)
        source = _get(row, "source") if row is not None else None
        out.append({
            "position": pos,
            "stimulus_id": sid,
            "title": (_get(row, "title") if row is not None else None) or sid,
            "source": source,
            "ai_generated": source == "ai",
        })
    return out


def _get(row, name):
    return row.get(name) if isinstance(row, dict) else getattr(row, name, None)


# --------------------------------------------------------------------------- the kinds of step


def _consent_steps(plan: Plan) -> list[Step]:
    return [Step("consent", "consent", items=(consent_item(plan.study),), title=from_catalogue("step.consent.title"))]


def _consent_rule(session: Session, step: Step, answers: dict, outcome: Outcome) -> Outcome:
    if consent_given(answers):
        return replace(outcome, status="in_progress")
    # Declining ends the session where it is: the page stays, status declined.
    return replace(outcome, status="declined", new_index=session.step_index, stamps=("withdrawn_at",))


def _items_steps(key: str, scope: str, kind: str, randomized: bool = True) -> Callable[[Plan], list[Step]]:
    def build(plan: Plan) -> list[Step]:
        items = _items(plan.study, scope)
        if not items:
            return []
        randomize = randomized and bool(plan.study.measures.randomize_item_order)
        return [Step(key, kind, items=items, title=from_catalogue(f"step.{key}.title"), randomize_items=randomize)]
    return build


def _plain_step(key: str) -> Callable[[Plan], list[Step]]:
    return lambda plan: [Step(key, key, title=from_catalogue(f"step.{key}.title"))]


def _practice_steps(plan: Plan) -> list[Step]:
    if not plan.practice_id:
        return []
    return [Step("practice", "practice", position=0, stimulus_id=plan.practice_id, items=_items(plan.study, "per_clip"),
                 title=from_catalogue("step.practice.title"), randomize_items=bool(plan.study.measures.randomize_item_order))]


def attention_step(check) -> Step:
    from study.instruments import attention_item

    return Step(f"attention:{check.id}", "attention", items=(attention_item(check),), title=from_catalogue("step.attention.title"))


def _clip_steps(plan: Plan) -> list[Step]:
    """The main clips in their planned order, each attention check after its clip."""
    n = len(plan.sequence)
    per_clip = _items(plan.study, "per_clip")
    randomize = bool(plan.study.measures.randomize_item_order)
    checks_after: dict[int, list] = {}
    for check in plan.study.attention_checks:
        checks_after.setdefault(min(max(int(check.after_clip), 1), n) if n else 0, []).append(check)
    steps = [attention_step(check) for check in checks_after.pop(0, [])]
    for pos, stimulus_id in enumerate(plan.sequence, start=1):
        steps.append(Step(f"trial:{pos}", "trial", position=pos, stimulus_id=stimulus_id, items=per_clip,
                          title=from_catalogue("step.trial.title", position=pos, total=n), randomize_items=randomize))
        steps.extend(attention_step(check) for check in checks_after.get(pos, []))
    return steps


def _attention_rule(session: Session, step: Step, answers: dict, outcome: Outcome) -> Outcome:
    if attention_passed(step, answers):
        return outcome
    failed = session.attention_failed + 1
    limit = session.max_failed_attention
    reason = outcome.excluded_reason
    if limit is not None and failed > limit:
        reason = f"failed {failed} attention check(s) (at most {limit} allowed)"
    return replace(outcome, attention_failed=failed, excluded_reason=reason)


DEVICE_REPORT = "device_report"


def _device_steps(plan: Plan) -> list[Step]:
    settings = getattr(plan.study, "device_check", None)
    if settings is None or not settings.enabled:
        return []
    return [Step("device_check", "device_check", title=from_catalogue("step.device_check.title"))]


def _device_parts(answers: dict) -> tuple[Any, Any]:
    """(the browser's report, the server's Expectations) from a device-check submit."""
    value = getattr(answers.get(DEVICE_REPORT), "value", None)
    if isinstance(value, dict):
        return value.get("report"), value.get("expect")
    return None, None


def _validate_device(step: Step, answers: dict) -> dict[str, str]:
    from study import device_check

    report, expect = _device_parts(answers)
    if set(answers) != {DEVICE_REPORT} or not isinstance(expect, device_check.Expectations):
        return {DEVICE_REPORT: t("device.bad_report", problem="the page sent no device report")}
    problem = device_check.report_problem(report, list(expect.codecs))
    return {DEVICE_REPORT: t("device.bad_report", problem=problem)} if problem else {}


def _device_rule(session: Session, step: Step, answers: dict, outcome: Outcome) -> Outcome:
    """Passing moves on to consent; a wrong sound test may be tried again; failing ends the session."""
    from study import device_check

    report, expect = _device_parts(answers)
    seed = device_check.seed_of(session.device_info, session.token)
    verdict = device_check.judge(report, session.study.device_check, expect, seed, session.device_info)
    if verdict.passed:
        return replace(outcome, device_info=verdict.device_info)
    if verdict.retry_audio:
        return replace(outcome, new_index=session.step_index, device_info=verdict.device_info)
    return replace(outcome, new_index=session.step_index, status="ineligible_device",
                   excluded_reason=device_check.excluded_reason(verdict.failed), device_info=verdict.device_info)


def _bot_device_report(bot, step: Step) -> dict[str, Answer]:
    """A bot's device: a desktop Chrome that plays everything and hears the beeps."""
    from study import device_check

    state = bot.state
    seed = device_check.seed_of(getattr(state, "device_info", None), state.token)
    codecs = list(getattr(bot, "device_codecs", ()) or ())
    report = {"version": device_check.REPORT_VERSION, "screen": {"width": 1920, "height": 1080},
              "window": {"width": 1280, "height": 800}, "pixel_ratio": 1, "touch": False, "max_touch_points": 0,
              "user_agent": "kuleshov-simulate", "platform": "simulated", "language": "en",
              "codecs": [{"mime": m, "can_play": "probably", "mse": True} for m in codecs],
              "speed": None, "audio": {"typed": device_check.digits(seed, 0), "plays": 1},
              "headphones": {"picks": [q for q, _ in device_check.headphone_plan(seed)]}}
    return {DEVICE_REPORT: Answer({"report": report, "expect": device_check.Expectations(codecs=tuple(codecs))})}


def _bot_consents(bot, step: Step) -> dict[str, Answer]:
    return {item.id: bot.consent() for item in step.items}


register(StepKind("device_check", withdrawable=False, shows_progress=False, slots={"device_check": _device_steps},
                  validate=_validate_device, bot_answers=_bot_device_report, on_submit=_device_rule))
register(StepKind("consent", withdrawable=False, slots={"consent": _consent_steps}, bot_answers=_bot_consents,
                  on_submit=_consent_rule))
register(StepKind("demographics", slots={"demographics": _items_steps("demographics", "demographics", "demographics",
                                                                      randomized=False)}))
register(StepKind("questions", slots={"mood_pre": _items_steps("mood_pre", "session_start", "questions"),
                                      "mood_post": _items_steps("mood_post", "session_end", "questions")}))
register(StepKind("instructions", collects_data=False, slots={"instructions": _plain_step("instructions")}))
register(StepKind("practice", has_clip=True, slots={"practice": _practice_steps}))
# Attention checks have no slot of their own: the clips slot places them between the clips.
register(StepKind("trial", has_clip=True, slots={"clips": _clip_steps}))
register(StepKind("attention", on_submit=_attention_rule))
register(StepKind("debrief", collects_data=False, shows_progress=False, marks_completion=True,
                  slots={"debrief": _plain_step("debrief")}))
register(StepKind("complete", collects_data=False, shows_progress=False, marks_completion=True, final=True,
                  slots={"complete": _plain_step("complete")}))
# The session order of the slots above (a kind registered later names the slot it follows).
SESSION[:] = ["device_check", "consent", "demographics", "mood_pre", "instructions", "practice", "clips", "mood_post", "debrief",
              "complete"]
