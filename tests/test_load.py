"""analysis.load: the database (SQLite and PostgreSQL), dataset folders and CSVs into tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis import load
from study import simulate, store
from study.errors import UserError

from conftest import DEMO_STUDY, REFERENCE

STUDY_ID = "kuleshov-demo"


@pytest.fixture
def demo(engine):
    tokens = simulate.simulate(engine, DEMO_STUDY, 12, effect=1.0, seed=5)
    return engine, tokens


def _secrets(engine) -> set[str]:
    c = store.participants.c
    with engine.connect() as conn:
        rows = conn.execute(store.participants.select().with_only_columns(c.token, c.prolific_pid)).all()
    return {v for row in rows for v in row if v}


def test_long_table_shape_and_pseudonyms_only(demo):
    engine, tokens = demo
    long = load.load_long(engine, STUDY_ID)
    assert list(long.columns) == load.LONG_COLUMNS
    assert long["participant_id"].str.fullmatch(r"P\d{4}").all()
    values = set(long.astype("str").to_numpy().ravel())
    assert not values & _secrets(engine), "a token or Prolific id leaked into the long table"
    # one row per stored answer
    with engine.connect() as conn:
        n = conn.execute(store.responses.select().with_only_columns(store.responses.c.id)).all()
    pilots = load.load_participants(engine, STUDY_ID)["is_pilot"].sum()
    assert pilots == 0 and len(long) == len(n)
    clip = long[long["step"].str.startswith("trial:")]
    assert clip["stimulus_id"].notna().all() and clip["source"].isin(["human", "ai"]).all()
    assert (clip["position"] >= 1).all()
    session = long[long["step"].isin(["demographics", "mood_pre", "mood_post"])]
    assert len(session) and session["stimulus_id"].isna().all() and session["position"].isna().all()
    # slider left untouched is an answer without a value
    untouched = long[long["untouched"]]
    assert untouched["value"].isna().all()


def test_participants_table(demo):
    engine, tokens = demo
    p = load.load_participants(engine, STUDY_ID)
    assert list(p.columns) == load.PARTICIPANT_COLUMNS
    assert len(p) == len(tokens) == 12
    done = p[p["status"] == "completed"]
    assert len(done) and (done["n_completed"] == done["n_planned"]).all() and (done["n_planned"] == 6).all()
    assert (done["duration_s"] >= 0).all()
    assert str(p["started_at"].dt.tz) == "UTC"


def test_load_trials_scores_and_lists_exclusions(demo):
    engine, _ = demo
    data = load.load_trials(engine, STUDY_ID)
    t = data.trials
    assert list(t.columns[:8]) == load.TRIAL_META_COLUMNS
    for col in ("valence", "arousal", "moved_1", "moved_4", "judged_source", "confidence", "moved"):
        assert col in t.columns
    # the scale score is the mean after reverse keying moved_4 on the 1-7 scale
    row = t.dropna(subset=["moved_1", "moved_2", "moved_3", "moved_4"]).iloc[0]
    expected = (row["moved_1"] + row["moved_2"] + row["moved_3"] + (8 - row["moved_4"])) / 4
    assert row["moved"] == pytest.approx(expected)
    assert t.groupby(["participant_id", "stimulus_id"]).size().max() == 1
    ex = data.excluded
    assert list(ex.columns[:5]) == load.EXCLUDED_COLUMNS
    assert ex["reason"].str.len().gt(0).all()
    # every excluded trial is really gone, and every short watch is listed
    trial_ex = ex[ex["level"] == "trial"]
    kept = set(zip(t["participant_id"], t["stimulus_id"]))
    assert not kept & set(zip(trial_ex["participant_id"], trial_ex["stimulus_id"]))
    assert (t["watched_share"].dropna() >= 0.8).all()
    assert not set(ex.loc[ex["level"] == "participant", "participant_id"]) & set(t["participant_id"])
    assert data.codebook is not None and "valence" in set(data.codebook["name"])


def test_withdrawn_and_pilot_participants_are_excluded_with_reasons(engine):
    simulate.simulate(engine, DEMO_STUDY, 3, seed=2)
    pilot = simulate.simulate(engine, STUDY_ID, 1, seed=3, is_pilot=True)
    state = store.get_state(engine, pilot[0])
    real = store.enrol(engine, STUDY_ID, prolific_pid="leaver")
    store.withdraw(engine, real.token)
    data = load.load_trials(engine, STUDY_ID)
    reasons = data.excluded.set_index("participant_id")["reason"].to_dict()
    assert reasons[real.pseudonym] == "withdrew from the study"
    assert "pilot" in reasons[state.pseudonym]
    assert state.pseudonym not in set(data.trials["participant_id"])
    with_pilot = load.load_trials(engine, STUDY_ID, include_pilot=True)
    assert state.pseudonym in set(with_pilot.trials["participant_id"])
    assert not data.long["is_pilot"].any()


def test_dataset_folder_round_trip(engine, tmp_path):
    from analysis.export import export_dataset

    simulate.simulate(engine, DEMO_STUDY, 8, effect=1.0, seed=9)
    folder = export_dataset(engine, STUDY_ID, tmp_path / "ds")
    from_db = load.load_trials(engine, STUDY_ID)
    from_folder = load.load_trials(folder)
    a = from_db.trials.sort_values(["participant_id", "position"]).reset_index(drop=True)
    b = from_folder.trials.sort_values(["participant_id", "position"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[b.columns.tolist()], b, check_dtype=False)
    assert from_folder.study.id == STUDY_ID
    assert str(from_folder.long["position"].dtype) == "Int64"  # integers with gaps stay integers
    assert len(from_folder.excluded) == len(from_db.excluded)
    # without Parquet the CSVs are read with the datapackage's types
    for p in folder.glob("*.parquet"):
        p.unlink()
    from_csv = load.load_trials(folder)
    c = from_csv.trials.sort_values(["participant_id", "position"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(b, c, check_dtype=False)


def test_reference_csv_loads():
    path = REFERENCE / "crossed_subset.csv"
    data = load.load_trials(path)
    raw = pd.read_csv(path)
    assert len(data.trials) == len(raw) and data.study is None
    assert set(data.trials.columns) == set(raw.columns)


def test_bad_inputs_give_clear_errors(engine, tmp_path):
    with pytest.raises(UserError, match="No study with id 'nope'"):
        load.load_trials(engine, "nope")
    with pytest.raises(UserError, match="no such dataset folder|not a study id"):
        load.load_trials(tmp_path / "missing" / "folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="scores.parquet or scores.csv is missing"):
        load.load_trials(empty)
    bad = tmp_path / "bad.csv"
    bad.write_text("participant_id,value\np1,3\n")
    with pytest.raises(UserError, match="stimulus_id, source") as info:
        load.load_trials(bad)
    assert "participant_id, value" in str(info.value)
    with pytest.raises(UserError, match="no such CSV"):
        load.load_trials(tmp_path / "none.csv")
    with pytest.raises(UserError, match="holds no study yet"):
        load.load_trials(engine)


def test_a_misspelt_required_column_is_pointed_at(tmp_path):
    path = tmp_path / "typo.csv"
    pd.DataFrame({"participant_id": ["p1"], "stimulus_Id": ["h1"], "sourse": ["human"], "valence": [5]}).to_csv(
        path, index=False)
    with pytest.raises(UserError) as exc:
        load.load_trials(path)
    text = str(exc.value)
    assert "column stimulus_id: required (is 'stimulus_Id' a typo for it?)" in text
    assert "column source: required (is 'sourse' a typo for it?)" in text


def test_a_study_folder_or_a_video_is_not_taken_for_data(tmp_path):
    (tmp_path / "study.yaml").write_text("title: x\n")
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    with pytest.raises(UserError) as exc:
        load.load_trials(tmp_path)
    assert f"give the study file (e.g. {tmp_path / 'study.yaml'}) or the study id" in str(exc.value)
    with pytest.raises(UserError) as exc:
        load.load_trials(tmp_path / "clip.mp4")
    assert "cannot analyse a .mp4 file" in str(exc.value) and "nothing found" not in str(exc.value)


def _ratings_text(sep: str = ",", decimal: str = ".") -> str:
    rows = [("p1", "h1", "human", "5.5"), ("p1", "a1", "ai", "3"), ("Jérôme", "h1", "human", "7.25")]
    lines = [sep.join(("participant_id", "stimulus_id", "source", "valence"))]
    lines += [sep.join((p, c, s, v.replace(".", decimal))) for p, c, s, v in rows]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("sep,decimal,encoding,note", [
    (",", ".", "utf-8", None),
    (",", ".", "utf-8-sig", None),  # Excel's "CSV UTF-8" puts a byte order mark first
    (";", ",", "utf-8", "decimal commas"),  # Excel in a German or French locale
    (";", ".", "utf-8", None),
    ("\t", ".", "utf-16", None),  # Excel's "Unicode text"
    (",", ".", "cp1252", "read as cp1252"),  # Excel on Windows, "CSV (comma delimited)"
    ("sep=;", ",", "utf-8", "decimal commas"),  # Excel's hint line before the header
])
def test_csvs_as_other_software_writes_them_are_read(tmp_path, sep, decimal, encoding, note):
    path = tmp_path / "ratings.csv"
    text = _ratings_text(sep[-1], decimal)
    if sep.startswith("sep="):
        text = sep + "\n" + text
    path.write_bytes(text.replace("\n", "\r\n").encode(encoding))
    data = load.load_trials(path)
    assert data.trials["valence"].tolist() == [5.5, 3.0, 7.25]
    assert data.trials["participant_id"].tolist() == ["p1", "p1", "Jérôme"]
    assert list(data.trials.columns) == ["participant_id", "stimulus_id", "source", "valence"]
    assert any(note in n for n in data.notes) if note else not data.notes


def test_a_csv_that_cannot_be_trusted_is_refused_with_what_and_where(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("participant_id,stimulus_id,source,valence,valence\np1,h1,human,5,6\n")
    with pytest.raises(UserError, match="appears more than once") as exc:
        load.load_trials(path)
    assert "column 'valence': is column 4 and column 5" in str(exc.value)
    for body, what in ((b"", "the file is empty"), (b"\x00\x01PK\x03\x04 zip", "binary data"),
                       (b"participant_id,\x81\x8d\n", "neither UTF-8 nor Windows-1252")):
        path.write_bytes(body)
        with pytest.raises(UserError, match="cannot be read as CSV") as exc:
            load.load_trials(path)
        assert what in str(exc.value)


def _analysis_imports() -> dict[str, set[str]]:
    """module -> analysis modules it imports (at the top or inside a function)."""
    import ast

    folder = Path(load.__file__).parent
    graph = {}
    for path in folder.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "analysis":
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("analysis."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("analysis.")}
        graph[path.stem] = found - {path.stem}
    return graph


def test_analysis_modules_import_each_other_without_cycles():
    graph = _analysis_imports()
    assert "export" not in graph["load"] and "load" in graph["export"]

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))

    cycles = sorted(m for m in graph if reaches(m, m))
    assert not cycles, f"import cycles through {cycles}"


def test_every_database_read_of_analysis_goes_through_load():
    folder = Path(load.__file__).parent
    for path in folder.glob("*.py"):
        if path.name == "load.py":
            continue
        text = path.read_text(encoding="utf-8")
        for query in (".connect(", "sa.select(", "import sqlalchemy as", ".execute("):
            assert query not in text, f"{path.name} queries the database itself ({query}); use analysis.load"
