"""Where a participant goes at the end: the redirect URL's placeholders, checked and filled.

A study file's `completion.redirect_url` may carry placeholders that are filled per
participant, so panels other than Prolific work too (CloudResearch, SONA and most others take
a completion URL with the participant's id or a code in it):

    https://app.prolific.com/submissions/complete?cc={code}
    https://yourschool.sona-systems.com/webstudy_credit.aspx?experiment_id=12&credit_token=ab&survey_code={PROLIFIC_PID}

`{{` and `}}` stand for literal braces. Placeholders may only stand in the path, query or
fragment, never in the scheme or host, and every filled value is percent-escaped, so a value
arriving with the link (PROLIFIC_PID can be anything a participant types) can never change
where the redirect goes. Pure: no streamlit, no database.
"""

from __future__ import annotations

import difflib
import ipaddress
import string
from urllib.parse import quote, urlsplit

# placeholder -> what it is filled with (also the documentation of each)
PLACEHOLDERS: dict[str, str] = {
    "PROLIFIC_PID": "the PROLIFIC_PID the participant's link carried (empty if none)",
    "STUDY_ID": "the STUDY_ID the participant's link carried (empty if none)",
    "SESSION_ID": "the SESSION_ID the participant's link carried (empty if none)",
    "participant": "the participant's pseudonym in this study (e.g. P0007)",
    "code": "the study's completion code (completion.code; empty if none)",
}
LOOPBACK_HOSTS = {"localhost"}


def placeholders(template: str) -> list[str]:
    """The placeholder names in `template`, in order; ValueError for a malformed one."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"has an unmatched brace ({exc}); write {{{{ or }}}} for a literal brace") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} may not carry a format; write {{{name}}}")
        if name not in PLACEHOLDERS:
            known = ", ".join("{" + k + "}" for k in PLACEHOLDERS)
            by_case = {k.lower(): k for k in PLACEHOLDERS}
            guess = by_case.get(name.lower()) or next(iter(difflib.get_close_matches(name, PLACEHOLDERS, n=1)), None)
            hint = f" (did you mean {{{guess}}}?)" if guess else ""
            raise ValueError(f"unknown placeholder {{{name}}}{hint}; known: {known}")
        names.append(name)
    return names


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_redirect_url(value: str) -> str:
    """The redirect template, stripped, if it is usable; ValueError saying what is wrong if not.

    https only; plain http only to this machine (localhost, 127.0.0.1, ::1), for trying a
    study out, since a participant's id would otherwise travel unencrypted.
    """
    value = value.strip()
    placeholders(value)
    # The scheme and host are checked with the placeholders emptied, and must not contain any.
    parts = urlsplit(fill(value, {}))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be a full https:// address (got {value!r})")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"must be a full https:// address (got {value!r}); plain http is only allowed to localhost")
    head = value.split("//", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0] if "//" in value else value
    if placeholders(head):
        raise ValueError(f"placeholders may only stand in the path, query or fragment, not in the host (got {value!r})")
    return value


def fill(template: str, values: dict[str, str | None]) -> str:
    """The template with every placeholder replaced by its percent-escaped value (missing: empty)."""
    out = []
    for literal, name, _spec, _conversion in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(quote(str(values.get(name) or ""), safe=""))
    return "".join(out)


def redirect_for(template: str | None, *, prolific_pid: str | None = None, prolific_study_id: str | None = None,
                 prolific_session_id: str | None = None, pseudonym: str | None = None,
                 code: str | None = None) -> str | None:
    """One participant's redirect URL (None when the study has none)."""
    if not template:
        return None
    return fill(template, {"PROLIFIC_PID": prolific_pid, "STUDY_ID": prolific_study_id,
                           "SESSION_ID": prolific_session_id, "participant": pseudonym, "code": code})
