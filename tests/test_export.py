"""analysis.export: the dataset folder of the demo study after 30 simulated participants.

The folder must pass Frictionless validation, read back into pandas with the declared types
(CSV read with the datapackage schema equals the Parquet file), document every column in the
codebook, and hold no token or Prolific id outside the payments file.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import zipfile
from argparse import Namespace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from analysis import export, load
from study import simulate, store
from study.errors import UserError

from conftest import DEMO_STUDY

STUDY_ID = "kuleshov-demo"
FRICTIONLESS = Path(sys.executable).parent / "frictionless"


@pytest.fixture
def exported(engine, tmp_path):
    simulate.simulate(engine, DEMO_STUDY, 30, effect=1.0, seed=11)
    return engine, export.export_dataset(engine, STUDY_ID, tmp_path / "dataset")


def _identifiers(engine) -> set[str]:
    c = store.participants.c
    with engine.connect() as conn:
        rows = conn.execute(store.participants.select().with_only_columns(c.token, c.prolific_pid)).all()
    return {v for row in rows for v in row if v}


def test_frictionless_validate_passes(exported):
    _, folder = exported
    from frictionless import Package

    report = Package(folder / "datapackage.json").validate()
    assert report.valid, report.flatten(["rowNumber", "fieldName", "message"])[:10]
    # and the command researchers are told to run
    out = subprocess.run([str(FRICTIONLESS), "validate", "datapackage.json"], cwd=folder, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_files_present_and_round_trip_with_declared_types(exported):
    engine, folder = exported
    package = json.loads((folder / "datapackage.json").read_text())
    listed = {r["path"] for r in package["resources"]}
    assert listed == {f"{n}.csv" for n in [*export.DATA_FILES, "codebook"]}
    assert export.PAYMENTS_FILE not in listed
    for name in export.DATA_FILES:
        csv = load.read_csv_typed(folder, name)
        parquet = pd.read_parquet(folder / f"{name}.parquet")
        assert list(csv.columns) == list(parquet.columns), name
        schema = next(r for r in package["resources"] if r["path"] == f"{name}.csv")["schema"]["fields"]
        arrow = pq.read_schema(folder / f"{name}.parquet")
        for field in schema:
            check = {"integer": pa.types.is_integer, "number": pa.types.is_floating, "boolean": pa.types.is_boolean,
                     "datetime": pa.types.is_timestamp, "string": pa.types.is_string}[field["type"]]
            assert check(arrow.field(field["name"]).type), (name, field, arrow.field(field["name"]).type)
            if field["type"] == "integer":  # pandas reads nullable integers from Parquet as floats
                parquet[field["name"]] = parquet[field["name"]].astype("Int64")
            if field["type"] == "boolean":  # ... and an all-empty boolean column as objects (None)
                parquet[field["name"]] = parquet[field["name"]].astype("boolean")
        pd.testing.assert_frame_equal(csv, parquet, check_dtype=False, obj=name)
    scores = pd.read_parquet(folder / "scores.parquet")
    participants = pd.read_parquet(folder / "participants.parquet")
    responses = pd.read_parquet(folder / "responses.parquet")
    assert len(participants) == 30
    with engine.connect() as conn:
        n_answers = conn.execute(store.responses.select().with_only_columns(store.responses.c.id)).all()
    assert len(responses) == len(n_answers)
    assert set(scores["participant_id"]) <= set(participants["participant_id"])
    assert scores.groupby(["participant_id", "stimulus_id"]).size().max() == 1
    assert {"valence", "moved", "judged_source"} <= set(scores.columns)
    stimuli = pd.read_parquet(folder / "stimuli.parquet")
    assert stimuli["sha256"].str.fullmatch(r"[0-9a-f]{64}").all() and stimuli["licence"].notna().all()


def test_every_column_is_in_the_codebook(exported):
    _, folder = exported
    codebook = pd.read_csv(folder / "codebook.csv", keep_default_na=False)
    documented = set(zip(codebook["file"], codebook["name"]))
    missing = []
    for path in folder.glob("*.csv"):
        if path.name == export.PAYMENTS_FILE:
            continue
        for col in pd.read_csv(path, nrows=0).columns:
            if (path.stem, col) not in documented:
                missing.append(f"{path.name}: {col}")
    assert not missing, f"columns missing from codebook.csv: {missing}"
    assert (codebook["description"].str.len() > 10).all()
    assert codebook["type"].isin(["string", "integer", "number", "boolean", "datetime"]).all()
    # every item id in the long answers is documented as an item
    items = set(codebook.loc[codebook["kind"] == "item", "name"])
    responses = pd.read_parquet(folder / "responses.parquet")
    assert set(responses["item_id"]) <= items


def test_no_identifiers_outside_payments_file(exported):
    engine, folder = exported
    secrets = _identifiers(engine)
    assert len(secrets) >= 60  # 30 tokens and 30 simulated Prolific ids
    for path in folder.iterdir():
        if path.name == export.PAYMENTS_FILE:
            continue
        blob = path.read_bytes()
        leaked = [s for s in secrets if s.encode() in blob]
        assert not leaked, f"{path.name} contains {leaked[:3]}"
    pay = pd.read_csv(folder / export.PAYMENTS_FILE)
    assert set(pay["prolific_pid"]) <= secrets
    completed = pay[pay["status"] == "completed"]
    assert len(completed) and (completed["completion_code"] == "KULDEMO1").all()
    assert pay.loc[pay["status"] != "completed", "completion_code"].isna().all()


def test_study_file_hash_and_provenance(exported):
    engine, folder = exported
    info = store.get_study(engine, STUDY_ID)
    assert (folder / "study.yaml").read_bytes() == DEMO_STUDY.read_bytes()
    lines = [line.split() for line in (folder / "study_hash.txt").read_text().splitlines()]
    digest = hashlib.sha256(DEMO_STUDY.read_bytes()).hexdigest()
    assert lines == [[digest, "study.yaml"], [digest, "study_v1.yaml"]] and digest == info.spec_hash
    assert (folder / "study_v1.yaml").read_bytes() == DEMO_STUDY.read_bytes()
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["software"]["kuleshov"] and prov["software"]["python"].count(".") == 2
    assert prov["rows"]["participants"] == 30
    desc = json.loads((folder / "dataset_description.json").read_text())
    assert desc["@context"] == "https://schema.org/" and desc["@type"] == "Dataset"
    names = {v["name"] for v in desc["variableMeasured"]}
    assert {"valence", "moved", "participant_id", "age"} <= names
    with engine.connect() as conn:
        actions = conn.execute(store.audit_log.select().with_only_columns(store.audit_log.c.action)).scalars().all()
    assert "export" in actions


def test_deleted_participant_is_gone_from_export(engine, tmp_path):
    tokens = simulate.simulate(engine, DEMO_STUDY, 5, seed=4)
    victim = store.get_state(engine, tokens[0])
    pid = victim.prolific_pid
    before = export.export_dataset(engine, STUDY_ID, tmp_path / "before")
    assert victim.pseudonym in set(pd.read_parquet(before / "participants.parquet")["participant_id"])
    store.delete_participant(engine, STUDY_ID, victim.pseudonym, actor="test")
    after = export.export_dataset(engine, STUDY_ID, tmp_path / "after")
    for path in after.iterdir():
        blob = path.read_bytes()
        assert pid.encode() not in blob and victim.token.encode() not in blob, path.name
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
            if "participant_id" in table:
                assert victim.pseudonym not in set(table["participant_id"]), path.name
    assert victim.pseudonym not in set(pd.read_csv(after / export.PAYMENTS_FILE)["participant_id"])
    assert victim.pseudonym not in set(load.read_csv_typed(after, "responses")["participant_id"])
    with engine.connect() as conn:
        audit = conn.execute(store.audit_log.select().where(store.audit_log.c.action == "participant_deleted")).all()
    assert len(audit) == 1 and audit[0].participant_ref == store.participant_ref(STUDY_ID, victim.pseudonym)


def test_zip_cli_and_refusals(tmp_path, sqlite_url):
    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    simulate.simulate(engine, DEMO_STUDY, 3, seed=1)
    data = export.export_zip(engine, STUDY_ID)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
    assert f"{STUDY_ID}/datapackage.json" in names and f"{STUDY_ID}/scores.parquet" in names
    out = tmp_path / "cli"
    assert export.cli_export(Namespace(study=str(DEMO_STUDY), out=str(out), url=sqlite_url, include_pilot=False)) == 0
    assert (out / "datapackage.json").is_file()
    # exporting again replaces a Kuleshov dataset folder ...
    export.export_dataset(engine, STUDY_ID, out)
    # ... but never a folder holding something else
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.docx").write_text("precious")
    with pytest.raises(UserError, match="not a Kuleshov dataset folder"):
        export.export_dataset(engine, STUDY_ID, other)
    assert (other / "thesis.docx").read_text() == "precious"
    with pytest.raises(UserError, match="No study with id"):
        export.export_dataset(engine, "missing-study", tmp_path / "x")
    engine.dispose()


FORMULAS = ['=HYPERLINK("http://x","y")', "-2+3", "@SUM(A1)", "\tx", "\r=1", "+1", "'=already quoted"]
SPREADSHEET_RUNS = r"^[=+\-@\t\r]"


def _text_columns(folder, path) -> list[str]:
    """The string columns of a CSV of the folder (the payments file: all but its time column)."""
    if path.name == export.PAYMENTS_FILE:
        return [c for c in pd.read_csv(path, nrows=0).columns if c not in ("completed_at", "is_pilot")]
    package = json.loads((folder / "datapackage.json").read_text())
    fields = next(r for r in package["resources"] if r["path"] == path.name)["schema"]["fields"]
    return [f["name"] for f in fields if f["type"] == "string"]


def test_spreadsheet_formulas_are_neutralised_in_every_csv_and_verbatim_in_parquet(engine, tmp_path):
    """CSV injection: free text such as =HYPERLINK(...) must not run when a CSV is opened in a
    spreadsheet; numbers (negative ones too) stay numbers, Parquet keeps the text as typed."""
    simulate.simulate(engine, DEMO_STUDY, 6, effect=1.0, seed=5)
    r, p = store.responses.c, store.participants.c
    with engine.begin() as conn:
        texts = conn.execute(sa.select(r.id).where(r.value_text.is_not(None)).order_by(r.id)).scalars().all()
        for rid, payload in zip(texts, FORMULAS):
            conn.execute(store.responses.update().where(r.id == rid).values(value_text=payload))
        t = store.trials.c
        numeric = conn.execute(sa.select(r.id).join(store.trials, t.id == r.trial_id)
                               .where(r.item_id == "valence", r.value_num.is_not(None), t.position >= 1)
                               .order_by(r.id)).first()  # a main clip's rating, so it is in scores too
        conn.execute(store.responses.update().where(r.id == numeric.id).values(value_num=-2.5))
        people = conn.execute(sa.select(p.id).order_by(p.id)).scalars().all()
        conn.execute(store.participants.update().where(p.id == people[0]).values(prolific_pid="=1+1"))
        conn.execute(store.participants.update().where(p.id == people[1]).values(prolific_pid="@SUM(A1)"))
    folder = export.export_dataset(engine, STUDY_ID, tmp_path / "dataset")
    from frictionless import Package

    report = Package(folder / "datapackage.json").validate()
    assert report.valid, report.flatten(["rowNumber", "fieldName", "message"])[:10]

    risky = []
    for path in sorted(folder.glob("*.csv")):
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        for col in _text_columns(folder, path):
            risky += [f"{path.name}:{col}={v!r}" for v in raw[col] if re.match(SPREADSHEET_RUNS, v)]
    assert not risky, risky
    responses_csv = pd.read_csv(folder / "responses.csv", dtype=str, keep_default_na=False)
    assert set(FORMULAS) <= {v[1:] for v in responses_csv["value_text"] if v.startswith("'")}
    assert "''=already quoted" in set(responses_csv["value_text"])  # so the quote is not lost on reading back
    assert "-2.5" in set(responses_csv["value"])  # a number column: a negative number, not text
    assert "-2.5" in set(pd.read_csv(folder / "scores.csv", dtype=str)["valence"])
    payments = pd.read_csv(folder / export.PAYMENTS_FILE, dtype=str)
    assert {"'=1+1", "'@SUM(A1)"} <= set(payments["prolific_pid"])

    parquet = pd.read_parquet(folder / "responses.parquet")
    assert set(FORMULAS) <= set(parquet["value_text"].dropna())  # verbatim
    assert -2.5 in set(parquet["value"].dropna())
    back = load.read_csv_typed(folder, "responses")  # the loader undoes the quote
    assert set(FORMULAS) <= set(back["value_text"].dropna())


def test_result_tables_and_dashboard_downloads_are_neutralised_too(tmp_path):
    from analysis import results
    from analysis.formatting import csv_safe

    table = pd.DataFrame({"reason": ["=cmd|' /C calc'!A0", "ok"], "estimate": [-0.5, 1.0]})
    path = results.write_tables({"primary": table}, tmp_path)[0]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[1:] == ["'=cmd|' /C calc'!A0,-0.5", "ok,1.0"]
    pay = pd.DataFrame({"participant_id": ["P0001"], "prolific_pid": ["+SUM(1)"], "status": ["completed"],
                        "completed_at": pd.to_datetime(["2026-01-02T03:04:05Z"]), "completion_code": ["-X"]})
    text = export.payments_csv(pay)
    assert text.splitlines()[1] == "P0001,'+SUM(1),completed,2026-01-02T03:04:05Z,'-X"
    assert csv_safe(pay)["prolific_pid"].iloc[0] == "'+SUM(1)"
