"""Researcher accounts: hashing, lockout, deletion, roles and study access (SQLite and PostgreSQL),
the actions the pages call (refused for a viewer when called directly), and the CLI."""

from __future__ import annotations

import io
import shutil

import pytest
import sqlalchemy as sa

import cli
from app_pages import actions
from study import store
from study.errors import UserError
from conftest import DEMO_STUDY

PW = "correct horse battery"


def _audit_rows(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(store.audit_log.c.actor, store.audit_log.c.action, store.audit_log.c.study_id)
                            .order_by(store.audit_log.c.id)).all()


@pytest.fixture
def demo(engine):
    return store.register_study(engine, DEMO_STUDY, actor="test")


def test_password_is_stored_only_as_an_argon2_hash(engine):
    store.add_researcher(engine, "ana", PW, "owner")
    with engine.connect() as conn:
        row = conn.execute(sa.select(store.researchers)).mappings().one()
        dump = " ".join(str(v) for t in ("researchers", "audit_log")
                        for r in conn.execute(sa.text(f"SELECT * FROM {t}")).all() for v in r)
    assert row["password_hash"].startswith("$argon2id$")
    assert PW not in dump and "horse" not in dump
    assert row["role"] == "owner" and row["locked"] is False and row["failed_logins"] == 0
    assert store.login(engine, "ana", PW).researcher == store.Researcher("ana", "owner")


def test_bad_input_is_refused_with_a_sentence(engine):
    store.add_researcher(engine, "ana", PW, "owner")
    with pytest.raises(UserError, match="already exists"):
        store.add_researcher(engine, "ana", PW, "editor")
    with pytest.raises(UserError, match="role 'boss'"):
        store.add_researcher(engine, "bo", PW, "boss")
    with pytest.raises(UserError, match="empty"):
        store.add_researcher(engine, "bo", "", "viewer")
    with pytest.raises(UserError, match="too short"):
        store.add_researcher(engine, "bo", "abc123", "viewer")
    with pytest.raises(UserError, match="easy to guess"):
        store.add_researcher(engine, "bo", "aaaaaaaaaaaa", "viewer")
    with pytest.raises(UserError, match="username"):
        store.add_researcher(engine, "Bad Name!", PW, "viewer")
    assert [r["username"] for r in store.list_researchers(engine)] == ["ana"]


def test_lockout_after_failed_logins_and_unlock(engine):
    store.add_researcher(engine, "ed", PW, "editor")
    for i in range(store.MAX_FAILED_LOGINS):
        result = store.login(engine, "ed", "wrong password!")
        assert not result.ok and result.message == store.LOGIN_FAILED_MESSAGE
    (row,) = store.list_researchers(engine)
    assert row["locked"] is True and row["failed_logins"] == store.MAX_FAILED_LOGINS
    # the right password no longer helps, and the message does not say why
    locked = store.login(engine, "ed", PW)
    assert not locked.ok and locked.message == store.LOGIN_FAILED_MESSAGE
    assert store.login(engine, "nobody", PW).message == store.LOGIN_FAILED_MESSAGE
    store.set_locked(engine, "ed", False, actor="ana")
    assert store.login(engine, "ed", PW).ok
    (row,) = store.list_researchers(engine)
    assert row["failed_logins"] == 0 and row["last_login_at"] is not None
    actions_seen = [(a, act) for a, act, _ in _audit_rows(engine)]
    assert actions_seen.count(("ed", "login_failed")) == store.MAX_FAILED_LOGINS
    assert ("ed", "login_refused_locked") in actions_seen and ("ana", "researcher_unlocked") in actions_seen
    assert ("researcher-login", "login_failed") in actions_seen  # the unknown name
    assert ("ed", "login") in actions_seen


def test_a_correct_login_resets_the_count(engine):
    store.add_researcher(engine, "ed", PW, "editor")
    for _ in range(store.MAX_FAILED_LOGINS - 1):
        store.login(engine, "ed", "nope nope nope")
    assert store.login(engine, "ed", PW).ok
    for _ in range(store.MAX_FAILED_LOGINS - 1):
        store.login(engine, "ed", "nope nope nope")
    assert store.login(engine, "ed", PW).ok


def test_deleted_account_cannot_log_in_and_its_session_is_refused(engine, demo):
    store.add_researcher(engine, "ana", PW, "owner")
    store.add_researcher(engine, "ed", PW, "editor")
    store.grant(engine, "ed", demo)
    ed = store.login(engine, "ed", PW).researcher
    store.delete_researcher(engine, "ed", actor="ana")
    assert not store.login(engine, "ed", PW).ok
    with pytest.raises(store.Forbidden, match="no longer exists"):
        actions.set_status(engine, ed, demo, "paused")
    with engine.connect() as conn:  # access rows go with the account
        assert conn.execute(sa.select(sa.func.count()).select_from(store.researcher_study_access)).scalar_one() == 0
    store.add_researcher(engine, "vic", PW, "viewer")
    with pytest.raises(UserError, match="last owner"):
        store.delete_researcher(engine, "ana")
    assert [r["username"] for r in store.list_researchers(engine)] == ["ana", "vic"]


def test_locking_an_account_stops_its_open_session(engine, demo):
    store.add_researcher(engine, "ed", PW, "editor")
    store.grant(engine, "ed", demo)
    ed = store.login(engine, "ed", PW).researcher
    actions.set_status(engine, ed, demo, "paused")
    store.set_locked(engine, "ed", True)
    with pytest.raises(store.Forbidden, match="locked"):
        actions.set_status(engine, ed, demo, "open")
    assert store.study_status(engine, demo) == "paused"


def test_roles_and_study_access_are_enforced_by_the_actions(engine, demo, tmp_path):
    store.add_researcher(engine, "ana", PW, "owner")
    store.add_researcher(engine, "ed", PW, "editor")
    store.add_researcher(engine, "vic", PW, "viewer")
    ana, ed, vic = (store.login(engine, n, PW).researcher for n in ("ana", "ed", "vic"))
    # without a grant, editor and viewer see nothing and may do nothing with the study
    assert [r["id"] for r in actions.studies(engine, ana)] == [demo]
    assert actions.studies(engine, ed) == [] and actions.studies(engine, vic) == []
    with pytest.raises(store.Forbidden, match="no access"):
        actions.export(engine, vic, demo)
    with pytest.raises(store.Forbidden, match="no access"):
        actions.set_status(engine, ed, demo, "closed")
    store.grant(engine, "ed", demo, actor="ana")
    store.grant(engine, "vic", demo, actor="ana")
    assert [r["id"] for r in actions.studies(engine, vic)] == [demo]
    # the viewer: may export and view, never change
    assert actions.export(engine, vic, demo)[:2] == b"PK"
    actions.view(engine, vic, demo)
    for call in (lambda: actions.set_status(engine, vic, demo, "closed"),
                 lambda: actions.register(engine, vic, str(DEMO_STUDY)),
                 lambda: actions.delete_participant(engine, vic, demo, "P0001")):
        with pytest.raises(store.Forbidden, match="viewer 'vic' may not"):
            call()
    assert store.study_status(engine, demo) == "open"
    # the editor: runs the study; the audit log names them
    actions.set_status(engine, ed, demo, "closed")
    assert store.study_status(engine, demo) == "closed"
    assert not store.allowed(engine, ed, "accounts") and store.allowed(engine, ana, "accounts")
    rows = _audit_rows(engine)
    assert ("ed", "study_status", demo) in rows
    assert ("vic", "export", demo) in rows
    assert ("ana", "access_granted", demo) in rows
    assert not any(actor == "vic" and action == "study_status" for actor, action, _ in rows)


def test_editor_registering_a_new_study_gets_access_to_it(engine, tmp_path):
    folder = tmp_path / "demo"
    shutil.copytree(DEMO_STUDY.parent, folder)
    store.add_researcher(engine, "ed", PW, "editor")
    ed = store.login(engine, "ed", PW).researcher
    study_id = actions.register(engine, ed, str(folder / "study.yaml"))
    assert [r["id"] for r in actions.studies(engine, ed)] == [study_id]
    assert ("ed", "study_registered", study_id) in _audit_rows(engine)
    with pytest.raises(UserError, match="no such file"):
        actions.register(engine, ed, str(tmp_path / "missing.yaml"))


def test_shared_password_session_stops_once_accounts_exist(engine, demo):
    actions.set_status(engine, store.SHARED, demo, "paused")
    assert ("researcher", "study_status", demo) in _audit_rows(engine)
    store.add_researcher(engine, "ana", PW, "owner")
    with pytest.raises(store.Forbidden, match="shared password no longer applies"):
        actions.set_status(engine, store.SHARED, demo, "open")


# --------------------------------------------------------------------------- CLI


def _cli(monkeypatch, capsys, argv, stdin=""):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_add_list_lock_grant_delete(sqlite_url, monkeypatch, capsys):
    url = ["--url", sqlite_url]
    code, out, _ = _cli(monkeypatch, capsys, ["researcher", "add", "ana", "--role", "owner", "--password-stdin", *url],
                        PW + "\n")
    assert code == 0 and "added owner 'ana'" in out and "now ask for a username" in out
    assert PW not in out
    code, _, err = _cli(monkeypatch, capsys, ["researcher", "add", "ana", "--role", "owner", "--password-stdin", *url],
                        PW + "\n")
    assert code == 2 and "already exists" in err
    code, _, err = _cli(monkeypatch, capsys, ["researcher", "add", "bo", "--role", "admin", "--password-stdin", *url],
                        PW + "\n")
    assert code == 2 and "role 'admin'" in err and "owner, editor, viewer" in err
    code, _, err = _cli(monkeypatch, capsys, ["researcher", "add", "bo", "--password-stdin", *url], PW + "\n")
    assert code == 2 and "needs --role" in err
    code, _, err = _cli(monkeypatch, capsys, ["researcher", "add", "--role", "viewer", *url])
    assert code == 2 and "needs a username" in err
    code, _, err = _cli(monkeypatch, capsys, ["researcher", "add", "bo", "--role", "viewer", "--password-stdin", *url],
                        "\n")
    assert code == 2 and "password is empty" in err
    code, _, err = _cli(monkeypatch, capsys, ["researcher", "add", "bo", "--role", "viewer", *url])
    assert code == 2 and "--password-stdin" in err  # no terminal: never hangs on a prompt
    code, _, _ = _cli(monkeypatch, capsys, ["researcher", "add", "bo", "--role", "viewer", "--password-stdin", *url],
                      "another good secret\n")
    assert code == 0
    engine = store.make_engine(sqlite_url)
    try:
        demo = store.register_study(engine, DEMO_STUDY)
    finally:
        engine.dispose()
    assert _cli(monkeypatch, capsys, ["researcher", "grant", "bo", demo, *url])[0] == 0
    code, _, err = _cli(monkeypatch, capsys, ["researcher", "grant", "bo", "nope", *url])
    assert code == 2 and "no study 'nope'" in err
    assert _cli(monkeypatch, capsys, ["researcher", "lock", "bo", *url])[0] == 0
    code, out, _ = _cli(monkeypatch, capsys, ["researcher", "list", *url])
    lines = out.strip().splitlines()
    assert lines[0].split("\t")[:3] == ["ana", "owner", "active"]
    assert lines[1].split("\t")[:3] == ["bo", "viewer", "LOCKED"] and lines[1].endswith(demo)
    code, _, err = _cli(monkeypatch, capsys, ["researcher", "unlock", "zed", *url])
    assert code == 2 and "no researcher account named 'zed'" in err
    assert _cli(monkeypatch, capsys, ["researcher", "delete", "bo", *url])[0] == 0
    code, out, _ = _cli(monkeypatch, capsys, ["researcher", "list", *url])
    assert [line.split("\t")[0] for line in out.strip().splitlines()] == ["ana"]
    engine = store.make_engine(sqlite_url)
    try:
        assert not store.login(engine, "bo", "another good secret").ok
        assert store.login(engine, "ana", PW).ok
    finally:
        engine.dispose()


def test_only_owners_manage_accounts_and_never_their_own(engine, demo):
    with pytest.raises(store.Forbidden, match="command line"):  # single-password mode: the first one by CLI
        actions.accounts(engine, store.SHARED)
    store.add_researcher(engine, "ana", PW, "owner")
    store.add_researcher(engine, "ed", PW, "editor")
    ana, ed = store.Researcher("ana", "owner"), store.Researcher("ed", "editor")
    with pytest.raises(store.Forbidden, match="editor 'ed' may not manage accounts"):
        actions.add_account(engine, ed, "eve", PW, "owner")
    with pytest.raises(store.Forbidden):
        actions.lock_account(engine, ed, "ana", True)
    with pytest.raises(store.Forbidden, match="shared password no longer applies"):
        actions.accounts(engine, store.SHARED)
    with pytest.raises(UserError, match="your own account"):
        actions.delete_account(engine, ana, "ana")
    actions.add_account(engine, ana, "vic", PW, "viewer")
    actions.grant_access(engine, ana, "vic", demo)
    actions.lock_account(engine, ana, "ed", True)
    assert {r["username"]: (r["role"], r["locked"], r["studies"]) for r in actions.accounts(engine, ana)} == {
        "ana": ("owner", False, []), "ed": ("editor", True, []), "vic": ("viewer", False, [demo])}
    actions.grant_access(engine, ana, "vic", demo, revoke=True)
    actions.delete_account(engine, ana, "ed")
    assert [r["username"] for r in store.list_researchers(engine)] == ["ana", "vic"]
    rows = _audit_rows(engine)
    for action in ("researcher_added", "access_granted", "researcher_locked", "access_revoked", "researcher_deleted"):
        assert ("ana", action) in [(a, act) for a, act, _ in rows], action
