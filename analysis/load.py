"""The one place analysis reads data: database, exported dataset folder or trial-table CSV.

Database reads are read-only SELECTs on study.store's tables. Responses are fetched in batches
of participants (`iter_batches`), so the export can stream a study of millions of answers and
the dashboard can load a small one at once with the same code. Repeated strings (pseudonym,
clip, source ...) are not joined in SQL but mapped in pandas from the small tables: fetching
them per answer row costs more than the join saves.

Only pseudonyms leave this module, with one deliberate exception: `load_payments` selects the
Prolific ids for the export's payments file and the dashboard's payment table. URL tokens are
never selected. The export writes through analysis.export and reads its folders back here
(`read_csv_typed`), so the two modules do not import each other.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from analysis.formatting import plural, unneutralise
from study import device_check as _device_check
from study import store
from study.errors import Problem, UserError
from study.playback import PLAYBACK_METRICS

LONG_COLUMNS = ["participant_id", "stimulus_id", "source", "pair_id", "label_condition", "position", "step",
                "instrument_id", "item_id", "value", "value_text", "untouched", "shown_position",
                "response_time_ms", "watched_share", "is_pilot", "status"]
PARTICIPANT_COLUMNS = ["participant_id", "pseudonym", "status", "label_condition", "list_index", "study_version",
                       "language", "is_pilot",
                       "started_at", "completed_at", "duration_s", "step_key", "n_planned", "n_completed",
                       "failed_attention", "excluded_reason",
                       *(column for column, *_ in _device_check.EXPORT_COLUMNS)]
TRIAL_META_COLUMNS = ["participant_id", "stimulus_id", "source", "pair_id", "label_condition", "position",
                      "watched_share", "is_pilot"]
# Trial-level file of the export (what happened when the clip was shown, no answers).
TRIAL_COLUMNS = ["participant_id", "stimulus_id", "source", "pair_id", "label_condition", "position", "is_pilot",
                 "started_at", "submitted_at", "watched_share", "max_time", "play_count", "item_order",
                 *(c for c in PLAYBACK_METRICS if c != "play_count")]
# How each clip was seen and heard (study/playback.py), as the exclusion rules read them.
PLAYBACK_METRIC_COLUMNS = list(PLAYBACK_METRICS)
PLAYBACK_COLUMNS = ["participant_id", "position", "stimulus_id", "seq", "event", "media_time", "client_time",
                    "server_time", "detail"]
SAMPLE_COLUMNS = ["participant_id", "position", "stimulus_id", "seq", "media_time", "value", "client_time"]
STIMULUS_COLUMNS = ["stimulus_id", "source", "pair_id", "title", "file", "url", "sha256", "duration_s", "width",
                    "height", "video_codec", "credit", "licence", "generator", "generator_version", "prompt",
                    "seed", "notes", "captions"]
EXCLUDED_COLUMNS = ["level", "participant_id", "stimulus_id", "position", "reason"]
PAYMENT_COLUMNS = ["participant_id", "prolific_pid", "prolific_study_id", "prolific_session_id", "status",
                   "completed_at", "is_pilot"]
REQUIRED_TRIAL_COLUMNS = ("participant_id", "stimulus_id", "source")
SOURCES = ("human", "ai")
BATCH_PARTICIPANTS = 250


@dataclass
class LoadedData:
    """Everything an analysis needs: the scored trial table after exclusions and what was left out."""

    trials: pd.DataFrame  # one row per participant x clip, exclusions applied
    participants: pd.DataFrame | None
    long: pd.DataFrame | None
    study: Any  # study.protocol.Study or None (plain CSV)
    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EXCLUDED_COLUMNS))
    codebook: pd.DataFrame | None = None
    pilot_known: bool = True  # False when the data carry no is_pilot flag at all
    notes: list[str] = field(default_factory=list)  # what loading left out, for the user to read


# --------------------------------------------------------------------------- small helpers


def _frame(conn, stmt, columns: list[str] | None = None) -> pd.DataFrame:
    result = conn.execute(stmt)
    names = columns or list(result.keys())
    rows = result.fetchall()
    # Column by column: handing Row objects to DataFrame() probes each one for attributes, 10x slower.
    data = list(zip(*rows)) if rows else [()] * len(names)
    return pd.DataFrame({name: pd.Series(col, dtype=object) if len(col) else pd.Series([], dtype=object)
                         for name, col in zip(names, data)})


def _raw_frame(conn, stmt) -> pd.DataFrame:
    """Like _frame for the big tables, without SQLAlchemy's per-value result processing.

    The statement is rendered with its (integer) parameters inline and run as driver SQL, so
    values arrive as the driver gives them: on SQLite booleans as 0/1, datetimes and JSON as
    text; the callers convert whole columns at once, which is several times faster.
    """
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    names = [c.name for c in stmt.selected_columns]
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    if not rows:
        return pd.DataFrame({name: pd.Series([], dtype=object) for name in names})
    return pd.DataFrame.from_records(rows, columns=names, coerce_float=False)


def _json_text(values) -> list:
    return [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values]


def _utc(s: pd.Series) -> pd.Series:
    # SQLite hands back naive datetimes or text (stored as UTC), PostgreSQL aware ones.
    if len(s) and isinstance(s.dropna().iloc[0] if s.notna().any() else None, str):
        return pd.to_datetime(s, utc=True, format="ISO8601")
    return pd.to_datetime(s, utc=True)


def _study_exists(conn, study_id: str) -> None:
    store._study_row(conn, study_id)  # raises UserError naming the known studies


def _int(s: pd.Series) -> pd.Series:
    return pd.array(s, dtype="Int64") if len(s) else pd.Series([], dtype="Int64")


# --------------------------------------------------------------------------- database: small tables


def _participant_rows(conn, study_id: str) -> pd.DataFrame:
    """Participants with the internal row id (`pid`), which never leaves this module."""
    p, pt, t = store.participants.c, store.planned_trials.c, store.trials.c
    planned = (sa.select(pt.participant_id, sa.func.count().label("n_planned"))
               .where(pt.kind == "main").group_by(pt.participant_id).subquery())
    done = (sa.select(t.participant_id, sa.func.count().label("n_completed"))
            .where(t.position >= 1, t.submitted_at.is_not(None)).group_by(t.participant_id).subquery())
    stmt = (sa.select(p.id.label("pid"), p.pseudonym, p.status, p.label_condition, p.list_index, p.study_version,
                      p.language, p.is_pilot,
                      p.started_at, p.completed_at, p.step_key, planned.c.n_planned, done.c.n_completed,
                      p.attention_failed.label("failed_attention"), p.excluded_reason, p.device_info)
            .select_from(store.participants.outerjoin(planned, planned.c.participant_id == p.id)
                         .outerjoin(done, done.c.participant_id == p.id))
            .where(p.study_id == study_id).order_by(p.participant_number))
    df = _frame(conn, stmt)
    df["started_at"] = _utc(df["started_at"])
    df["completed_at"] = _utc(df["completed_at"])
    df["duration_s"] = (df["completed_at"] - df["started_at"]).dt.total_seconds()
    for c in ("n_planned", "n_completed", "failed_attention", "list_index"):
        df[c] = df[c].fillna(0).astype("int64")
    df["is_pilot"] = df["is_pilot"].astype(bool)
    df.insert(1, "participant_id", df["pseudonym"])
    _device_columns(df)
    return df


_DTYPES = {"boolean": "boolean", "integer": "Int64", "count": "Int64", "number": "float64"}


def _device_columns(df: pd.DataFrame) -> None:
    """participants.device_info flattened into the device_* columns (study.device_check.EXPORT_COLUMNS)."""
    values = [_device_check.export_values(info) for info in df.pop("device_info")] if "device_info" in df else []
    for column, _key, kind, _ in _device_check.EXPORT_COLUMNS:
        col = pd.Series([v[column] for v in values], index=df.index, dtype="object")
        df[column] = col.astype(_DTYPES[kind]) if kind in _DTYPES else col


def load_participants(engine: Engine, study_id: str) -> pd.DataFrame:
    """One row per participant: PARTICIPANT_COLUMNS (participant_id and pseudonym are the same value)."""
    with engine.connect() as conn:
        _study_exists(conn, study_id)
        df = _participant_rows(conn, study_id)
    return df[PARTICIPANT_COLUMNS].reset_index(drop=True)


def load_stimuli(engine: Engine, study_id: str) -> pd.DataFrame:
    """The study's clips with sha256 and provenance (one column per provenance field)."""
    s = store.stimuli.c
    with engine.connect() as conn:
        _study_exists(conn, study_id)
        df = _frame(conn, sa.select(s.stimulus_id, s.source, s.pair_id, s.title, s.file, s.url, s.sha256,
                                    s.duration_s, s.width, s.height, s.video_codec, s.provenance)
                    .where(s.study_id == study_id).order_by(s.stimulus_id))
    prov = [p if isinstance(p, dict) else (json.loads(p) if isinstance(p, str) else {}) for p in df.pop("provenance")]
    for key in ("credit", "licence", "generator", "generator_version", "prompt", "seed", "notes", "captions"):
        df[key] = [None if (v := d.get(key)) in (None, "") else str(v) for d in prov]
    for c in ("width", "height"):
        df[c] = _int(df[c])
    df["duration_s"] = df["duration_s"].astype("float64")
    return df[STIMULUS_COLUMNS]


def _stimulus_map(conn, study_id: str) -> pd.DataFrame:
    s = store.stimuli.c
    return _frame(conn, sa.select(s.stimulus_id, s.source, s.pair_id).where(s.study_id == study_id)).set_index(
        "stimulus_id")


def iter_events(engine: Engine, study_id: str, table, columns: list[str], include_pilot: bool = True,
                batch_size: int = 500) -> Iterator[pd.DataFrame]:
    """Rows of playback_events or continuous_samples, participant batch by participant batch."""
    c = table.c
    with engine.connect() as conn:
        _study_exists(conn, study_id)
        people = _participant_rows(conn, study_id)
    if not include_pilot:
        people = people[~people["is_pilot"]]
    pseudonym = people.set_index("pid")["pseudonym"]
    ids = people["pid"].tolist()
    wanted = [c[name] for name in columns if name != "participant_id"]
    for i in range(0, len(ids), batch_size):
        with engine.connect() as conn:
            df = _raw_frame(conn, sa.select(c.participant_id.label("pid"), *wanted)
                        .where(c.participant_id.in_(ids[i:i + batch_size]))
                        .order_by(c.participant_id, c.position, c.seq))
        df.insert(0, "participant_id", df.pop("pid").map(pseudonym).astype("str"))
        for name in ("position", "seq"):
            df[name] = _int(df[name])
        if "server_time" in df:
            df["server_time"] = _utc(df["server_time"])
        if "detail" in df:
            df["detail"] = pd.Series(_json_text(df["detail"]), index=df.index, dtype="str")
        yield df[columns]


def load_payments(engine: Engine, study_id: str, include_pilot: bool) -> pd.DataFrame:
    """PAYMENT_COLUMNS: pseudonym with the Prolific ids, status and completion time (UTC).

    The only read of identifiers in the project: for approving payments, never for analysis."""
    c = store.participants.c
    with engine.connect() as conn:
        _study_exists(conn, study_id)
        df = _frame(conn, sa.select(c.pseudonym, c.prolific_pid, c.prolific_study_id, c.prolific_session_id,
                                    c.status, c.completed_at, c.is_pilot)
                    .where(c.study_id == study_id).order_by(c.participant_number), PAYMENT_COLUMNS)
    df["is_pilot"] = df["is_pilot"].astype(bool)
    if not include_pilot:
        df = df[~df["is_pilot"]]
    df["completed_at"] = _utc(df["completed_at"])
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------- database: answers, in batches


@dataclass
class Batch:
    """The answers (long) and shown clips (trials) of a batch of participants."""

    long: pd.DataFrame  # LONG_COLUMNS
    trials: pd.DataFrame  # TRIAL_COLUMNS, main clips only


def iter_batches(engine: Engine, study_id: str, include_pilot: bool = False,
                 batch_size: int = BATCH_PARTICIPANTS) -> Iterator[Batch]:
    """Long answers and trial rows, participant by participant, in enrolment order.

    Each batch holds whole participants, so per-participant work (scores, exclusions) can be
    done batch by batch without seeing the rest.
    """
    r, t = store.responses.c, store.trials.c
    with engine.connect() as conn:
        _study_exists(conn, study_id)
        people = _participant_rows(conn, study_id)
        stim = _stimulus_map(conn, study_id)
    if not include_pilot:
        people = people[~people["is_pilot"]]
    people = people.set_index("pid")
    ids = people.index.tolist()
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        with engine.connect() as conn:
            resp = _raw_frame(conn, sa.select(r.participant_id, r.trial_id, r.step_key, r.instrument_id, r.item_id,
                                          r.value_num, r.value_text, r.untouched, r.shown_position,
                                          r.response_time_ms)
                          .where(r.participant_id.in_(chunk)).order_by(r.participant_id, r.id))
            tri = _raw_frame(conn, sa.select(t.id, t.participant_id, t.position, t.stimulus_id, t.started_at,
                                         t.submitted_at, t.watched_share, t.max_time, t.item_order,
                                         *(t[name] for name in PLAYBACK_METRICS))
                         .where(t.participant_id.in_(chunk)).order_by(t.participant_id, t.position))
        yield Batch(long=_long_frame(resp, tri, people, stim), trials=_trial_frame(tri, people, stim))


def _long_frame(resp: pd.DataFrame, tri: pd.DataFrame, people: pd.DataFrame, stim: pd.DataFrame) -> pd.DataFrame:
    pid = resp["participant_id"]
    tri_ix = tri.set_index("id")
    stimulus = resp["trial_id"].map(tri_ix["stimulus_id"])
    out = pd.DataFrame({
        "participant_id": pid.map(people["pseudonym"]).astype("str"),
        "stimulus_id": stimulus.astype("str"),
        "source": stimulus.map(stim["source"]).astype("str"),
        "pair_id": stimulus.map(stim["pair_id"]).astype("str"),
        "label_condition": pid.map(people["label_condition"]).astype("str"),
        "position": _int(resp["trial_id"].map(tri_ix["position"])),
        "step": resp["step_key"].astype("str"),
        "instrument_id": resp["instrument_id"].astype("str"),
        "item_id": resp["item_id"].astype("str"),
        "value": resp["value_num"].astype("float64"),
        "value_text": resp["value_text"].astype("str"),
        "untouched": resp["untouched"].astype(bool),
        "shown_position": _int(resp["shown_position"]),
        "response_time_ms": _int(resp["response_time_ms"]),
        "watched_share": resp["trial_id"].map(tri_ix["watched_share"]).astype("float64"),
        "is_pilot": pid.map(people["is_pilot"]).astype(bool),
        "status": pid.map(people["status"]).astype("str"),
    })
    return out


def _trial_frame(tri: pd.DataFrame, people: pd.DataFrame, stim: pd.DataFrame) -> pd.DataFrame:
    tri = tri[tri["position"] >= 1]
    pid, stimulus = tri["participant_id"], tri["stimulus_id"]
    return pd.DataFrame({
        "participant_id": pid.map(people["pseudonym"]).astype("str"),
        "stimulus_id": stimulus.astype("str"),
        "source": stimulus.map(stim["source"]).astype("str"),
        "pair_id": stimulus.map(stim["pair_id"]).astype("str"),
        "label_condition": pid.map(people["label_condition"]).astype("str"),
        "position": _int(tri["position"]),
        "is_pilot": pid.map(people["is_pilot"]).astype(bool),
        "started_at": _utc(tri["started_at"]),
        "submitted_at": _utc(tri["submitted_at"]),
        "watched_share": tri["watched_share"].astype("float64"),
        "max_time": tri["max_time"].astype("float64"),
        "item_order": _json_text(tri["item_order"]),
        **_playback_frame(tri),
    })[TRIAL_COLUMNS].reset_index(drop=True)


def _playback_frame(tri: pd.DataFrame) -> dict[str, pd.Series]:
    out = {}
    for name in PLAYBACK_METRICS:
        col = tri[name]
        if name in ("play_count", "load_ms"):
            out[name] = _int(col)
        elif name in ("replayed", "skipped"):
            out[name] = col.map(lambda v: None if v is None or pd.isna(v) else bool(v)).astype("boolean")
        else:
            out[name] = col.astype("float64")
    return out


def with_playback(table: pd.DataFrame, trials: pd.DataFrame | None) -> pd.DataFrame:
    """The trial table with the playback columns (PLAYBACK_METRIC_COLUMNS) of the trials file
    beside each row (matched on participant and position), for the exclusion rules. Columns it
    already has are kept; without a trials file the table comes back unchanged."""
    if trials is None or not len(table):
        return table
    add = [c for c in PLAYBACK_METRIC_COLUMNS if c in trials.columns and c not in table.columns]
    if not add or "position" not in table.columns or "position" not in trials.columns:
        return table
    keys = ["participant_id", "position"]
    right = trials[keys + add].drop_duplicates(keys)
    right = right.assign(participant_id=right["participant_id"].astype("str"),
                         position=pd.to_numeric(right["position"], errors="coerce").astype("Int64"))
    left = table.assign(_pid=table["participant_id"].astype("str"),
                        _pos=pd.to_numeric(table["position"], errors="coerce").astype("Int64"))
    merged = left.merge(right.rename(columns={"participant_id": "_pid", "position": "_pos"}),
                        on=["_pid", "_pos"], how="left")
    merged.index = table.index
    return merged.drop(columns=["_pid", "_pos"])


def load_long(engine: Engine, study_id: str, include_pilot: bool = False) -> pd.DataFrame:
    """One row per recorded answer (LONG_COLUMNS); participant_id is the pseudonym."""
    parts = [b.long for b in iter_batches(engine, study_id, include_pilot)]
    if not parts:
        return _empty_long()
    return pd.concat(parts, ignore_index=True)


def _empty_long() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c in ("value", "watched_share") else "str")
                         for c in LONG_COLUMNS})


# --------------------------------------------------------------------------- the trial table


def item_kinds(study: Any, codebook: pd.DataFrame | None = None) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """(numeric per-clip item ids, text per-clip item ids, scales name -> item ids) of a study."""
    from analysis import scoring
    from study import instruments

    cb = instruments.codebook(study) if codebook is None else codebook
    items = instruments.items_for(study, "per_clip")
    numeric = [i.id for i in items if i.is_numeric]
    text = [i.id for i in items if not i.is_numeric]
    scales = {name: list(members) for name, members in scoring.default_scales(cb).items()
              if set(members) <= set(numeric)}
    return numeric, text, scales


def trial_columns(study: Any, codebook: pd.DataFrame | None = None) -> list[str]:
    """Columns of the scored trial table (the export's scores file) for a study, in order."""
    numeric, text, scales = item_kinds(study, codebook)
    return [*TRIAL_META_COLUMNS, *numeric, *text, *scales]


def trial_table(long: pd.DataFrame, study: Any, codebook: pd.DataFrame | None = None) -> pd.DataFrame:
    """Participant x clip rows of the main trials: TRIAL_META_COLUMNS, one column per per-clip
    item (raw answers), then scale scores (analysis.scoring.score_items).

    Practice and session-level answers stay in the long table.
    """
    from analysis import scoring
    from study import instruments

    cb = instruments.codebook(study) if codebook is None else codebook
    columns = trial_columns(study, cb)
    main = long[long["step"].str.startswith("trial:", na=False)]
    if main.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    table = scoring.score_items(main, cb)
    for c in columns:
        if c not in table.columns:
            table[c] = np.nan
    table["position"] = _int(table["position"])
    table["is_pilot"] = table["is_pilot"].astype(bool)
    return table[columns + [c for c in table.columns if c not in columns]]


# --------------------------------------------------------------------------- exclusions


def exclusions(trials: pd.DataFrame, participants: pd.DataFrame | None, study: Any,
               include_pilot: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept trials, excluded rows with reasons) under the study file's rules (analysis.scoring).

    Besides the study's rules, participants who withdrew are always left out: the consent text
    promises that their answers will then not be used.
    """
    from analysis import scoring

    rules = getattr(study, "exclusions", None)
    if rules is not None and include_pilot:
        rules = rules.model_copy(update={"exclude_pilot": False})
    withdrawn = pd.DataFrame(columns=EXCLUDED_COLUMNS)
    if participants is not None and "status" in participants.columns:
        # Declining at consent, or failing the device check before it, leaves no data to exclude;
        # listing them would inflate the count.
        participants = participants[~participants["status"].isin(["declined", "ineligible_device"])]
        gone = participants.loc[participants["status"] == "withdrawn", "participant_id"]
        withdrawn = pd.DataFrame({"level": "participant", "participant_id": gone.to_numpy(),
                                  "stimulus_id": None, "position": pd.NA,
                                  "reason": "withdrew from the study"})
        trials = trials[~trials["participant_id"].isin(set(gone))]
        participants = participants[participants["status"] != "withdrawn"]
    kept, excluded = scoring.apply_exclusions(trials, participants, rules)
    if len(excluded) and "position" in trials.columns:
        pos = trials.set_index(["participant_id", "stimulus_id"])["position"]
        keys = pd.MultiIndex.from_frame(excluded[["participant_id", "stimulus_id"]])
        excluded["position"] = pos.reindex(keys).to_numpy()
    parts = [f for f in (withdrawn, excluded.reindex(columns=EXCLUDED_COLUMNS)) if len(f)]
    excluded = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EXCLUDED_COLUMNS)
    return kept.reset_index(drop=True), excluded


# --------------------------------------------------------------------------- load_trials


def _study_from_yaml(text: str, where: str):
    return store._parse_spec(text, where)


def _engine_for(url: str | None) -> Engine:
    if url is None:
        from study.config import database_url

        url = database_url()
    engine = store.make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.select(store.studies.c.id).limit(1))
    except sa.exc.OperationalError as exc:
        raise UserError(f"Cannot read the Kuleshov database at {engine.url.render_as_string(hide_password=True)}",
                        [Problem("database", str(exc.orig).strip() if exc.orig else str(exc))]) from None
    except sa.exc.ProgrammingError:
        raise UserError(f"{engine.url.render_as_string(hide_password=True)} has no Kuleshov tables; "
                        "run `kuleshov db upgrade` and register a study first") from None
    return engine


def _only_study(engine: Engine) -> str:
    ids = [r["id"] for r in store.list_studies(engine)]
    if len(ids) == 1:
        return ids[0]
    raise UserError("Say which study to load: " + (f"the database holds {', '.join(ids)}." if ids
                                                   else "the database holds no study yet."))


def load_from_db(engine: Engine, study_id: str, include_pilot: bool = False,
                 version: str | None = None) -> LoadedData:
    """With `version`, only the participants who took part under that version of the study
    file, scored by that version's instruments; without it everyone, by the newest version."""
    from study.instruments import codebook

    info = store.get_study(engine, study_id, version=version)
    participants = load_participants(engine, study_id)
    batches = list(iter_batches(engine, study_id, include_pilot=True))
    longs = [b.long for b in batches]
    shown = [b.trials for b in batches]
    long = pd.concat(longs, ignore_index=True) if longs else _empty_long()
    if version is not None:
        participants = participants[participants["study_version"] == str(version)].reset_index(drop=True)
        long = long[long["participant_id"].isin(participants["participant_id"])].reset_index(drop=True)
    cb = codebook(info.study)
    table = with_playback(trial_table(long, info.study, cb), pd.concat(shown, ignore_index=True) if shown else None)
    kept, excluded = exclusions(table, participants, info.study, include_pilot=include_pilot)
    if not include_pilot:
        long = long[~long["is_pilot"]].reset_index(drop=True)
    return LoadedData(trials=kept, participants=participants, long=long, study=info.study, excluded=excluded,
                      codebook=cb)


def _read_table(folder: Path, name: str, required: bool = True) -> pd.DataFrame | None:
    """<name>.parquet if present (types kept), else <name>.csv read with the datapackage schema."""
    pq = folder / f"{name}.parquet"
    csv = folder / f"{name}.csv"
    if pq.is_file():
        import pyarrow as pa
        import pyarrow.parquet as pq_io

        # Integer columns with gaps (e.g. position of session items) stay integers, not floats.
        return pq_io.read_table(pq).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    if csv.is_file():
        return read_csv_typed(folder, name)
    if required:
        problems = [Problem(str(folder), "expected the files written by `kuleshov export` "
                            "(scores, participants, responses, study.yaml ...)")]
        # A study's own folder (study file, manifest, clips) is an easy mix-up with a dataset folder.
        studies = sorted(p.name for p in folder.glob("*.y*ml") if p.suffix.lower() in (".yaml", ".yml"))
        if studies and not (folder / "datapackage.json").exists():
            problems.append(Problem(str(folder), "this looks like a study folder; to analyse its data in the "
                                    f"database, give the study file (e.g. {folder / studies[0]}) or the study id"))
        raise UserError(f"{folder} is not a Kuleshov dataset folder: {name}.parquet or {name}.csv is missing",
                        problems)
    return None


def read_csv_typed(folder: str | Path, name: str) -> pd.DataFrame:
    """A CSV of a dataset folder read with the types declared in its datapackage.json; text
    cells neutralised against spreadsheet formulas on export get their stored value back."""
    folder = Path(folder)
    package = json.loads((folder / "datapackage.json").read_text(encoding="utf-8"))
    resource = next((r for r in package["resources"] if r["path"] == f"{name}.csv"), None)
    if resource is None:
        raise UserError(f"{folder / 'datapackage.json'} does not describe {name}.csv")
    fields = resource["schema"]["fields"]
    dtypes = {"string": "str", "integer": "Int64", "number": "float64", "boolean": "str", "datetime": "str"}
    df = pd.read_csv(folder / f"{name}.csv", dtype={f["name"]: dtypes[f["type"]] for f in fields},
                     keep_default_na=False, na_values=[""])
    for f in fields:
        if f["type"] == "boolean":
            df[f["name"]] = df[f["name"]].map({"true": True, "True": True, "false": False, "False": False}).astype("boolean")
        elif f["type"] == "datetime":
            df[f["name"]] = pd.to_datetime(df[f["name"]], utc=True, format="ISO8601")
        elif f["type"] == "string":
            df[f["name"]] = df[f["name"]].map(unneutralise, na_action="ignore")
    return df


def load_folder(folder: Path, include_pilot: bool = False) -> LoadedData:
    if not folder.is_dir():
        raise UserError(f"{folder}: no such dataset folder")
    scores = _read_table(folder, "scores")  # first: a folder that is no dataset says so
    scores = check_trial_table(scores, folder / "scores.csv")
    study = None
    spec = folder / "study.yaml"
    if spec.is_file():
        study = _study_from_yaml(spec.read_text(encoding="utf-8"), str(spec))
    participants = _read_table(folder, "participants", required=False)
    long = _read_table(folder, "responses", required=False)
    codebook_path = folder / "codebook.csv"
    codebook = pd.read_csv(codebook_path, keep_default_na=False) if codebook_path.is_file() else None
    if study is None:
        return _plain_trials(scores, include_pilot, long=long, participants=participants, codebook=codebook)
    scores = with_playback(scores, _read_table(folder, "trials", required=False))
    kept, excluded = exclusions(scores, participants, study, include_pilot=include_pilot)
    if long is not None and not include_pilot and "is_pilot" in long:
        long = long[~long["is_pilot"].astype(bool)].reset_index(drop=True)
    return LoadedData(trials=kept, participants=participants, long=long, study=study, excluded=excluded,
                      codebook=codebook)


def check_trial_table(df: pd.DataFrame, where: Path | str = "trial table") -> pd.DataFrame:
    """Clear errors for a table not in trial-table shape (a missing column, with the closest
    present name as a likely typo; a source that is not human or ai); returns a copy with
    source normalised to lower case."""
    if not isinstance(df, pd.DataFrame):
        raise UserError(f"{where}: expected a table (pandas DataFrame), got {type(df).__name__}")
    missing = [c for c in REQUIRED_TRIAL_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{where} is not in trial-table shape: column(s) {', '.join(missing)} missing",
                        [Problem(f"{where}: column {c}", "required" + did_you_mean(c, df.columns)
                                 + "; the columns present are: " + ", ".join(map(str, df.columns)))
                         for c in missing])
    t = df.copy()
    t["source"] = t["source"].astype("string").str.strip().str.lower()
    bad = t["source"].notna() & ~t["source"].isin(SOURCES)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        found = t.loc[bad, "source"].value_counts()
        values = ", ".join(f"{v!r} ({plural(int(k), 'row')})" for v, k in found.head(6).items())
        raise UserError(f"{where}: source must be 'human' or 'ai'",
                        [Problem(f"{where}: row {row + 1}, column source", f"value {df['source'].iloc[row]!r}"),
                         Problem(f"{where}: column source", f"values that are neither human nor ai: {values}"
                                 + (" ..." if len(found) > 6 else "") + "; a CSV from other software can "
                                 "be recoded with --sources, e.g. human=real,ai=generated")])
    return t


def no_column(where, name: str, columns) -> str:
    """'<where> has no column 'x' (is 'X' a typo for it?); its columns are: ...'."""
    return (f"{where} has no column {name!r}" + did_you_mean(name, columns) + "; its columns are: "
            + ", ".join(map(str, columns)))


def did_you_mean(name: str, columns) -> str:
    """' (is 'stimulus_Id' a typo for it?)' for the closest present column, or ''."""
    import difflib

    present = {str(c).strip().lower(): str(c) for c in columns}
    close = difflib.get_close_matches(str(name).strip().lower(), list(present), n=1, cutoff=0.75)
    return f" (is {present[close[0]]!r} a typo for it?)" if close else ""


def _plain_trials(trials: pd.DataFrame, include_pilot: bool, **extra: Any) -> LoadedData:
    """A trial table without a study file: only the pilot flag can exclude anything."""
    excluded = pd.DataFrame(columns=EXCLUDED_COLUMNS)
    pilot_known = "is_pilot" in trials.columns
    if pilot_known and not include_pilot:
        pilot = trials["is_pilot"].astype("str").str.lower().isin(["true", "1", "yes"])
        if pilot.any():
            excluded = (trials.loc[pilot, ["participant_id"]].drop_duplicates()
                        .assign(level="participant", stimulus_id=pd.NA, position=pd.NA, reason="pilot participant")
                        [EXCLUDED_COLUMNS].reset_index(drop=True))
            trials = trials[~pilot].reset_index(drop=True)
    return LoadedData(trials=trials, study=None, excluded=excluded, pilot_known=pilot_known,
                      participants=extra.get("participants"), long=extra.get("long"), codebook=extra.get("codebook"))


def load_csv(path: Path, include_pilot: bool = False, columns: dict[str, str] | None = None,
             sources: dict[str, str] | None = None, rows: dict[str, list[str]] | None = None,
             pivot: tuple[str, str] | None = None, wide: tuple[str, Path] | None = None) -> LoadedData:
    """A trial table exported from elsewhere (jsPsych, PsychoPy, Gorilla ...): `rows` keeps only
    the rows whose columns hold the values given ({their column: [values]}, e.g. Gorilla's
    {'Zone Type': ['response_slider_endValue']}: its long data have a row per video event too),
    `columns` maps our column names to theirs ({'participant_id': 'subject', ...}), `sources`
    their source values to ours ({'real': 'human', 'generated': 'ai'}, any case); rows without
    a clip (instruction screens of a long-format export) are not ratings and are left out;
    `pivot` (name column, value column) makes one rating row of a participant's rows for a clip,
    one outcome column per question name (_pivoted); `wide` (column pattern, clips file) reads a
    table with one row per participant (_melted)."""
    if not path.is_file():
        raise UserError(f"{path}: no such CSV file")
    ids = {(columns or {}).get(c, c): "str" for c in ("participant_id", "stimulus_id", "pair_id")}
    trials, notes = read_foreign_csv(path, ids)
    trials = _json_object_columns(trials, path, notes)
    if rows:
        trials, note = _selected_rows(trials, rows, path)
        notes.append(note)
    if columns:
        trials = _renamed(trials, columns, path)
    if wide:
        trials = _melted(trials, wide, path, notes)
    if sources and "source" in trials.columns:
        trials, note = _recoded_sources(trials, sources, path)
        notes.append(note)
    trials = _trimmed_ids(trials, path, notes)
    trials = check_trial_table(trials, path)
    no_clip = trials["stimulus_id"].isna()
    if no_clip.any():
        notes.append(f"{int(no_clip.sum())} of {len(trials)} rows of {path} have no stimulus_id (instruction "
                     "screens, questionnaires ...) and were left out")
    trials = trials[~no_clip].reset_index(drop=True)
    if pivot:
        trials = _pivoted(trials, pivot, path, notes)
    data = _plain_trials(trials, include_pilot)
    data.notes = notes
    return data


def _clips_file(path: Path) -> pd.DataFrame:
    """stimulus_id, source (and pair_id when given) of each clip, from a CSV such as a study's
    manifest (its `id` column) or any table with stimulus_id and source."""
    if not Path(path).is_file():
        raise UserError(f"--clips: no such file: {path}")
    table, _ = read_foreign_csv(Path(path), {"id": "str", "stimulus_id": "str", "pair_id": "str"})
    if "stimulus_id" not in table.columns and "id" in table.columns:
        table = table.rename(columns={"id": "stimulus_id"})
    missing = [c for c in ("stimulus_id", "source") if c not in table.columns]
    if missing:
        raise UserError(f"--clips {path}: column(s) {', '.join(missing)} missing",
                        [Problem(f"{path}", "a clips file has a stimulus_id (or id) and a source column, like a "
                                 "study's manifest.csv; its columns are: " + ", ".join(map(str, table.columns)))])
    table["stimulus_id"] = table["stimulus_id"].astype("string").str.strip()
    twice = table["stimulus_id"].dropna()[table["stimulus_id"].dropna().duplicated()]
    if len(twice):
        raise UserError(f"--clips {path}: clip {twice.iloc[0]!r} is listed twice")
    return table[[c for c in ("stimulus_id", "source", "pair_id") if c in table.columns]].dropna(subset=["stimulus_id"])


def _melted(trials: pd.DataFrame, wide: tuple[str, Path], where: Path, notes: list[str]) -> pd.DataFrame:
    """A row per participant (Qualtrics, oTree: a column per clip and question) as a row per
    participant and clip. The pattern names the columns: {clip} stands for a clip id of the
    clips file (matched exactly, longest first), {outcome} for the question (e.g.
    '{clip}_{outcome}' reads h01_valence as clip h01, outcome valence; without {outcome} the
    outcome is 'response'). Qualtrics' two extra header rows (question texts, ImportIds) are
    left out. Sources (and pairs) come from the clips file."""
    import re

    pattern, clips_path = wide
    if pattern.count("{clip}") != 1 or pattern.count("{outcome}") > 1:
        raise UserError(f"--wide {pattern!r}: the pattern needs {{clip}} once, where a column name holds the clip "
                        "id, and {outcome} at most once, e.g. {clip}_{outcome}")
    if "participant_id" not in trials.columns:
        raise UserError(f"--wide: {where} has no participant_id column; name it with --columns, e.g. "
                        "participant_id=ResponseId", [Problem(str(where), "its columns are: "
                                                              + ", ".join(map(str, trials.columns)))])
    clips = _clips_file(clips_path)
    ids = sorted((i for i in clips["stimulus_id"] if i), key=len, reverse=True)
    parts = re.split(r"(\{clip\}|\{outcome\})", pattern)
    regex = "".join("(?P<clip>" + "|".join(map(re.escape, ids)) + ")" if p == "{clip}"
                    else "(?P<outcome>.+)" if p == "{outcome}" else re.escape(p) for p in parts)
    matched = {c: re.fullmatch(regex, str(c)) for c in trials.columns}
    matched = {c: m for c, m in matched.items() if m}
    if not matched:
        raise UserError(f"--wide {pattern!r}: no column of {where} fits the pattern with a clip of {clips_path}",
                        [Problem(str(where), "its columns are: " + ", ".join(map(str, trials.columns[:20]))
                                 + (" ..." if len(trials.columns) > 20 else ""))])
    outcomes = sorted({m.groupdict().get("outcome") or "response" for m in matched.values()})
    ours = sorted(set(outcomes) & {*_RATING_KEYS, "source"})
    if ours:
        raise UserError(f"--wide {pattern!r}: the question name {ours[0]!r} (from the column names) is also a "
                        "column of ours; give a pattern that leaves it out")
    t = trials
    # Qualtrics writes a row of question texts and a row of {"ImportId": ...} under the header
    first = t[list(matched)].head(2).astype("string")
    if len(t) >= 2 and first.iloc[1].fillna("").str.startswith('{"ImportId"').any():
        t = t.iloc[2:]
        notes.append(f"the two rows under the header of {where} (question texts and ImportIds, as Qualtrics "
                     "writes them) were left out")
    again = t["participant_id"].dropna().duplicated()
    if again.any():
        who = t["participant_id"].dropna()[again].iloc[0]
        raise UserError(f"--wide: participant {who!r} has more than one row in {where}",
                        [Problem(str(where), f"{plural(int(again.sum()), 'row')} repeat a participant; a table read "
                                 "with --wide has one row per participant (keep the rows wanted with --rows)")])
    keep = [c for c in _RATING_KEYS if c in t.columns and c not in ("stimulus_id", "source", "pair_id")]
    long = t.melt(id_vars=keep, value_vars=list(matched), var_name="_column", value_name="_value")
    long["stimulus_id"] = long["_column"].map({c: m.group("clip") for c, m in matched.items()})
    long["_outcome"] = long["_column"].map({c: (m.groupdict().get("outcome") or "response") for c, m in matched.items()})
    out = (long.pivot_table(index=[*keep, "stimulus_id"], columns="_outcome", values="_value", aggfunc="first",
                            dropna=False, observed=True)
           .reset_index())
    out.columns.name = None
    # a clip a participant was not shown (lists) has every cell empty: no rating, not a missing one
    answered = out[outcomes].astype("string").apply(lambda c: c.str.strip().fillna("") != "").any(axis=1)
    unseen = int((~answered).sum())
    out = out[answered.to_numpy()].merge(clips, on="stimulus_id", how="left")
    unused = sorted(set(ids) - {m.group("clip") for m in matched.values()})
    notes.append(f"--wide read {plural(len(matched), 'column')} of {where} as {plural(len(out), 'row')} (participant "
                 f"x clip), outcomes {', '.join(outcomes)}"
                 + (f"; {unseen} participant-clip cells with nothing in them (clips not shown) left out"
                    if unseen else "")
                 + (f"; {plural(len(unused), 'clip')} of {clips_path} with no column: {', '.join(unused[:5])}"
                    + (" ..." if len(unused) > 5 else "") if unused else ""))
    return out


# The columns that describe a rating rather than one row of a long export: kept when --pivot
# turns a participant's rows for one clip into one rating row.
_RATING_KEYS = ("participant_id", "stimulus_id", "source", "pair_id", "label_condition", "position", "is_pilot")


def _pivoted(trials: pd.DataFrame, pivot: tuple[str, str], where: Path, notes: list[str]) -> pd.DataFrame:
    """One row per participant, clip and source from a long export with a row per question:
    each value of the column `name` becomes an outcome column holding the column `value`
    (Gorilla's Zone Name and Response). Rows without a name are left out; two rows for the
    same participant, clip and question are refused, naming the first such rating."""
    name, value = pivot
    missing = [c for c in (name, value) if c not in trials.columns]
    if missing:
        raise UserError(f"--pivot does not fit {where}",
                        [Problem(f"--pivot {name}={value}", no_column(where, c, trials.columns)) for c in missing])
    keys = [c for c in _RATING_KEYS if c in trials.columns and c not in (name, value)]
    named = trials[name].astype("string").str.strip()
    d = trials[(named.notna() & (named != "")).to_numpy()].copy()
    d[name] = named[d.index].astype(str)
    clash = sorted(set(d[name]) & set(keys))
    if clash:
        raise UserError(f"--pivot {name}={value}: the question name {clash[0]!r} is also a column of ours")
    index = ["participant_id", "stimulus_id", "source"]
    twice = d.duplicated([*index, name], keep=False)
    if twice.any():
        r = d[twice].iloc[0]
        raise UserError(f"--pivot {name}={value}: more than one row for one rating",
                        [Problem(f"{where}: participant {r['participant_id']}, clip {r['stimulus_id']}, {name} "
                                 f"{r[name]!r}", f"{plural(int(twice.sum()), 'row')} in all are such repeats; keep "
                                 "one row per question with --rows (e.g. the slider's end value)")])
    wide = d.pivot(index=index, columns=name, values=value)
    wide.columns = [str(c) for c in wide.columns]
    meta = d.groupby(index, sort=False, dropna=False)[[c for c in keys if c not in index]].first()
    out = meta.join(wide).reset_index()
    notes.append(f"--pivot made {plural(len(out), 'rating')} from {len(d)} rows of {where}, one outcome column per "
                 f"{name}: {', '.join(wide.columns)} (values from {value})"
                 + (f"; {plural(len(trials) - len(d), 'row')} without a {name} left out" if len(d) < len(trials) else ""))
    return out


# Encodings a CSV from elsewhere comes in, tried in turn: UTF-8 (with or without Excel's byte
# order mark), then Windows-1252, which Excel on Windows writes ("Save as CSV").
_ENCODINGS = ("utf-8-sig", "cp1252")


def read_foreign_csv(path: Path, dtype: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """A CSV written by other software, as a table, and notes on how it was read.

    The delimiter is the header line's (comma, semicolon or tab); with semicolons, a decimal
    comma is taken where it makes more columns numbers (Excel in German, French ... locales
    writes `5,5`). A column name given twice is an error (pandas would rename one `name.1` and
    the analysis use the other without a word).
    """
    raw = path.read_bytes()
    if not raw.strip():
        raise UserError(f"{path}: cannot be read as CSV", [Problem(str(path), "the file is empty")])
    text = encoding = None
    # UTF-16 only with its byte order mark (Excel's "Unicode text" is tab-separated UTF-16).
    for encoding in (("utf-16",) if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else _ENCODINGS):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    if text is None:
        raise UserError(f"{path}: cannot be read as CSV",
                        [Problem(str(path), "the file is neither UTF-8 nor Windows-1252 text; save it as CSV UTF-8")])
    notes = [] if encoding in ("utf-8-sig", "utf-16") else [f"{path} is not UTF-8 and was read as {encoding}"]
    if "\x00" in text:
        raise UserError(f"{path}: cannot be read as CSV", [Problem(str(path), "the file holds binary data, not text")])
    text = text.lstrip("\ufeff")
    header = text.split("\n", 1)[0].rstrip("\r")
    if header.lower().startswith("sep=") and len(header) == 5:
        # Excel's hint line ("sep=;") names the delimiter and is no header.
        sep = header[4]
        text = text.split("\n", 1)[1] if "\n" in text else ""
        header = text.split("\n", 1)[0]
    else:
        counts = {sep: header.count(sep) for sep in (",", ";", "\t")}
        sep = max(counts, key=lambda k: counts[k]) if any(counts.values()) else ","
    names = next(csv.reader([header.rstrip("\r")], delimiter=sep), [])
    seen: dict[str, int] = {}
    twice = []
    for i, name in enumerate(names, start=1):
        if name.strip() in seen:
            twice.append(Problem(f"{path}: column {name.strip()!r}", f"is column {seen[name.strip()]} and column {i}"))
        seen.setdefault(name.strip(), i)
    if twice:
        raise UserError(f"{path}: a column name appears more than once; rename or remove the copies", twice)

    def parse(decimal: str) -> pd.DataFrame:
        return pd.read_csv(io.StringIO(text), sep=sep, decimal=decimal, dtype=dtype)

    try:
        table = parse(".")
        if sep == ";":
            comma = parse(",")
            if _numeric_columns(comma) > _numeric_columns(table):
                table = comma
                notes.append(f"{path} uses decimal commas (5,5 for 5.5)")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise UserError(f"{path}: cannot be read as CSV", [Problem(str(path), str(exc).strip())]) from None
    table.columns = [str(c).strip() for c in table.columns]
    return table, notes


def _numeric_columns(table: pd.DataFrame) -> int:
    return sum(pd.api.types.is_numeric_dtype(table[c]) for c in table.columns)


def _renamed(trials: pd.DataFrame, columns: dict[str, str], where: Path) -> pd.DataFrame:
    problems = [Problem(f"--columns {ours}={theirs}", no_column(where, theirs, trials.columns))
                for ours, theirs in columns.items() if theirs not in trials.columns]
    # A column of ours already present is in the way unless the mapping renames it too
    # (stimulus_id=source,source=kind swaps two columns, as pandas renames them at once).
    renamed_away = set(columns.values())
    problems += [Problem(f"--columns {ours}={theirs}", f"{where} already has a column {ours!r}")
                 for ours, theirs in columns.items()
                 if ours in trials.columns and ours != theirs and ours not in renamed_away]
    named = {}
    for ours, theirs in columns.items():
        named.setdefault(theirs, []).append(ours)
    problems += [Problem(f"--columns {'='.join([ours[0], theirs])}", f"column {theirs!r} is named for "
                         f"{' and '.join(ours)}; each column can be one of ours only")
                 for theirs, ours in named.items() if len(ours) > 1]
    if problems:
        raise UserError(f"--columns does not fit {where}", problems)
    return trials.rename(columns={theirs: ours for ours, theirs in columns.items()})


def _json_object_columns(table: pd.DataFrame, where: Path, notes: list[str]) -> pd.DataFrame:
    """A column of JSON objects (jsPsych's survey plugins write `response` as {"valence": 5,
    "arousal": 3}) gets a column per key beside it, `response.valence` and so on, so that
    --outcomes can name one; said in a note. Only a column whose every filled cell is a JSON
    object of numbers, text or nothing is read so; the column itself stays as it was."""
    import json

    out = table
    for col in table.columns:
        if not (pd.api.types.is_object_dtype(table[col]) or pd.api.types.is_string_dtype(table[col])):
            continue
        cells = table[col].dropna().astype(str).str.strip()
        cells = cells[cells != ""]
        if cells.empty or not cells.str.startswith("{").all():
            continue
        try:
            parsed = [json.loads(c) for c in cells]
        except ValueError:
            continue
        if not all(isinstance(v, dict) and all(x is None or isinstance(x, (int, float, str)) for x in v.values())
                   for v in parsed):
            continue
        keys = [k for k in dict.fromkeys(k for v in parsed for k in v) if f"{col}.{k}" not in table.columns]
        if not keys:
            continue
        out = out.copy() if out is table else out
        for k in keys:
            out[f"{col}.{k}"] = pd.Series([v.get(k) for v in parsed], index=cells.index, dtype=object) \
                .reindex(table.index)
        notes.append(f"the JSON objects in column {col} of {where} were read as the columns "
                     + ", ".join(f"{col}.{k}" for k in keys))
    return out


def _selected_rows(trials: pd.DataFrame, rows: dict[str, list[str]], where: Path) -> tuple[pd.DataFrame, str]:
    """The rows where every column named holds one of its values (compared as trimmed text), and
    a note; a column the file lacks, or a value no row holds (a likely typo), is refused."""
    problems = []
    keep = pd.Series(True, index=trials.index)
    for col, values in rows.items():
        if col not in trials.columns:
            problems.append(Problem(f"--rows {col}={values[0]}", no_column(where, col, trials.columns)))
            continue
        text = trials[col].astype("string").str.strip()
        for v in values:
            if not (text == v).any():
                present = ", ".join(repr(x) for x in text.dropna().unique()[:8])
                problems.append(Problem(f"--rows {col}={v}", f"no row of {where} has {v!r} in {col}; its "
                                        f"values are: {present}"))
        keep &= text.isin(values).fillna(False)
    if problems:
        raise UserError(f"--rows does not fit {where}", problems)
    which = "; ".join(f"{col} {'is' if len(v) == 1 else 'is one of'} {', '.join(v)}" for col, v in rows.items())
    return (trials[keep].reset_index(drop=True),
            f"--rows kept {int(keep.sum())} of {len(trials)} rows of {where} ({which})")


def _trimmed_ids(trials: pd.DataFrame, where: Path, notes: list[str]) -> pd.DataFrame:
    """Identifiers without the spaces around them (' p01 ' and 'p01' are one participant, not
    two: a hand-edited or Excel-written CSV has such cells), said in a note per column."""
    out = trials
    for col in ("participant_id", "stimulus_id", "pair_id"):
        if col not in trials.columns:
            continue
        values = trials[col].astype("string")  # read as text (load_csv's dtype)
        stripped = values.str.strip()
        changed = (values != stripped).fillna(False)
        if changed.any():
            out = out.copy() if out is trials else out
            out[col] = stripped.replace("", pd.NA)  # a cell of spaces only is no id
            notes.append(f"{plural(int(changed.sum()), 'value')} of {col} in {where} had spaces around them, "
                         "which were removed")
    return out


def _recoded_sources(trials: pd.DataFrame, sources: dict[str, str], where: Path) -> tuple[pd.DataFrame, str]:
    """The source column with their values (compared trimmed, in any case) recoded to ours,
    and a note saying how many rows each; a value of theirs no row holds is refused (a typo
    would otherwise leave its rows unrecoded and refused one step later, less plainly)."""
    theirs = trials["source"].astype("string").str.strip().str.casefold()
    wanted = {str(k).strip().casefold(): v for k, v in sources.items()}
    absent = [k for k in wanted if not (theirs == k).any()]
    if absent:
        present = ", ".join(repr(v) for v in theirs.dropna().unique()[:8])
        raise UserError(f"--sources does not fit {where}",
                        [Problem(f"--sources {wanted[k]}={k}", f"no row of {where} has source {k!r}; its values "
                                 f"are: {present}") for k in absent])
    out = trials.copy()
    out["source"] = theirs.map(lambda v: wanted.get(v, v), na_action="ignore")
    done = ", ".join(f"{k} as {v} ({plural(int((theirs == k).sum()), 'row')})" for k, v in wanted.items())
    return out, f"source values recoded by --sources: {done}"


def load_trials(source: Any, study_id: str | None = None, include_pilot: bool = False,
                url: str | None = None, columns: dict[str, str] | None = None,
                version: str | None = None, sources: dict[str, str] | None = None,
                rows: dict[str, list[str]] | None = None, pivot: tuple[str, str] | None = None,
                wide: tuple[str, Path] | None = None) -> LoadedData:
    """Load, score and apply exclusions, from wherever the data are.

    source: an Engine or a database URL (with study_id, or a database holding one study); a
    study id or study file (the database at `url`, default study.config.database_url()); a
    dataset folder written by `kuleshov export`; or a CSV in trial-table shape, whose columns
    `columns` renames ({ours: theirs}, for a CSV only). `version` keeps only the participants of
    that study version (database sources only). `sources` recodes a CSV's source values
    ({theirs: 'human' or 'ai'}), `rows` keeps a CSV's rows by their values (load_csv).
    """
    if not str(source).lower().endswith(".csv"):
        shape = "reads a CSV file from other software; the other sources hold one row per rating already"
        for option, given, why in (
                ("--rows", rows, shape), ("--pivot", pivot, shape), ("--wide", wide, shape),
                ("--columns", columns, "renames the columns of a CSV file; the other sources have Kuleshov's names"),
                ("--sources", sources, "recodes the source values of a CSV file; the other sources have Kuleshov's "
                 "values (human, ai)")):
            if given:
                raise UserError(f"{option} {why}")
    if isinstance(source, Engine):
        return load_from_db(source, study_id or _only_study(source), include_pilot, version)
    text = str(source)
    if "://" in text:
        engine = _engine_for(text)
        try:
            return load_from_db(engine, study_id or _only_study(engine), include_pilot, version)
        finally:
            engine.dispose()
    path = Path(text)
    if version is not None and (path.is_dir() or path.suffix.lower() == ".csv"):
        raise UserError(f"{text}: --version works on the database (give the study id); in a dataset folder, "
                        "filter participants.csv by its study_version column and use study_v<version>.yaml")
    if path.is_dir():
        return load_folder(path, include_pilot)
    if path.suffix.lower() == ".csv":
        return load_csv(path, include_pilot, columns, sources, rows, pivot, wide)
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"{path}: no such study file")
        study_id = store.resolve_study_id(text)
    elif path.is_file():
        raise UserError(f"{text}: cannot analyse a {path.suffix or 'extensionless'} file; give a study id, a study "
                        "file (.yaml), a dataset folder from `kuleshov export` or a trial-table CSV (.csv)")
    elif path.suffix or "/" in text:
        raise UserError(f"{text}: not a study id, study file, dataset folder or CSV file (nothing found there)")
    else:
        study_id = text
    engine = _engine_for(url)
    try:
        return load_from_db(engine, study_id, include_pilot, version)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- live monitoring (dashboard)

PROBLEM_EVENTS = ("error", "stalled", "waiting", "play_rejected", "retry", "skip")


@dataclass
class Monitoring:
    participants: pd.DataFrame  # load_participants
    funnel: pd.DataFrame  # step, reached (participants who got at least this far), stopped_here
    clips: pd.DataFrame  # stimulus_id, source, shown, mean_watched, mean_share_muted, mean_seconds_hidden,
    #                      mean_load_ms, <outcome>_mean, error ... skip
    outcome: str | None  # the item whose mean per clip is shown
    fingerprint: str  # changes whenever new data arrive (for caching interim results)


def monitoring(engine: Engine, study_id: str) -> Monitoring:
    """Aggregates for the live dashboard, computed in SQL so a refresh stays cheap on big studies."""
    from study import flow, instruments

    info = store.get_study(engine, study_id)
    people = load_participants(engine, study_id)
    p, t, r, e = store.participants.c, store.trials.c, store.responses.c, store.playback_events.c
    numeric = [i.id for i in instruments.items_for(info.study, "per_clip") if i.is_numeric]
    outcome = info.study.analysis.primary_outcome if info.study.analysis.primary_outcome in numeric else (
        numeric[0] if numeric else None)
    with engine.connect() as conn:
        shown = _frame(conn, sa.select(t.stimulus_id, sa.func.count().label("shown"),
                                       sa.func.avg(t.watched_share).label("mean_watched"),
                                       sa.func.avg(t.share_muted).label("mean_share_muted"),
                                       sa.func.avg(t.seconds_hidden).label("mean_seconds_hidden"),
                                       sa.func.avg(t.load_ms).label("mean_load_ms"))
                       .join(store.participants, p.id == t.participant_id)
                       .where(p.study_id == study_id, t.position >= 1).group_by(t.stimulus_id))
        events = _frame(conn, sa.select(e.stimulus_id, e.event, sa.func.count().label("n"))
                        .join(store.participants, p.id == e.participant_id)
                        .where(p.study_id == study_id, e.event.in_(PROBLEM_EVENTS))
                        .group_by(e.stimulus_id, e.event))
        ratings = pd.DataFrame(columns=["stimulus_id", "mean", "n"])
        if outcome:
            ratings = _frame(conn, sa.select(t.stimulus_id, sa.func.avg(r.value_num).label("mean"),
                                             sa.func.count(r.value_num).label("n"))
                             .join(store.trials, t.id == r.trial_id)
                             .join(store.participants, p.id == r.participant_id)
                             .where(p.study_id == study_id, r.item_id == outcome, t.position >= 1)
                             .group_by(t.stimulus_id))
        latest = conn.execute(sa.select(sa.func.max(p.updated_at), sa.func.count())
                              .where(p.study_id == study_id)).one()
        n_answers = conn.execute(sa.select(sa.func.count()).select_from(store.responses)
                                 .join(store.participants, p.id == r.participant_id)
                                 .where(p.study_id == study_id)).scalar_one()
    stim = pd.DataFrame(info.manifest)[["id", "source"]].rename(columns={"id": "stimulus_id"})
    clips = stim.merge(shown, on="stimulus_id", how="left")
    clips["shown"] = clips["shown"].fillna(0).astype(int)
    for column in ("mean_watched", "mean_share_muted", "mean_seconds_hidden", "mean_load_ms"):
        clips[column] = pd.to_numeric(clips[column], errors="coerce")
    if outcome:
        rat = ratings.rename(columns={"mean": f"{outcome}_mean", "n": f"{outcome}_n"})
        clips = clips.merge(rat, on="stimulus_id", how="left")
        clips[f"{outcome}_mean"] = pd.to_numeric(clips[f"{outcome}_mean"], errors="coerce")
    if len(events):
        wide = events.pivot(index="stimulus_id", columns="event", values="n")
        clips = clips.join(wide, on="stimulus_id")
    for ev in PROBLEM_EVENTS:
        clips[ev] = pd.to_numeric(clips[ev], errors="coerce").fillna(0).astype(int) if ev in clips else 0
    keys = [s.key for s in flow.build_steps(info.study, ["clip"] * max(1, int(people["n_planned"].max() or 1)
                                                                           if len(people) else 1),
                                                    getattr(info.study.stimuli, "practice", None) or None)]
    order = {k: i for i, k in enumerate(keys)}
    where = people["step_key"].map(order).fillna(0).astype(int)
    funnel = pd.DataFrame({"step": keys, "reached": [int((where >= i).sum()) for i in range(len(keys))],
                           "stopped_here": [int(((where == i) & (people["status"] != "completed")).sum())
                                            for i in range(len(keys))]})
    fingerprint = f"{study_id}:{info.spec_hash}:{latest[0]}:{latest[1]}:{n_answers}"
    return Monitoring(participants=people, funnel=funnel, clips=clips, outcome=outcome, fingerprint=fingerprint)


# --------------------------------------------------------------------------- traces and marks (h11)

TRACE_COLUMNS = ["participant", "trial", "clip", "source", "dimension", "video_time", "value", "clip_duration",
                 "partial"]
MARK_COLUMNS = ["participant", "trial", "clip", "source", "mark", "video_time", "clip_duration"]
TRACE_ATTEMPT_COLUMNS = ["participant", "trial", "clip", "source", "attempt", "mode", "partial", "n_samples",
                         "n_marks", "start_value", "start_arousal", "moved", "first_move_time", "last_video_time",
                         "clip_duration"]
# 1d traces are one dimension; a 2d grid gives two rows per sample.
TRACE_DIMENSIONS = {"1d": (("rating", "x"),), "2d": (("valence", "x"), ("arousal", "y"))}


def _json_value(v):
    # SQLite hands JSON back as text through some paths, PostgreSQL always decoded.
    return json.loads(v) if isinstance(v, str) else v


def _trace_batches(engine: Engine, study_id: str, include_pilot: bool, include_practice: bool):
    """(batch rows with pseudonym, source and clip duration, attempts table) of a study."""
    tb, p, s = store.trace_batches.c, store.participants.c, store.stimuli.c
    stmt = (sa.select(p.pseudonym, p.is_pilot, p.participant_number, tb.position, tb.attempt, tb.seq,
                      tb.stimulus_id, tb.mode, tb.final, tb.t, tb.x, tb.y, tb.marks, tb.start_x, tb.start_y,
                      tb.first_move_t, tb.server_time, tb.client_time)
            .select_from(store.trace_batches.join(store.participants, p.id == tb.participant_id))
            .where(p.study_id == study_id))
    if not include_practice:
        stmt = stmt.where(tb.position >= 1)
    if not include_pilot:
        stmt = stmt.where(p.is_pilot.is_(False))
    with engine.connect() as conn:
        _study_exists(conn, study_id)
        rows = _frame(conn, stmt.order_by(p.participant_number, tb.position, tb.attempt, tb.seq))
        stim = _frame(conn, sa.select(s.stimulus_id, s.source, s.duration_s).where(s.study_id == study_id))
    source = dict(zip(stim["stimulus_id"], stim["source"]))
    duration = {k: (float(v) if v is not None else np.nan) for k, v in zip(stim["stimulus_id"], stim["duration_s"])}
    if rows.empty:
        return rows, pd.DataFrame(columns=TRACE_ATTEMPT_COLUMNS + ["akey"])
    rows["key"] = list(zip(rows["pseudonym"], rows["position"], rows["attempt"]))
    rows["server_time"] = _utc(rows["server_time"])
    # Attempts in the order they began; the first one that reached the clip's end is the trial's
    # trace, every other attempt (interrupted by a reload, or a later replay) is partial.
    first = rows.groupby("key", sort=False).agg(
        participant=("pseudonym", "first"), number=("participant_number", "first"), trial=("position", "first"),
        clip=("stimulus_id", "first"), mode=("mode", "first"), began=("server_time", "min"),
        client=("client_time", "min"), final=("final", "any"),
        start_value=("start_x", "first"), start_arousal=("start_y", "first"),
        first_move_time=("first_move_t", "min"),
    ).reset_index()
    # Attempts in the order the browser began them (its clock): batches kept offline reach the
    # server late, so arrival order could put an interrupted attempt after the one that followed.
    began_ms = first["began"].map(lambda d: d.timestamp() * 1000).astype("float64")
    first["order"] = pd.to_numeric(first["client"], errors="coerce").astype("float64").fillna(began_ms)
    first = first.sort_values(["number", "trial", "order", "began"], kind="stable").reset_index(drop=True)
    first["attempt"] = first.groupby(["participant", "trial"]).cumcount() + 1
    complete = first[first["final"]].groupby(["participant", "trial"])["key"].first()
    chosen = set(complete.tolist())
    first["partial"] = ~first["key"].isin(chosen)
    first["source"] = first["clip"].map(source)
    first["clip_duration"] = first["clip"].map(duration).astype("float64")
    attempts = first.rename(columns={"key": "akey"})
    return rows, attempts


def _explode(rows: pd.DataFrame, attempts: pd.DataFrame) -> tuple[dict, dict]:
    """Per attempt key: (times, {column: values}) of samples, and its marks [(time, prompt)]."""
    samples: dict = {}
    marks: dict = {}
    for key, t, x, y, m in zip(rows["key"], rows["t"], rows["x"], rows["y"], rows["marks"]):
        entry = samples.setdefault(key, ([], [], []))
        t, x, y = _json_value(t) or [], _json_value(x) or [], _json_value(y) or []
        entry[0].extend(t)
        entry[1].extend(x)
        entry[2].extend(y)
        for when, prompt in _json_value(m) or []:
            marks.setdefault(key, []).append((float(when), str(prompt)))
    return samples, marks


def load_trace_attempts(engine: Engine, study_id: str, include_pilot: bool = False,
                        include_practice: bool = False) -> pd.DataFrame:
    """One row per participant x clip x attempt (TRACE_ATTEMPT_COLUMNS): where the control started,
    whether and when (video time) it first moved, how many samples and marks, partial or not."""
    rows, attempts = _trace_batches(engine, study_id, include_pilot, include_practice)
    if rows.empty:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in TRACE_ATTEMPT_COLUMNS})
    samples, marks = _explode(rows, attempts)
    attempts["n_samples"] = [len(samples.get(k, ([],))[0]) for k in attempts["akey"]]
    attempts["n_marks"] = [len(marks.get(k, [])) for k in attempts["akey"]]
    attempts["last_video_time"] = [max(samples[k][0]) if samples.get(k) and samples[k][0] else np.nan
                                   for k in attempts["akey"]]
    attempts["moved"] = attempts["first_move_time"].notna()
    out = attempts[TRACE_ATTEMPT_COLUMNS].copy()
    for c in ("trial", "attempt", "n_samples", "n_marks"):
        out[c] = out[c].astype("int64")
    for c in ("start_value", "start_arousal", "first_move_time", "last_video_time", "clip_duration"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    out["partial"] = out["partial"].astype(bool)
    out["moved"] = out["moved"].astype(bool)
    return out.reset_index(drop=True)


def load_traces(engine: Engine, study_id: str, include_pilot: bool = False,
                include_practice: bool = False) -> pd.DataFrame:
    """Continuous-rating traces in long format (TRACE_COLUMNS): one row per sample and dimension.

    `video_time` is the clip's own time when the sample was taken (seconds), so pauses and stalls
    do not shift it; rows are sorted by participant, trial, attempt and video time. `partial` is
    True for every attempt but the first that reached the clip's end (a reload restarts the clip
    as a new attempt; the interrupted one is kept). The practice clip (trial 0) is left out unless
    `include_practice`.
    """
    rows, attempts = _trace_batches(engine, study_id, include_pilot, include_practice)
    # Whole columns at once (one DataFrame per attempt cost ~1 ms each, most of the read).
    parts: dict[str, list] = {c: [] for c in TRACE_COLUMNS}
    if not rows.empty:
        samples, _ = _explode(rows, attempts)
        for a in attempts.itertuples(index=False):
            t, x, y = samples.get(a.akey, ([], [], []))
            if not t or a.mode not in TRACE_DIMENSIONS:
                continue
            times = np.asarray(t, dtype="float64")
            order = np.argsort(times, kind="stable")
            values = {"x": x, "y": y}
            for dimension, column in TRACE_DIMENSIONS[a.mode]:
                n = len(times)
                parts["participant"].append(np.repeat(np.asarray([a.participant], dtype=object), n))
                parts["trial"].append(np.full(n, int(a.trial), dtype="int64"))
                parts["clip"].append(np.repeat(np.asarray([a.clip], dtype=object), n))
                parts["source"].append(np.repeat(np.asarray([a.source], dtype=object), n))
                parts["dimension"].append(np.repeat(np.asarray([dimension], dtype=object), n))
                parts["video_time"].append(times[order])
                parts["value"].append(np.asarray(values[column], dtype="float64")[order])
                parts["clip_duration"].append(np.full(n, a.clip_duration, dtype="float64"))
                parts["partial"].append(np.full(n, bool(a.partial), dtype=bool))
    dtypes = {"trial": "int64", "video_time": "float64", "value": "float64", "clip_duration": "float64",
              "partial": bool}
    return pd.DataFrame({c: (np.concatenate(v) if v else np.asarray([], dtype=dtypes.get(c, object)))
                         for c, v in parts.items()})[TRACE_COLUMNS]


def load_marks(engine: Engine, study_id: str, include_pilot: bool = False, include_practice: bool = False,
               include_partial: bool = False) -> pd.DataFrame:
    """Moment marks in long format (MARK_COLUMNS): one row per mark, `mark` the prompt id and
    `video_time` the clip's time when it was pressed, sorted by participant, trial and time.

    Marks of partial attempts (see load_traces) are left out unless `include_partial`, because
    a reload replays the clip and the same moments would be marked twice; a trial whose clip
    never reached its end keeps the marks of its latest attempt.
    """
    rows, attempts = _trace_batches(engine, study_id, include_pilot, include_practice)
    out: list[tuple] = []
    if not rows.empty:
        _, marks = _explode(rows, attempts)
        latest = attempts.groupby(["participant", "trial"])["attempt"].transform("max")
        has_complete = (~attempts["partial"].astype(bool)).groupby([attempts["participant"], attempts["trial"]]).transform("any")
        for a, last, complete in zip(attempts.itertuples(index=False), latest, has_complete):
            keep = include_partial or not a.partial or (not complete and a.attempt == last)
            if not keep:
                continue
            for when, prompt in sorted(marks.get(a.akey, [])):
                out.append((a.participant, int(a.trial), a.clip, a.source, prompt, when, a.clip_duration))
    df = pd.DataFrame(out, columns=MARK_COLUMNS)
    df["trial"] = df["trial"].astype("int64")
    df["video_time"] = df["video_time"].astype("float64")
    df["clip_duration"] = df["clip_duration"].astype("float64")
    return df


# --------------------------------------------------------------------------- follow-up sessions

FOLLOWUP_COLUMNS = ["participant_id", "followup", "session_number", "delay_hours", "late", "stimulus_id", "source",
                    "seen", "measure", "value"]
FOLLOWUP_SESSION_COLUMNS = ["participant_id", "followup", "session_number", "status", "language", "started_at",
                            "completed_at", "delay_hours", "late", "is_pilot", "n_recalled", "recall_text"]
# follow-up item ids (study/followup.py) -> measure names of load_followup
_FOLLOWUP_MEASURES = {"vividness": "vividness", "intrusions": "intrusions", "valence_now": "valence_now",
                      "arousal_now": "arousal_now", "watch_more": "watch_more"}
FOLLOWUP_MEASURES = ("recalled", "recognised", "recognition_confidence", *_FOLLOWUP_MEASURES.values())


def _followup_rows(conn, study_id: str, include_pilot: bool):
    """(sessions, answers, seen clips by participant, pseudonym by pid, manifest by clip id) of a study."""
    fs, p, a, pt = store.followup_sessions.c, store.participants.c, store.followup_answers.c, store.planned_trials.c
    where = [p.study_id == study_id] + ([] if include_pilot else [p.is_pilot.is_(False)])
    sessions = _frame(conn, sa.select(fs.id, fs.participant_id.label("pid"), p.pseudonym, p.is_pilot, fs.followup,
                                      fs.session_number, fs.status, fs.language, fs.started_at, fs.completed_at,
                                      fs.delay_hours, fs.late)
                      .join(store.participants, p.id == fs.participant_id).where(*where)
                      .order_by(p.participant_number, fs.session_number))
    ids = [int(i) for i in sessions["id"]] if len(sessions) else []
    answers = _frame(conn, sa.select(a.followup_session_id, a.step_key, a.item_id, a.stimulus_id, a.value_num,
                                     a.value_text, a.shown_position)
                     .where(a.followup_session_id.in_(ids)).order_by(a.followup_session_id, a.step_key, a.item_id)) \
        if ids else pd.DataFrame(columns=["followup_session_id", "step_key", "item_id", "stimulus_id", "value_num",
                                          "value_text", "shown_position"])
    pids = sorted({int(x) for x in sessions["pid"]}) if len(sessions) else []
    seen: dict[int, list[str]] = {}
    if pids:
        for pid, sid in conn.execute(sa.select(pt.participant_id, pt.stimulus_id).where(
                pt.participant_id.in_(pids), pt.kind == "main").order_by(pt.participant_id, pt.position)):
            seen.setdefault(pid, []).append(sid)
    manifest = conn.execute(sa.select(store.studies.c.manifest).where(store.studies.c.id == study_id)).scalar() or []
    clips = {m["id"]: m for m in manifest}
    return sessions, answers, seen, clips


def load_followup(engine: Engine, study_id: str, include_pilot: bool = False) -> pd.DataFrame:
    """Follow-up answers in long format, FOLLOWUP_COLUMNS: one row per per-clip answer in a follow-up session.

    measure: recalled (0/1 per clip seen in session 1: the free recall names it, by the manifest's
    recall_keywords or the words of its title, case-insensitive whole words; study.followup.recalled),
    recognised (0/1 "seen it" per still shown, seen clips and foils), recognition_confidence (1-5),
    vividness (1-7), intrusions (0-4), valence_now, arousal_now (1-9), watch_more (1-5). `seen`: the
    clip was shown in the participant's session 1; `delay_hours`: actual hours from session-1
    completion to the start of the follow-up; `late`: started after its window.
    """
    from study import followup as fup

    with engine.connect() as conn:
        _study_exists(conn, study_id)
        sessions, answers, seen, clips = _followup_rows(conn, study_id, include_pilot)
    out: dict[str, list] = {c: [] for c in FOLLOWUP_COLUMNS}
    by_session = {k: g for k, g in answers.groupby("followup_session_id")} if len(answers) else {}

    def add(s, sid: str, seen_it: bool, measure: str, value: float) -> None:
        for col, v in (("participant_id", s["pseudonym"]), ("followup", s["followup"]),
                       ("session_number", int(s["session_number"])), ("delay_hours", float(s["delay_hours"])),
                       ("late", bool(s["late"])), ("stimulus_id", sid),
                       ("source", (clips.get(sid) or {}).get("source")), ("seen", seen_it), ("measure", measure),
                       ("value", float(value))):
            out[col].append(v)

    for _, s in sessions.iterrows():
        got = by_session.get(s["id"])
        if got is None:
            continue
        shown = seen.get(int(s["pid"]), [])
        recall = got[got["item_id"] == fup.RECALL_ITEM]
        if len(recall):
            text = recall["value_text"].iloc[0]
            for sid in shown:
                clip = clips.get(sid) or {}
                keys = fup.recall_keywords(clip.get("title"), clip.get("recall_keywords"))
                add(s, sid, True, "recalled", 1.0 if fup.recalled(text, keys) else 0.0)
        for _, r in got.iterrows():
            item, sid = r["item_id"], r["stimulus_id"]
            if sid is None or r["value_num"] is None:
                continue
            if item.startswith("old:"):
                add(s, sid, sid in shown, "recognised", r["value_num"])
            elif item.startswith("confidence:"):
                add(s, sid, sid in shown, "recognition_confidence", r["value_num"])
            elif item in _FOLLOWUP_MEASURES:
                add(s, sid, sid in shown, _FOLLOWUP_MEASURES[item], r["value_num"])
    df = pd.DataFrame(out, columns=FOLLOWUP_COLUMNS)
    return df.astype({"participant_id": "str", "followup": "str", "session_number": "int64",
                      "delay_hours": "float64", "late": "bool", "stimulus_id": "str", "source": "str",
                      "seen": "bool", "measure": "str", "value": "float64"}).reset_index(drop=True)


def load_followup_sessions(engine: Engine, study_id: str, include_pilot: bool = False) -> pd.DataFrame:
    """One row per follow-up session (FOLLOWUP_SESSION_COLUMNS), with the free recall text as typed
    and how many seen clips it names (n_recalled)."""
    from study import followup as fup

    with engine.connect() as conn:
        _study_exists(conn, study_id)
        sessions, answers, seen, clips = _followup_rows(conn, study_id, include_pilot)
    recall = answers[answers["item_id"] == fup.RECALL_ITEM].set_index("followup_session_id")["value_text"] \
        if len(answers) else pd.Series(dtype=object)
    rows = []
    for _, s in sessions.iterrows():
        text = recall.get(s["id"]) if len(recall) else None
        n = None
        if text is not None:
            n = sum(fup.recalled(text, fup.recall_keywords((clips.get(sid) or {}).get("title"),
                                                           (clips.get(sid) or {}).get("recall_keywords")))
                    for sid in seen.get(int(s["pid"]), []))
        rows.append({"participant_id": s["pseudonym"], "followup": s["followup"],
                     "session_number": int(s["session_number"]), "status": s["status"], "language": s["language"],
                     "started_at": s["started_at"], "completed_at": s["completed_at"],
                     "delay_hours": float(s["delay_hours"]), "late": bool(s["late"]), "is_pilot": bool(s["is_pilot"]),
                     "n_recalled": n, "recall_text": text})
    df = pd.DataFrame(rows, columns=FOLLOWUP_SESSION_COLUMNS)
    df["started_at"] = _utc(df["started_at"])
    df["completed_at"] = _utc(df["completed_at"])
    df["n_recalled"] = _int(df["n_recalled"])
    df["late"] = df["late"].astype(bool)
    df["is_pilot"] = df["is_pilot"].astype(bool)
    return df
