"""A researcher's preview of a study as a participant sees it: built from the study, never stored.

Read-only by design: nothing here opens a write transaction. A preview is a ParticipantState
made in memory from one registered version of the study (its frozen file and manifest, parsed
as for real participants by `_context`), for a label condition and a counterbalancing list the
researcher picks, at any step of study.flow's list. The participant page draws it with the
same renderers as a real participant, against a writer that stores nothing
(app_pages/preview.py).

The preview's token is `PREVIEW_PREFIX` + random text. A real participant's token is
`secrets.token_urlsafe(24)`, whose alphabet has no colon, so no real token can look like a
preview's: the events and traces routes (server.py) drop what a preview's player sends, and
every store function treats such a token as unknown.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from study import design, flow, texts
from study.errors import UserError
from study.store.engine import _read
from study.store.sessions import ParticipantState, _ctx_key
from study.store.studies import _context, _steps, _study_row, _versions
from study.store.tables import study_versions

PREVIEW_PREFIX = "preview:"
PREVIEW_PSEUDONYM = "PREVIEW"


def new_preview_token() -> str:
    return PREVIEW_PREFIX + secrets.token_urlsafe(12)


def is_preview_token(token: Any) -> bool:
    return isinstance(token, str) and token.startswith(PREVIEW_PREFIX)


@dataclass(frozen=True)
class PreviewPlan:
    """One registered version of a study, with the choices a preview offers."""

    study_id: str
    version: str
    versions: tuple[str, ...]  # every registered version, oldest first
    study_status: str  # open | paused | closed (the study's current status)
    ctx: Any  # store.studies._Context of this version
    ctx_key: tuple
    lists: tuple[tuple[str, ...], ...]  # the counterbalancing lists (design.build_lists)

    @property
    def conditions(self) -> tuple[str, ...]:
        return tuple(self.ctx.spec.label_conditions)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(getattr(self.ctx.study, "languages", None) or [texts.DEFAULT_LANG])

    def sequence(self, list_index: int) -> list[str]:
        """The clips of list `list_index` in the order its first participant would see them."""
        return design.sequence_for(self.ctx.spec, self.ctx.clips, list_index, 0)

    def steps(self, list_index: int) -> tuple:
        return _steps(self.ctx, self.ctx_key, tuple(self.sequence(list_index)), self.ctx.practice_id)


def preview_plan(engine: Engine, study_id: str, version: str | None = None) -> PreviewPlan:
    """The study's current version (or `version`) ready to preview; UserError for an unknown
    study or version, or a design whose lists cannot be built (its message says why)."""
    if not isinstance(study_id, str) or not study_id or len(study_id) > 64:
        raise UserError("The preview link names no study (?study=ID).")
    with _read(engine) as conn:
        row = dict(_study_row(conn, study_id))
        known = tuple(str(v["version"]) for v in _versions(conn, study_id))
        if version not in (None, "") and str(version) != str(row["version"]):
            frozen = conn.execute(sa.select(study_versions).where(
                study_versions.c.study_id == study_id, study_versions.c.version == str(version))).mappings().first()
            if frozen is None:
                raise UserError(f"Study {study_id!r} has no version {version!r} (registered: {', '.join(known)}).")
            row.update(version=frozen["version"], spec_yaml=frozen["spec_yaml"], spec_hash=frozen["spec_hash"],
                       manifest=frozen["manifest"], updated_at=frozen["registered_at"])
    ctx = _context(row)
    try:
        lists = tuple(tuple(ids) for ids in design.build_lists(ctx.spec, ctx.clips))
    except design.DesignError as exc:
        raise UserError(f"Study {study_id!r} cannot be previewed: {exc}") from None
    return PreviewPlan(study_id=study_id, version=str(row["version"]), versions=known or (str(row["version"]),),
                       study_status=row["status"], ctx=ctx, ctx_key=_ctx_key(row), lists=lists)


def preview_state(plan: PreviewPlan, *, token: str, condition: str | None = None, list_index: int = 0,
                  step_key: str | None = None, language: str | None = None, status: str | None = None,
                  attention_failed: int = 0, device_info: Any = None) -> ParticipantState:
    """The participant state a preview draws: this condition, list and step (the first step if
    `step_key` is not one of the session's). Unknown choices fall back to the first offered."""
    if not is_preview_token(token):
        raise ValueError("a preview state needs a preview token (new_preview_token())")
    conditions = plan.conditions
    condition = condition if condition in conditions else conditions[0]
    list_index = list_index if isinstance(list_index, int) and 0 <= list_index < len(plan.lists) else 0
    steps = plan.steps(list_index)
    keys = [s.key for s in steps]
    index = keys.index(step_key) if step_key in keys else 0
    step = steps[index]
    before_consent = index <= keys.index("consent") if "consent" in keys else False
    # A participant who reaches the debrief or the end page has completed (flow.advance).
    default_status = ("completed" if flow.kind_of(step).marks_completion
                      else "started" if before_consent else "in_progress")
    language = language if language in plan.languages else plan.languages[0]
    seed = flow.participant_seed(plan.ctx.spec.seed, 1)
    return ParticipantState(
        participant_id=0, token=token, pseudonym=PREVIEW_PSEUDONYM, study_id=plan.study_id,
        status=status or default_status, label_condition=condition,
        list_index=list_index, participant_number=1, is_pilot=True, step_index=index, step=step, steps=steps,
        sequence=plan.sequence(list_index), practice_id=plan.ctx.practice_id, study=plan.ctx.study,
        stimuli=plan.ctx.stimuli, item_order=flow.item_order(step, seed), answers={},
        attention_failed=attention_failed, study_status="open", language=language,
        device_info=device_info if device_info is not None else {"seed": token.removeprefix(PREVIEW_PREFIX)},
        study_version=plan.version,
    )


def preview_submit(plan: PreviewPlan, state: ParticipantState, answers: dict) -> ParticipantState:
    """What submitting the current step with these (valid) answers would do, applied in memory:
    the same session rules as a real participant (flow.advance: a declined consent, a failed
    attention check or device check), nothing stored."""
    session = flow.Session(status=state.status, step_index=state.step_index, attention_failed=state.attention_failed,
                           excluded_reason=state.excluded_reason,
                           max_failed_attention=getattr(plan.ctx.study.exclusions, "max_failed_attention_checks", None),
                           study=plan.ctx.study, device_info=state.device_info, token=state.token)
    if flow.is_final(state.step):
        return state
    outcome = flow.advance(session, state.steps, answers)
    new = preview_state(plan, token=state.token, condition=state.label_condition, list_index=state.list_index,
                        step_key=state.steps[outcome.new_index].key, language=state.language, status=outcome.status,
                        attention_failed=outcome.attention_failed,
                        device_info=outcome.device_info if outcome.device_info is not None else state.device_info)
    new.excluded_reason = outcome.excluded_reason
    return new

