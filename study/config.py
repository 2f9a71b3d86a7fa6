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
