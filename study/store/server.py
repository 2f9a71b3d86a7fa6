"""For the web server: its one engine per URL, the reads behind its clip route, and the timeout job."""

from __future__ import annotations

import threading
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from study.errors import UserError
from study.store.engine import _read, make_engine
from study.store.privacy import mark_timed_out
from study.store.tables import stimuli, studies

# ---------------------------------------------------------------------------------------------
# For the web server: its one engine per URL, the reads behind its clip route, and the timeout
# job. server.py reaches the database only through these (and the functions above).

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(url: str | None = None) -> Engine:
    """One engine per URL per process, shared by the Streamlit pages, the HTTP routes and the jobs."""
    if url is None:
        from study.config import database_url

        url = database_url()
    with _ENGINES_LOCK:
        if url not in _ENGINES:
            _ENGINES[url] = make_engine(url)
        return _ENGINES[url]


def stimulus_file(engine: Engine, study_id: str, stimulus_id: str) -> str | None:
    """The `file` column of one registered clip (relative to the study's clip folder), or None."""
    with _read(engine) as conn:
        return conn.execute(sa.select(stimuli.c.file).where(
            stimuli.c.study_id == study_id, stimuli.c.stimulus_id == stimulus_id)).scalar()


def stimulus_captions(engine: Engine, study_id: str, stimulus_id: str) -> str | None:
    """The manifest's `captions` file of one registered clip (relative to the clip folder), or None."""
    with _read(engine) as conn:
        provenance = conn.execute(sa.select(stimuli.c.provenance).where(
            stimuli.c.study_id == study_id, stimuli.c.stimulus_id == stimulus_id)).scalar()
    if isinstance(provenance, str):  # a JSON column read back as text by some drivers
        import json

        provenance = json.loads(provenance)
    captions = provenance.get("captions") if isinstance(provenance, dict) else None
    return captions if isinstance(captions, str) and captions else None


def mark_all_timed_out(engine: Engine, now: datetime | None = None) -> dict[str, int]:
    """mark_timed_out for every study that still takes answers (open or paused).

    Returns {study id: participants marked} for the studies where someone timed out. One study
    that cannot be read (e.g. its frozen file no longer parses) does not stop the others.
    """
    marked: dict[str, int] = {}
    with _read(engine) as conn:
        ids = conn.execute(sa.select(studies.c.id).where(studies.c.status.in_(("open", "paused")))
                           .order_by(studies.c.id)).scalars().all()
    for study_id in ids:
        try:
            n = mark_timed_out(engine, study_id, now)
        except UserError:
            continue
        if n:
            marked[study_id] = n
    return marked
