"""What a researcher pastes into Prolific (or hands out) for one study: links and completion.

Pure: no streamlit, no database. The Studies page shows these; tests check them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from study.completion import placeholders

PROLIFIC_QUERY = "PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
PROLIFIC_COMPLETE = "https://app.prolific.com/submissions/complete?cc="


@dataclass(frozen=True)
class Recruitment:
    prolific_link: str          # the study URL to paste into Prolific (Prolific fills the {{%...%}} parts)
    anonymous_link: str         # the same study without any panel ids (participants stay anonymous)
    completion_code: str | None  # the code to enter in Prolific's "completion code" field
    completion_url: str | None  # where a Prolific participant is sent at the end (code filled in)
    anonymous_completion_url: str | None  # where an anonymous participant is sent (panel ids empty)
    notes: list[str] = field(default_factory=list)


def recruitment(base: str, study_id: str, completion) -> Recruitment:
    """`base`: the public address of the app (e.g. https://study.example.org); `completion`: the
    study file's completion section (study.protocol schema Completion)."""
    link = f"{base.rstrip('/')}/?study={quote(study_id, safe='')}"
    code = completion.code
    template = completion.redirect_url
    notes = []
    url = anon = None
    if template:
        names = placeholders(template)
        # Keep Prolific's own placeholders for the per-participant parts; fill only the code.
        url = _fill_code(template, code, keep=True)
        anon = _fill_code(template, code, keep=False)
        if "code" in names and not code:
            notes.append("The redirect URL uses {code} but the study file sets no completion.code.")
        if any(n in names for n in ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")):
            notes.append("With the anonymous link the redirect's PROLIFIC_PID, STUDY_ID and SESSION_ID are empty.")
    elif code:
        notes.append(f"The study file sets no completion.redirect_url: participants see the code {code} on the "
                     f"last page. To send them back to Prolific at once, set redirect_url: {PROLIFIC_COMPLETE}{{code}}")
    else:
        notes.append("The study file sets neither completion.code nor completion.redirect_url: Prolific cannot "
                     "tell who finished. Set both in the completion section.")
    return Recruitment(f"{link}&{PROLIFIC_QUERY}", link, code, url, anon, notes)


def _fill_code(template: str, code: str | None, keep: bool) -> str:
    """The redirect with the code filled in; the per-participant parts shown as <NAME> (keep) or
    left empty as an anonymous participant's redirect has them."""
    import string

    out = []
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        out.append(literal)
        if name == "code":
            out.append(quote(code or "", safe=""))
        elif name == "participant":
            out.append("<pseudonym>")
        elif name is not None and keep:
            out.append(f"<{name}>")
    return "".join(out)


@dataclass(frozen=True)
class FollowupRecruitment:
    name: str
    prolific_link: str  # finds the participant's session by PROLIFIC_PID
    personal_link: str  # the form of the personal links shown at the end of session 1 (anonymous links)
    completion_code: str | None
    completion_url: str | None
    notes: list[str] = field(default_factory=list)


def followup_recruitment(base: str, study_id: str, follow_up) -> FollowupRecruitment:
    """What to paste into Prolific for one follow-up (study file follow_ups entry): its own study
    URL, which finds each participant's earlier session by PROLIFIC_PID, and its own completion."""
    link = f"{base.rstrip('/')}/?study={quote(study_id, safe='')}&followup={quote(follow_up.name, safe='')}"
    completion = follow_up.completion
    notes = [f"Opens {follow_up.delay_hours:g} h after a participant completed session 1, for {follow_up.window_hours:g} h "
             "(later is still accepted and flagged late). In Prolific, make it a separate study whose allowlist "
             "holds the participant IDs listed as eligible."]
    url = _fill_code(completion.redirect_url, completion.code, keep=True) if completion.redirect_url else None
    if not completion.code and not completion.redirect_url:
        notes.append(f"follow_ups ({follow_up.name}) sets neither completion.code nor completion.redirect_url: "
                     "Prolific cannot tell who finished the follow-up.")
    return FollowupRecruitment(follow_up.name, f"{link}&{PROLIFIC_QUERY}", f"{link}&f=<personal token>",
                               completion.code, url, notes)


def eligible_csv(rows: list[dict]) -> str:
    """The eligible participants as CSV (Prolific ID, pseudonym, when the follow-up opens and closes, status)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["prolific_pid", "participant_id", "opens_at", "closes_at", "open_now", "late", "followup_status"])
    for r in rows:
        writer.writerow([_safe_cell(r["prolific_pid"] or ""), r["pseudonym"], r["opens_at"].strftime("%Y-%m-%dT%H:%M:%SZ"),
                         r["closes_at"].strftime("%Y-%m-%dT%H:%M:%SZ"), r["open_now"], r["late"],
                         r["followup_status"] or "not started"])
    return out.getvalue()


def _safe_cell(text: str) -> str:
    # a Prolific ID is hex; anything else that a spreadsheet would run as a formula is defused
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
