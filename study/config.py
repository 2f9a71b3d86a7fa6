"""Environment settings, each declared once with its default and help (like datasette's `Setting`).

Every read of a KULESHOV_* variable goes through `setting(name)`, which refuses a value outside
a setting's choices or of the wrong type with a sentence naming the variable. docs/settings.md
is generated from `SETTINGS` (`python -m study.config docs/settings.md`) and a test checks it
is up to date.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from study.errors import UserError


@dataclass(frozen=True)
class Setting:
    name: str
    default: str  # as it would be written in the environment; "" means unset
    help: str
    choices: tuple[str, ...] = ()
    kind: type = str  # str, int or float
    scope: str = "app"  # app: read by the app and the CLI; tests: read by the test suite only


SETTINGS: tuple[Setting, ...] = (
    Setting("KULESHOV_DATABASE_URL", "",
            "Database URL, e.g. postgresql+psycopg://user@host/db. Unset: a SQLite file kuleshov.db in "
            "KULESHOV_DATA_DIR."),
    Setting("KULESHOV_DATA_DIR", "data",
            "Folder for the default SQLite file (relative paths are taken from the working directory)."),
    Setting("KULESHOV_MODE", "demo",
            "demo: `kuleshov run` without a researcher password generates one and prints it. production: "
            "`kuleshov run` refuses to start without one.", choices=("demo", "production")),
    Setting("KULESHOV_RESEARCHER_PASSWORD", "",
            "The researcher login password. Unset: `researcher_password` in .streamlit/secrets.toml (in "
            "the working directory or the home folder)."),
    Setting("KULESHOV_LOG_LEVEL", "warning", "uvicorn's log level for `kuleshov run`.",
            choices=("critical", "error", "warning", "info", "debug", "trace")),
    Setting("KULESHOV_TIMEOUT_CHECK_S", "60",
            "Seconds between two runs of the server's job that marks inactive participants timed_out "
            "(after each study's timeout_minutes). 0 turns the job off.", kind=float),
    Setting("KULESHOV_TRUSTED_PROXIES", "",
            "Comma-separated addresses or CIDR ranges of the reverse proxies (nginx) whose X-Forwarded-For "
            "header is believed; from anyone else it is ignored, so a forged header buys no fresh budget of "
            "login attempts. Unset: none."),
    Setting("KULESHOV_APP_PROCESSES", "1",
            "How many app processes share the database; each checks at start-up that processes x its pool "
            "(10 connections) stay within PostgreSQL's max_connections.", kind=int),
    Setting("KULESHOV_CLOCK_OFFSET_HOURS", "0",
            "Moves the follow-up clock (study/followup.py `now`) forward by this many hours, so a follow-up "
            "can be tried without waiting for its delay (demos, `kuleshov simulate`). Refused in production "
            "mode.", kind=float),
    Setting("KULESHOV_CLOCK_FILE", "",
            "A file holding a number of hours, re-read at every use and added to the follow-up clock: lets a "
            "test move a running server's clock forward. Refused in production mode.", scope="tests"),
    Setting("KULESHOV_MAX_CLIP_MB", "200",
            "Largest clip (or caption file) the study builder accepts in one upload, in MB; a bigger one is "
            "refused while it arrives, and nothing of it is kept.", kind=float),
    Setting("KULESHOV_MAX_STUDY_ZIP_MB", "1000",
            "Largest study-folder zip the study builder opens, in MB, both as uploaded and unpacked.", kind=float),
    Setting("KULESHOV_FIT_THREADS", "0",
            "Threads for a mixed-model fit (the Satterthwaite Hessian's points, and BLAS during the "
            "optimisation of a dense clip block): 0, one per core (at most 4) when the clip block has 1,000 "
            "columns or more and one otherwise; N, N for every fit (1: one thread throughout).", kind=int),
    Setting("KULESHOV_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test",
            "PostgreSQL server for the test suite; each test creates and drops its own database there.",
            scope="tests"),
    Setting("KULESHOV_REQUIRE_POSTGRES", "0",
            "1: the PostgreSQL tests fail instead of skipping when no server answers (CI sets it).",
            choices=("0", "1"), scope="tests"),
    Setting("KULESHOV_REQUIRE_BROWSER", "0",
            "1: the browser tests fail instead of skipping when /usr/bin/chromium is missing (CI sets it).",
            choices=("0", "1"), scope="tests"),
    Setting("KULESHOV_FONT", "",
            "TrueType font for the captions of the demo clips (stimuli/make_demo_clips.py); unset: the "
            "first of a few common fonts found.", scope="tests"),
)
BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str):
    """The value of one declared setting: from the environment, else its default (typed by `kind`)."""
    decl = BY_NAME[name]  # a KeyError here is a programming error: declare the setting above
    raw = os.environ.get(name, "")
    value = raw if raw.strip() else decl.default
    if decl.choices or decl.kind is not str:
        value = value.strip().lower()
    if decl.choices:
        if value not in decl.choices:
            raise UserError(f"{name}={raw!r} is not a known value; use one of: {', '.join(decl.choices)} "
                            f"(default {decl.default})")
    if decl.kind is not str:
        try:
            number = decl.kind(value)
        except ValueError:
            what = "a whole number" if decl.kind is int else "a number"
            raise UserError(f"{name}={raw!r} must be {what} (default {decl.default})") from None
        if number < 0:
            raise UserError(f"{name}={raw!r} must be 0 or more")
        return number
    return value


def settings_markdown() -> str:
    """The table of docs/settings.md."""
    lines = ["| variable | default | read by | meaning |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "unset"
        meaning = s.help + (f" One of: {', '.join(s.choices)}." if s.choices else "")
        who = "the app and the CLI" if s.scope == "app" else "the tests and tools"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in (f"`{s.name}`", default, who, meaning)) + " |")
    return "\n".join(lines) + "\n"


DOC_START, DOC_END = "<!-- settings:start -->", "<!-- settings:end -->"


def replace_between_markers(path: str | Path, start: str, end: str, body: str) -> bool:
    """Write `body` between the `start` and `end` markers of a generated doc; True if it changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    new = f"{head}{start}\n{body}{end}{tail}"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def update_settings_doc(path: str | Path) -> bool:
    """Regenerate the table between the markers of docs/settings.md; True if it changed."""
    return replace_between_markers(path, DOC_START, DOC_END, settings_markdown())


def production() -> bool:
    return setting("KULESHOV_MODE") == "production"


def data_dir() -> Path:
    """Folder for the default SQLite file and other local state (KULESHOV_DATA_DIR)."""
    path = Path(setting("KULESHOV_DATA_DIR")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """KULESHOV_DATABASE_URL if set (e.g. postgresql+psycopg://...), else a SQLite file in data_dir()."""
    return setting("KULESHOV_DATABASE_URL") or f"sqlite:///{data_dir() / 'kuleshov.db'}"


def check_writable(path: str | Path, what: str = "output") -> Path:
    """Fail early, before minutes of work, when `path` (a file or folder to write) cannot be written.

    Tries a scratch file in the nearest folder that exists, so nothing is left behind when the
    command fails later; missing folders below it are created when the output is written.
    """
    import tempfile

    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(20, "a file is in the way", str(folder))
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"cannot write the {what} to {path}: {exc.strerror or exc} "
                        f"(in {folder}); choose another --out") from None
    return path


def trusted_proxies() -> list[str]:
    """KULESHOV_TRUSTED_PROXIES as a list, each checked to be an address or CIDR range."""
    import ipaddress

    proxies = [item.strip() for item in setting("KULESHOV_TRUSTED_PROXIES").split(",") if item.strip()]
    for item in proxies:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise UserError(f"KULESHOV_TRUSTED_PROXIES: {item!r} is not an IP address or CIDR range "
                            "(e.g. 127.0.0.1 or 10.0.0.0/8)") from None
    return proxies


def app_processes() -> int:
    """KULESHOV_APP_PROCESSES, at least 1."""
    n = setting("KULESHOV_APP_PROCESSES")
    if n < 1:
        raise UserError(f"KULESHOV_APP_PROCESSES must be a whole number from 1, not {n}")
    return n


if __name__ == "__main__":  # python -m study.config docs/settings.md
    import sys

    changed = update_settings_doc(sys.argv[1] if len(sys.argv) > 1 else "docs/settings.md")
    print("updated" if changed else "already up to date")
