"""Who may do what: the researcher password and the pilot-link keys derived from it.

One lookup of the password for the server (which prints the pilot links before any page
runs) and the login page. Plain Python, no streamlit: the secrets file is read the way
Streamlit reads it, the working directory's `.streamlit/secrets.toml` over the home folder's.
"""

from __future__ import annotations

import hmac
import tomllib
from pathlib import Path

from study.config import setting


def _secrets_files() -> list[Path]:
    return [Path.home() / ".streamlit" / "secrets.toml", Path.cwd() / ".streamlit" / "secrets.toml"]


def researcher_password() -> str | None:
    """KULESHOV_RESEARCHER_PASSWORD, else `researcher_password` in .streamlit/secrets.toml, else None."""
    value = setting("KULESHOV_RESEARCHER_PASSWORD")
    if value:
        return value
    found = None
    for path in _secrets_files():
        try:
            found = tomllib.loads(path.read_text(encoding="utf-8")).get("researcher_password", found)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            # A missing file is the usual case; an unreadable one must not stop a login page.
            continue
    return str(found) if found else None


def pilot_key(study_id: str, password: str | None = None) -> str:
    """The `pilot=` value of a study's pilot link: only someone who knows the researcher password
    can make one, so a participant cannot flag themselves as a pilot (or join a paused study)."""
    secret = password if password is not None else researcher_password()
    if not secret:
        return ""
    return hmac.new(secret.encode("utf-8"), f"pilot:{study_id}".encode("utf-8"), "sha256").hexdigest()[:16]


def is_pilot_key(study_id: str, given: str | None) -> bool:
    expected = pilot_key(study_id)
    return bool(given and expected) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
