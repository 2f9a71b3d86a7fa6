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

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from analysis.formatting import unneutralise
from study import device_check as _device_check
from study import store
from study.errors import Problem, UserError

LONG_COLUMNS = ["participant_id", "stimulus_id", "source", "pair_id", "label_condition", "position", "step",
                "instrument_id", "item_id", "value", "value_text", "untouched", "shown_position",
                "response_time_ms", "watched_share", "is_pilot", "status"]
PARTICIPANT_COLUMNS = ["participant_id", "pseudonym", "status", "label_condition", "list_index", "study_version",
                       "is_pilot",
                       "started_at", "completed_at", "duration_s", "step_key", "n_planned", "n_completed",
                       "failed_attention", "excluded_reason",
                       *(column for column, *_ in _device_check.EXPORT_COLUMNS)]
TRIAL_META_COLUMNS = ["participant_id", "stimulus_id", "source", "pair_id", "label_condition", "position",
                      "watched_share", "is_pilot"]
# Trial-level file of the export (what happened when the clip was shown, no answers).
TRIAL_COLUMNS = ["participant_id", "stimulus_id", "source", "pair_id", "label_condition", "position", "is_pilot",
                 "started_at", "submitted_at", "watched_share", "max_time", "play_count", "item_order"]
PLAYBACK_COLUMNS = ["participant_id", "position", "stimulus_id", "seq", "event", "media_time", "client_time",
                    "server_time", "detail"]
SAMPLE_COLUMNS = ["participant_id", "position", "stimulus_id", "seq", "media_time", "value", "client_time"]
STIMULUS_COLUMNS = ["stimulus_id", "source", "pair_id", "title", "file", "url", "sha256", "duration_s", "width",
                    "height", "video_codec", "credit", "licence", "generator", "generator_version", "prompt",
                    "seed", "notes"]
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
                      p.is_pilot,
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
    for key in ("credit", "licence", "generator", "generator_version", "prompt", "seed", "notes"):
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
                                         t.submitted_at, t.watched_share, t.max_time, t.play_count, t.item_order)
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
        "play_count": _int(tri["play_count"]),
        "item_order": _json_text(tri["item_order"]),
    }).reset_index(drop=True)


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
    longs = [b.long for b in iter_batches(engine, study_id, include_pilot=True)]
    long = pd.concat(longs, ignore_index=True) if longs else _empty_long()
    if version is not None:
        participants = participants[participants["study_version"] == str(version)].reset_index(drop=True)
        long = long[long["participant_id"].isin(participants["participant_id"])].reset_index(drop=True)
    cb = codebook(info.study)
    table = trial_table(long, info.study, cb)
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
        raise UserError(f"{where}: source must be 'human' or 'ai'",
                        [Problem(f"{where}: row {row + 1}, column source", f"value {df['source'].iloc[row]!r}")])
    return t


def did_you_mean(name: str, columns) -> str:
    """' (is 'stimulus_Id' a typo for it?)' for the closest present column, or ''."""
    import difflib

    present = {str(c).strip().lower(): str(c) for c in columns}
    close = difflib.get_close_matches(name, list(present), n=1, cutoff=0.75)
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


def load_csv(path: Path, include_pilot: bool = False, columns: dict[str, str] | None = None) -> LoadedData:
    """A trial table exported from elsewhere (jsPsych, PsychoPy, Gorilla ...): `columns` maps our
    column names to theirs ({'participant_id': 'subject', ...}); rows without a clip (instruction
    screens of a long-format export) are not ratings and are left out."""
    if not path.is_file():
        raise UserError(f"{path}: no such CSV file")
    ids = {(columns or {}).get(c, c): "str" for c in ("participant_id", "stimulus_id", "pair_id")}
    try:
        trials = pd.read_csv(path, dtype=ids)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read as CSV", [Problem(str(path), str(exc).strip())]) from None
    if columns:
        trials = _renamed(trials, columns, path)
    trials = check_trial_table(trials, path)
    no_clip = trials["stimulus_id"].isna()
    notes = [f"{int(no_clip.sum())} of {len(trials)} rows of {path} have no stimulus_id (instruction screens, "
             "questionnaires ...) and were left out"] if no_clip.any() else []
    data = _plain_trials(trials[~no_clip].reset_index(drop=True), include_pilot)
    data.notes = notes
    return data


def _renamed(trials: pd.DataFrame, columns: dict[str, str], where: Path) -> pd.DataFrame:
    problems = [Problem(f"--columns {ours}={theirs}", f"{where} has no column {theirs!r}"
                        + did_you_mean(theirs, trials.columns) + "; its columns are: "
                        + ", ".join(map(str, trials.columns)))
                for ours, theirs in columns.items() if theirs not in trials.columns]
    problems += [Problem(f"--columns {ours}={theirs}", f"{where} already has a column {ours!r}")
                 for ours, theirs in columns.items() if ours in trials.columns and ours != theirs]
    if problems:
        raise UserError(f"--columns does not fit {where}", problems)
    return trials.rename(columns={theirs: ours for ours, theirs in columns.items()})


def load_trials(source: Any, study_id: str | None = None, include_pilot: bool = False,
                url: str | None = None, columns: dict[str, str] | None = None,
                version: str | None = None) -> LoadedData:
    """Load, score and apply exclusions, from wherever the data are.

    source: an Engine or a database URL (with study_id, or a database holding one study); a
    study id or study file (the database at `url`, default study.config.database_url()); a
    dataset folder written by `kuleshov export`; or a CSV in trial-table shape, whose columns
    `columns` renames ({ours: theirs}, for a CSV only). `version` keeps only the participants of
    that study version (database sources only).
    """
    if columns and not str(source).lower().endswith(".csv"):
        raise UserError("--columns renames the columns of a CSV file; the other sources have Kuleshov's names")
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
        return load_csv(path, include_pilot, columns)
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
    clips: pd.DataFrame  # stimulus_id, source, shown, mean_watched, <outcome>_mean, error ... skip
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
                                       sa.func.avg(t.watched_share).label("mean_watched"))
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
    clips["mean_watched"] = pd.to_numeric(clips["mean_watched"], errors="coerce")
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
