"""Follow-up sessions, pure: the clock, when a follow-up is open, its pages, recognition order, recall scoring.

A follow-up (study file `follow_ups`) is a later session of a participant who completed session 1:
free recall first (before any cue), then cued recognition (stills of the clips they saw mixed
with stills of clips they did not see), then per seen clip vividness, intrusions, the feeling
now (valence/arousal, as in session 1) and whether they would watch more. The store
(study/store/followups.py) keeps where each participant is; this module decides nothing
about the database.

Every "now" of the follow-up logic is `now()`: the real UTC time plus KULESHOV_CLOCK_OFFSET_HOURS
(and, for tests, the hours in KULESHOV_CLOCK_FILE), so tests and `kuleshov simulate` can move
time forward without waiting a day. Tests may also patch `study.followup.now`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from study.errors import UserError

# ----------------------------------------------------------------------------------------- clock


def clock_offset_hours() -> float:
    from study import config

    offset = float(config.setting("KULESHOV_CLOCK_OFFSET_HOURS"))
    file = config.setting("KULESHOV_CLOCK_FILE")
    if file:
        try:
            offset += float(Path(file).read_text(encoding="utf-8").strip() or 0)
        except (OSError, ValueError):
            raise UserError(f"KULESHOV_CLOCK_FILE={file!r} must name a readable file holding a number of hours") from None
    if offset and config.production():
        raise UserError("KULESHOV_CLOCK_OFFSET_HOURS / KULESHOV_CLOCK_FILE move the follow-up clock; "
                        "they are refused in production mode")
    return offset


_FIXED: list[datetime] = []  # set by `clock_at` (kuleshov simulate): the clock stands at this moment


def now() -> datetime:
    """The follow-up clock: UTC now, moved forward by the configured offset (see the module doc)."""
    if _FIXED:
        return _FIXED[-1]
    return datetime.now(timezone.utc) + timedelta(hours=clock_offset_hours())


@contextmanager
def clock_at(moment: datetime) -> Iterator[None]:
    """Within the block, the follow-up clock reads `moment` (one thread: `kuleshov simulate`)."""
    _FIXED.append(_aware(moment))
    try:
        yield
    finally:
        _FIXED.pop()


def _aware(moment: datetime) -> datetime:
    # SQLite gives naive datetimes back; every stored time is UTC
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    status: str  # early | open | late
    opens_at: datetime
    closes_at: datetime
    delay_hours: float  # actual hours since session 1 was completed


def timing(fu, completed_at: datetime, at: datetime) -> Timing:
    """Whether follow-up `fu` is open at `at` for someone who completed session 1 at `completed_at`."""
    done, at = _aware(completed_at), _aware(at)
    opens = done + timedelta(hours=fu.delay_hours)
    closes = opens + timedelta(hours=fu.window_hours)
    delay = (at - done).total_seconds() / 3600
    status = "early" if at < opens else ("late" if at > closes else "open")
    return Timing(status, opens, closes, delay)


def hours_until(moment: datetime, at: datetime) -> float:
    return max(0.0, (_aware(moment) - _aware(at)).total_seconds() / 3600)


def when_text(moment: datetime, lang: str) -> str:
    """A date and time a participant can act on, in their language (UTC, said so)."""
    moment = _aware(moment).astimezone(timezone.utc)
    if lang == "de":
        months = ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
                  "Oktober", "November", "Dezember")
        return f"{moment.day}. {months[moment.month - 1]} {moment.year} um {moment:%H:%M} Uhr (UTC)"
    months = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December")
    return f"{moment.day} {months[moment.month - 1]} {moment.year} at {moment:%H:%M} (UTC)"


# ----------------------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class Scale:
    """One per-clip question: its stored item id (= the export's measure), text key, range and labelled points."""

    id: str
    text: str  # catalogue key
    low: int
    high: int
    labels: dict[int, str]  # point -> catalogue key


SCALES: dict[str, Scale] = {
    "vividness": Scale("vividness", "followup.vividness", 1, 7,
                       {1: "followup.vividness.1", 7: "followup.vividness.7"}),
    "intrusions": Scale("intrusions", "followup.intrusions", 0, 4,
                        {k: f"followup.intrusions.{k}" for k in range(5)}),
    "valence_now": Scale("valence_now", "followup.valence_now", 1, 9,
                         {1: "item.valence.anchor.1", 5: "item.valence.anchor.5", 9: "item.valence.anchor.9"}),
    "arousal_now": Scale("arousal_now", "followup.arousal_now", 1, 9,
                         {1: "item.arousal.anchor.1", 5: "item.arousal.anchor.5", 9: "item.arousal.anchor.9"}),
    "watch_more": Scale("watch_more", "followup.watch_more", 1, 5,
                        {1: "followup.watch_more.1", 5: "followup.watch_more.5"}),
}
CONFIDENCE = Scale("confidence", "followup.recognition.confidence", 1, 5,
                   {1: "followup.confidence.1", 5: "followup.confidence.5"})
# which `ask` switch asks which scales
ASKS = {"vividness": ("vividness",), "intrusions": ("intrusions",), "feeling_now": ("valence_now", "arousal_now"),
        "watch_more": ("watch_more",)}
RECALL_ITEM = "recall_text"
MAX_RECALL_CHARS = 20_000


@dataclass(frozen=True)
class Page:
    key: str  # stored as followup_answers.step_key: intro, recall, recognition, clip:<stimulus id>, complete
    kind: str  # intro | recall | recognition | clip | complete
    stimulus_id: str | None = None
    stills: tuple[str, ...] = ()  # recognition: stimulus ids in the order shown
    scales: tuple[Scale, ...] = ()

    @property
    def final(self) -> bool:
        return self.kind == "complete"


def still_order(seen: list[str], unseen: list[str], foils: int, seed: int) -> list[str]:
    """Every seen clip plus `foils` unseen ones, shuffled; the same seed gives the same order."""
    rng = random.Random(seed)
    chosen = rng.sample(sorted(unseen), min(foils, len(unseen)))
    order = list(seen) + chosen
    rng.shuffle(order)
    return order


def pages(fu, seen: list[str], stills: list[str]) -> list[Page]:
    """The follow-up's pages for a participant who saw `seen` (session 1 order); `stills` is the
    stored recognition order."""
    ask = fu.ask
    out = [Page("intro", "intro")]
    if ask.free_recall:
        out.append(Page("recall", "recall"))
    if ask.recognition and stills:
        out.append(Page("recognition", "recognition", stills=tuple(stills)))
    scales = tuple(SCALES[s] for switch, ids in ASKS.items() if getattr(ask, switch) for s in ids)
    if scales:
        out += [Page(f"clip:{sid}", "clip", stimulus_id=sid, scales=scales) for sid in seen]
    out.append(Page("complete", "complete"))
    return out


def old_item(sid: str) -> str:
    return f"old:{sid}"


def confidence_item(sid: str) -> str:
    return f"confidence:{sid}"


def _whole(value: Any, low: int, high: int) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return isinstance(value, int) and low <= value <= high


def validate(page: Page, answers: dict[str, Any]) -> dict[str, str]:
    """item id -> catalogue key of the problem; empty when the page's answers can be stored."""
    from study.texts import t

    errors: dict[str, str] = {}
    if page.kind == "recall":
        text = answers.get(RECALL_ITEM)
        if not isinstance(text, str) or not text.strip():
            errors[RECALL_ITEM] = t("followup.recall.empty")
        elif len(text) > MAX_RECALL_CHARS:
            errors[RECALL_ITEM] = t("followup.recall.empty")
    elif page.kind == "recognition":
        for sid in page.stills:
            if not _whole(answers.get(old_item(sid)), 0, 1):
                errors[old_item(sid)] = t("followup.answer_all")
            if not _whole(answers.get(confidence_item(sid)), CONFIDENCE.low, CONFIDENCE.high):
                errors[confidence_item(sid)] = t("followup.answer_all")
    elif page.kind == "clip":
        for scale in page.scales:
            if not _whole(answers.get(scale.id), scale.low, scale.high):
                errors[scale.id] = t("followup.answer_all")
    return errors


def rows_for(page: Page, answers: dict[str, Any]) -> list[dict]:
    """(item_id, stimulus_id, value_num, value_text) rows of a validated page."""
    if page.kind == "recall":
        return [{"item_id": RECALL_ITEM, "stimulus_id": None, "value_num": None,
                 "value_text": answers[RECALL_ITEM].strip()}]
    if page.kind == "recognition":
        rows = []
        for pos, sid in enumerate(page.stills, start=1):
            rows.append({"item_id": old_item(sid), "stimulus_id": sid, "value_num": float(answers[old_item(sid)]),
                         "value_text": None, "shown_position": pos})
            rows.append({"item_id": confidence_item(sid), "stimulus_id": sid,
                         "value_num": float(answers[confidence_item(sid)]), "value_text": None, "shown_position": pos})
        return rows
    if page.kind == "clip":
        return [{"item_id": s.id, "stimulus_id": page.stimulus_id, "value_num": float(answers[s.id]),
                 "value_text": None} for s in page.scales]
    return []


# ---------------------------------------------------------------------------------- recall score

_WORD = re.compile(r"\w+", re.UNICODE)
# words of a title that say nothing about the clip
_STOP = {"a", "an", "the", "of", "and", "or", "in", "on", "at", "to", "over", "under", "with", "by", "for", "from",
         "demonstration", "clip", "der", "die", "das", "ein", "eine", "und", "im", "am", "über", "mit"}


def recall_keywords(title: str | None, column: str | None) -> list[str]:
    """The manifest's `recall_keywords` (semicolon-separated), else the content words of the title."""
    if column and str(column).strip():
        return [k.strip().lower() for k in str(column).split(";") if k.strip()]
    title = re.sub(r"\(.*?\)", " ", title or "")
    return [w for w in (m.lower() for m in _WORD.findall(title)) if w not in _STOP and len(w) > 2]


def recalled(text: str | None, keywords: list[str]) -> bool:
    """Whether the free recall text names the clip: any keyword as a whole word (or phrase), case-insensitive."""
    if not text or not keywords:
        return False
    low = text.lower()
    return any(re.search(r"(?<!\w)" + re.escape(k) + r"(?!\w)", low) for k in keywords)


@dataclass
class Access:
    """What a follow-up link leads to (study/store/followups.py `find`)."""

    outcome: str  # unknown | not_eligible | early | open | late | completed
    study_id: str | None = None
    followup: Any = None  # the protocol FollowUp
    participant_id: int | None = None
    timing: Timing | None = None
    language: str = "en"
    extra: dict = field(default_factory=dict)
