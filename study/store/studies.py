"""The audit log, registered studies and their versions, and each version's parsed context (cached)."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from study import flow
from study.errors import UserError
from study.store.engine import _is_pg, _read, _write, make_engine, upgrade
from study.store.tables import (
    STUDY_STATUSES,
    audit_log,
    participants,
    stimuli,
    studies,
    study_versions,
    utcnow,
)

# --------------------------------------------------------------------------- audit


def participant_ref(study_id: str, pseudonym: str) -> str:
    """What the audit log keeps about a participant: a hash of the pseudonym, not a raw id."""
    return hashlib.sha256(f"{study_id}:{pseudonym}".encode()).hexdigest()[:16]


def _audit(conn: Connection, actor: str, action: str, study_id: str | None = None,
           participant_ref: str | None = None, detail: dict | None = None) -> None:
    conn.execute(audit_log.insert().values(
        at=utcnow(), actor=actor, action=action, study_id=study_id,
        participant_ref=participant_ref, detail=detail,
    ))


def audit(engine: Engine, actor: str, action: str, study_id: str | None = None,
          participant_ref: str | None = None, detail: dict | None = None) -> None:
    """Record a researcher or system action (login failures, exports, status changes ...)."""
    with _write(engine) as conn:
        _audit(conn, actor, action, study_id, participant_ref, detail)


# --------------------------------------------------------------------------- studies


class StudyClosed(UserError):
    """The study is not taking new participants; the message is meant for the participant."""


@dataclass
class StudyInfo:
    id: str
    title: str
    version: str
    status: str
    spec_hash: str
    spec_yaml: str
    study: Any  # study.protocol.Study, parsed from spec_yaml
    manifest: list[dict]
    participants_enrolled: int
    created_at: datetime
    updated_at: datetime
    manifest_dir: str | None = None  # where the clip files are (studies.stimuli_dir)


def _parse_spec(spec_yaml: str, study_id: str):
    """The Study model from the frozen YAML text (no file on disk needed)."""
    import yaml

    from study.protocol import Study

    try:
        # Cross-checks ran when the file was registered; the frozen text is taken as it was.
        return Study.model_validate(yaml.safe_load(spec_yaml), context={"skip_cross_checks": True})
    except Exception as exc:  # a stored spec that no longer validates: schema changed under it
        raise UserError(
            f"The stored study file of {study_id!r} no longer passes the current schema ({exc.__class__.__name__}). "
            "Re-register it with a new version."
        ) from exc


def _stimulus_rows(stims) -> tuple[list[dict], list[dict]]:
    """(rows for the stimuli table, JSON snapshot of the manifest) from probed Stimulus models."""
    rows, snapshot = [], []
    for s in stims:
        data = s.model_dump(mode="json")
        # A manifest without captions keeps the snapshot it had before the column existed, so
        # registering an unchanged study again is not mistaken for a change.
        snapshot.append({k: v for k, v in data.items() if not (k == "captions" and v is None)
                         and not (k == "recall_keywords" and not v)})
        rows.append({
            "stimulus_id": s.id, "source": s.source, "pair_id": s.pair_id or None, "title": s.title or None,
            "file": s.file, "url": s.url, "sha256": s.sha256, "duration_s": s.duration_s,
            "width": s.width, "height": s.height, "video_codec": s.video_codec,
            "provenance": {k: data.get(k) for k in
                           ("credit", "licence", "generator", "generator_version", "prompt", "seed", "notes",
                            "captions")},
        })
    return rows, snapshot


def register_study(engine: Engine, study_path: str | Path, actor: str = "cli") -> str:
    """Store a study file (frozen text + sha256) and its probed clips; returns the study id.

    Registering the same file again changes nothing. A changed file under the same id and
    version is refused once real (non-pilot) participants of that version exist: bump `version`
    instead, so the data always say which study file they were collected under. Each version is
    kept in `study_versions`; the one registered last is the study's current version, which new
    participants get, while everyone already enrolled finishes under their own.
    """
    from study.protocol import load_study
    from study.stimuli import load_probed

    path = Path(study_path)
    spec = load_study(path)  # reports every problem of the file before anything is stored
    raw = path.read_bytes()
    spec_yaml = raw.decode("utf-8")
    stims, problems = load_probed(spec.manifest_path, hash=True)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise UserError(f"Cannot register {path}: its stimulus manifest has problems.", errors)
    rows, snapshot = _stimulus_rows(stims)
    stimuli_dir = str(spec.manifest_path.resolve().parent)
    # The hash of the file's bytes, as `study.protocol.study_hash` computes it (CRLF kept).
    spec_hash = hashlib.sha256(raw).hexdigest()
    now = utcnow()
    version = str(spec.version)
    with _write(engine) as conn:
        old = conn.execute(sa.select(studies).where(studies.c.id == spec.id)).mappings().first()
        frozen = conn.execute(sa.select(study_versions).where(
            study_versions.c.study_id == spec.id, study_versions.c.version == version)).mappings().first()
        if old is not None and old["version"] == version and frozen is not None:
            same = old["spec_hash"] == spec_hash and old["manifest"] == snapshot
            if same:
                if old["stimuli_dir"] != stimuli_dir:  # the same files, moved: follow them
                    conn.execute(studies.update().where(studies.c.id == spec.id).values(stimuli_dir=stimuli_dir))
                    conn.execute(study_versions.update().where(
                        study_versions.c.study_id == spec.id, study_versions.c.version == version)
                        .values(stimuli_dir=stimuli_dir))
                return spec.id
        changed = frozen is not None and (frozen["spec_hash"] != spec_hash or frozen["manifest"] != snapshot)
        if changed:
            # Pilots may be moved onto an edited file; real participants never are.
            real = conn.execute(sa.select(sa.func.count()).select_from(participants).where(
                participants.c.study_id == spec.id, participants.c.is_pilot.is_(False),
                participants.c.study_version == version)).scalar_one()
            if real:
                raise UserError(
                    f"Study {spec.id!r} version {spec.version} already has {real} participant(s), and the "
                    f"study file or its clips have changed since it was registered. Change `version` in "
                    f"{path} to record the change, then register again."
                )
        if old is not None:
            conn.execute(studies.update().where(studies.c.id == spec.id).values(
                title=spec.title, version=version, spec_yaml=spec_yaml, spec_hash=spec_hash,
                manifest=snapshot, stimuli_dir=stimuli_dir, updated_at=now))
            action = "study_updated"
            detail = {"old_version": old["version"], "old_hash": old["spec_hash"],
                      "version": version, "hash": spec_hash}
        else:
            conn.execute(studies.insert().values(
                id=spec.id, title=spec.title, version=version, status="open", spec_yaml=spec_yaml,
                spec_hash=spec_hash, manifest=snapshot, stimuli_dir=stimuli_dir, participants_enrolled=0,
                created_at=now, updated_at=now))
            action = "study_registered"
            detail = {"version": version, "hash": spec_hash}
        frozen_values = {"spec_yaml": spec_yaml, "spec_hash": spec_hash, "manifest": snapshot,
                         "stimuli_dir": stimuli_dir}
        if frozen is None:
            conn.execute(study_versions.insert().values(study_id=spec.id, version=version, registered_at=now,
                                                        **frozen_values))
        elif changed or frozen["stimuli_dir"] != stimuli_dir:
            conn.execute(study_versions.update().where(
                study_versions.c.study_id == spec.id, study_versions.c.version == version)
                .values(registered_at=now if changed else frozen["registered_at"], **frozen_values))
        # Clips dropped from the manifest keep their rows: earlier participants may have seen them.
        existing = set(conn.execute(sa.select(stimuli.c.stimulus_id).where(stimuli.c.study_id == spec.id)).scalars())
        for row in rows:
            if row["stimulus_id"] in existing:
                conn.execute(stimuli.update().where(
                    stimuli.c.study_id == spec.id, stimuli.c.stimulus_id == row["stimulus_id"]).values(**row))
            else:
                conn.execute(stimuli.insert().values(study_id=spec.id, **row))
        _audit(conn, actor, action, spec.id, detail=detail)
    return spec.id


def _study_row(conn: Connection, study_id: str, lock: bool = False):
    q = sa.select(studies).where(studies.c.id == study_id)
    if lock and _is_pg(conn):
        q = q.with_for_update()
    row = conn.execute(q).mappings().first()
    if row is None:
        known = list(conn.execute(sa.select(studies.c.id).order_by(studies.c.id)).scalars())
        raise UserError(f"No study with id {study_id!r} in the database"
                        + (f" (known: {', '.join(known)})." if known else " (none registered yet: run `kuleshov study register STUDY.yaml`)."))
    return row


def set_study_status(engine: Engine, study_id: str, status: str, actor: str = "cli") -> None:
    """Open, pause or close a study. Paused: only pilot links enrol; closed: nobody enrols or submits."""
    if status not in STUDY_STATUSES:
        raise UserError(f"Study status must be one of {', '.join(STUDY_STATUSES)}, not {status!r}.")
    with _write(engine) as conn:
        row = _study_row(conn, study_id, lock=True)
        if row["status"] == status:
            return
        conn.execute(studies.update().where(studies.c.id == study_id).values(status=status, updated_at=utcnow()))
        _audit(conn, actor, "study_status", study_id, detail={"from": row["status"], "to": status})


def study_status(engine: Engine, study_id: str) -> str | None:
    """open | paused | closed, or None for an unknown study id (one small read)."""
    if not isinstance(study_id, str) or len(study_id) > 64:
        return None
    with _read(engine) as conn:
        return conn.execute(sa.select(studies.c.status).where(studies.c.id == study_id)).scalar()


def list_studies(engine: Engine) -> list[dict]:
    """Every registered study with its participant counts by status (keys: id, title, version,
    status, spec_hash, created_at, updated_at, participants, by_status)."""
    with _read(engine) as conn:
        rows = conn.execute(sa.select(studies.c.id, studies.c.title, studies.c.version, studies.c.status,
                                      studies.c.spec_hash, studies.c.created_at, studies.c.updated_at)
                            .order_by(studies.c.created_at)).mappings().all()
        counts = conn.execute(sa.select(participants.c.study_id, participants.c.status, sa.func.count())
                              .group_by(participants.c.study_id, participants.c.status)).all()
    out = []
    for r in rows:
        by_status = {status: n for sid, status, n in counts if sid == r["id"]}
        out.append({**dict(r), "participants": sum(by_status.values()), "by_status": by_status})
    return out


def get_study(engine: Engine, study_id: str, version: str | None = None) -> StudyInfo:
    """The study as registered: the frozen spec parsed into protocol.Study, and its status.

    Without `version` the current (newest registered) version; with it, that version's frozen
    file and manifest (the status is always the study's current one).
    """
    with _read(engine) as conn:
        row = _study_row(conn, study_id)
        if version is not None and str(version) != row["version"]:
            frozen = conn.execute(sa.select(study_versions).where(
                study_versions.c.study_id == study_id, study_versions.c.version == str(version))).mappings().first()
            if frozen is None:
                known = [v["version"] for v in _versions(conn, study_id)]
                raise UserError(f"Study {study_id!r} has no version {version!r} (registered: {', '.join(known)}).")
            row = {**row, "version": frozen["version"], "spec_yaml": frozen["spec_yaml"],
                   "spec_hash": frozen["spec_hash"], "manifest": frozen["manifest"],
                   "stimuli_dir": frozen["stimuli_dir"], "updated_at": frozen["registered_at"]}
    return StudyInfo(
        id=row["id"], title=row["title"], version=row["version"], status=row["status"],
        spec_hash=row["spec_hash"], spec_yaml=row["spec_yaml"],
        study=_context(row).study, manifest=row["manifest"],
        participants_enrolled=row["participants_enrolled"], created_at=row["created_at"],
        updated_at=row["updated_at"], manifest_dir=row["stimuli_dir"],
    )


def _versions(conn: Connection, study_id: str) -> list[dict]:
    v = study_versions.c
    rows = conn.execute(sa.select(v.version, v.spec_yaml, v.spec_hash, v.registered_at)
                        .where(v.study_id == study_id).order_by(v.registered_at, v.version)).mappings().all()
    return [dict(r) for r in rows]


def list_versions(engine: Engine, study_id: str) -> list[dict]:
    """Every registered version of a study, oldest first: version, spec_yaml (the frozen file),
    spec_hash, registered_at, participants (enrolled under it), current (the one new
    participants get)."""
    with _read(engine) as conn:
        row = _study_row(conn, study_id)
        out = _versions(conn, study_id)
        counts = dict(conn.execute(sa.select(participants.c.study_version, sa.func.count())
                                   .where(participants.c.study_id == study_id)
                                   .group_by(participants.c.study_version)).all())
    for v in out:
        v["participants"] = counts.get(v["version"], 0)
        v["current"] = v["version"] == row["version"]
    return out


def resolve_study_id(target: str) -> str:
    """A study id from a CLI argument that may be a study file or an id."""
    path = Path(target)
    if target.endswith((".yaml", ".yml")) or path.is_file():
        from study.protocol import load_study

        return load_study(path).id
    return target


def cli_study(args) -> int:
    engine = make_engine(getattr(args, "url", None))
    try:
        if args.action == "register":
            if not args.target:
                raise UserError("Give the study file to register: kuleshov study register STUDY.yaml")
            upgrade(engine)
            study_id = register_study(engine, args.target)
            info = get_study(engine, study_id)
            print(f"registered {study_id} version {info.version} (sha256 {info.spec_hash[:12]}), status {info.status}")
        elif args.action == "list":
            rows = list_studies(engine)
            if not rows:
                print("no studies registered")
            for r in rows:
                counts = ", ".join(f"{k} {v}" for k, v in sorted(r["by_status"].items())) or "no participants"
                print(f"{r['id']}\tv{r['version']}\t{r['status']}\t{r['title']}\t({counts})")
        else:
            if not args.target:
                raise UserError(f"Give the study id: kuleshov study {args.action} STUDY_ID")
            status = {"open": "open", "pause": "paused", "close": "closed"}[args.action]
            study_id = resolve_study_id(args.target)
            set_study_status(engine, study_id, status)
            print(f"{study_id}: {status}")
    finally:
        engine.dispose()
    return 0


# --------------------------------------------------------------------------- study context (cached)


@dataclass(frozen=True)
class _Context:
    """What every participant of one registered study version shares, parsed once per process."""

    study: Any
    spec: Any  # design.DesignSpec
    clips: tuple  # design.Clip, main clips only
    practice_id: str | None
    stimuli: dict  # stimulus_id -> {source, title, file, url, duration_s, pair_id}


_CONTEXTS: dict[tuple, _Context] = {}
_STEPS: dict[tuple, tuple] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 256


def _context(row) -> _Context:
    from study.design import Clip, DesignSpec

    ctx = row.get("context")  # sessions._load found it in the cache already
    if ctx is not None:
        return ctx
    key = (row["id"], row["spec_hash"], str(row["updated_at"]))
    ctx = _CONTEXTS.get(key)
    if ctx is not None:
        return ctx
    study = _parse_spec(row["spec_yaml"], row["id"])
    practice_id = getattr(study.stimuli, "practice", None) or None
    stim = {}
    for s in row["manifest"] or []:
        stim[s["id"]] = {"stimulus_id": s["id"], "source": s["source"], "title": s.get("title") or s["id"],
                         "file": s.get("file"), "url": s.get("url"), "duration_s": s.get("duration_s"),
                         "pair_id": s.get("pair_id") or None, "titles": s.get("titles") or {},
                         "captions": s.get("captions") or None}
    clips = tuple(Clip(id=s["stimulus_id"], source=s["source"], pair_id=s["pair_id"])
                  for sid, s in stim.items() if sid != practice_id)
    d = study.design
    spec = DesignSpec(clips_per_participant=d.clips_per_participant, ordering=d.ordering, seed=d.seed,
                      pairs=d.pairs, label_conditions=tuple(d.label_conditions))
    ctx = _Context(study=study, spec=spec, clips=clips, practice_id=practice_id, stimuli=stim)
    with _CACHE_LOCK:
        if len(_CONTEXTS) >= _CACHE_MAX:
            _CONTEXTS.clear()
        _CONTEXTS[key] = ctx
    return ctx


def _steps(ctx: _Context, ctx_key: tuple, sequence: tuple[str, ...], practice_id: str | None) -> tuple:
    key = (ctx_key, sequence, practice_id)
    steps = _STEPS.get(key)
    if steps is None:
        steps = tuple(flow.build_steps(ctx.study, list(sequence), practice_id))
        with _CACHE_LOCK:
            if len(_STEPS) >= 4096:
                _STEPS.clear()
            _STEPS[key] = steps
    return steps


