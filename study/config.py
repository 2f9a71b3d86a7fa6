"""Where things live: the database URL and the data folder, from the environment."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_STUDY = ROOT / "stimuli" / "demo" / "study.yaml"


def data_dir() -> Path:
    """Folder for the default SQLite file and other local state (KULESHOV_DATA_DIR, default ./data)."""
    path = Path(os.environ.get("KULESHOV_DATA_DIR", "data")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """KULESHOV_DATABASE_URL if set (e.g. postgresql+psycopg://...), else a SQLite file in data_dir()."""
    url = os.environ.get("KULESHOV_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{data_dir() / 'kuleshov.db'}"


def check_writable(path: str | Path, what: str = "output") -> Path:
    """Fail early, before minutes of work, when `path` (a file or folder to write) cannot be written.

    Tries a scratch file in the nearest folder that exists, so nothing is left behind when the
    command fails later; missing folders below it are created when the output is written.
    """
    import tempfile

    from study.errors import UserError

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
    """KULESHOV_TRUSTED_PROXIES: comma-separated addresses or CIDR ranges of the reverse proxies
    (nginx) whose X-Forwarded-For header is believed; default none. From anyone else the header
    is ignored, so it cannot give a guesser a fresh per-address budget of login attempts."""
    import ipaddress

    from study.errors import UserError

    raw = os.environ.get("KULESHOV_TRUSTED_PROXIES", "")
    proxies = [item.strip() for item in raw.split(",") if item.strip()]
    for item in proxies:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise UserError(f"KULESHOV_TRUSTED_PROXIES: {item!r} is not an IP address or CIDR range "
                            "(e.g. 127.0.0.1 or 10.0.0.0/8)") from None
    return proxies


def app_processes() -> int:
    """KULESHOV_APP_PROCESSES: how many app processes share the database (default 1); each
    checks at start-up that all of them together stay within PostgreSQL's max_connections."""
    from study.errors import UserError

    raw = os.environ.get("KULESHOV_APP_PROCESSES", "1").strip()
    if not raw.isdigit() or int(raw) < 1:
        raise UserError(f"KULESHOV_APP_PROCESSES must be a whole number from 1, not {raw!r}")
    return int(raw)
