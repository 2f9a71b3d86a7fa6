"""Researcher accounts: logins, roles, access per study, and the permission check every action makes.

- Passwords are hashed with argon2id (argon2-cffi's PasswordHasher defaults); the password itself
  is never stored or logged. A login with an unknown name still runs one verification against a
  dummy hash, so the time taken does not tell which names exist.
- After MAX_FAILED_LOGINS wrong passwords in a row the account is locked; only an owner can
  unlock it (`kuleshov researcher unlock NAME`). A correct login resets the count.
- Roles: owner (everything, every study), editor (register, open, pause, close studies and
  delete a participant's data, in the studies it has access to), viewer (dashboard and export of
  the studies it has access to). An editor who registers a new study gets access to it.
- With no account at all, the single shared password (KULESHOV_RESEARCHER_PASSWORD) logs in as
  SHARED, an owner named "researcher"; once an account exists the shared password no longer works.

`authorize` re-reads the account on every call, so locking, deleting or demoting a researcher
takes effect on their next click, not at their next login.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from study.errors import UserError
from study.store.engine import _read, _write, make_engine, upgrade
from study.store.studies import _audit
from study.store.tables import RESEARCHER_ROLES, researcher_study_access, researchers, studies, utcnow

MAX_FAILED_LOGINS = 5
MIN_PASSWORD_CHARS = 10
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,49}$")
# role -> actions it may take; "view": dashboard and export, "change": register and run studies.
PERMISSIONS = {
    "owner": {"view", "change", "register", "accounts", "all_studies"},
    "editor": {"view", "change", "register"},
    "viewer": {"view"},
}
ACTION_WORDS = {"view": "see", "change": "change", "register": "register studies", "accounts": "manage accounts"}
LOGIN_FAILED_MESSAGE = (f"Wrong username or password. After {MAX_FAILED_LOGINS} failed attempts an account is "
                        "locked; an owner can unlock it with `kuleshov researcher unlock NAME`.")


class Forbidden(UserError):
    """The researcher's role or study access does not allow the action."""


@dataclass(frozen=True)
class Researcher:
    username: str
    role: str
    account: bool = True  # False: logged in with the single shared password


SHARED = Researcher("researcher", "owner", account=False)


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    researcher: Researcher | None
    message: str


_HASHER = None
_DUMMY_HASH = None


def _hasher():
    global _HASHER, _DUMMY_HASH
    if _HASHER is None:
        from argon2 import PasswordHasher

        _HASHER = PasswordHasher()
        _DUMMY_HASH = _HASHER.hash("kuleshov-no-such-account")
    return _HASHER


def _verify(hashed: str | None, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    ph = _hasher()
    try:
        return ph.verify(hashed or _DUMMY_HASH, password) and hashed is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_username(username: str) -> str:
    name = (username or "").strip()
    if not USERNAME_RE.match(name):
        raise UserError(f"username {username!r}: use 2 to 50 characters, lower-case letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit")
    return name


def check_role(role: str) -> str:
    if role not in RESEARCHER_ROLES:
        raise UserError(f"role {role!r}: must be one of {', '.join(RESEARCHER_ROLES)}")
    return role


def check_password(password: str, username: str = "") -> str:
    if not password:
        raise UserError("the password is empty")
    if len(password) < MIN_PASSWORD_CHARS:
        raise UserError(f"the password is too short ({len(password)} characters; at least {MIN_PASSWORD_CHARS})")
    if len(set(password)) < 4 or (username and username.lower() in password.lower()):
        raise UserError("the password is too easy to guess (it repeats a few characters or contains the username)")
    return password


def _row(conn, username: str):
    return conn.execute(sa.select(researchers).where(researchers.c.username == username)).mappings().first()


def _must_row(conn, username: str):
    row = _row(conn, username)
    if row is None:
        raise UserError(f"no researcher account named {username!r} (see `kuleshov researcher list`)")
    return row


# --------------------------------------------------------------------------- accounts


def has_accounts(engine: Engine) -> bool:
    with _read(engine) as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(researchers)).scalar_one() > 0


def add_researcher(engine: Engine, username: str, password: str, role: str, actor: str = "cli") -> Researcher:
    name = check_username(username)
    check_role(role)
    check_password(password, name)
    hashed = _hasher().hash(password)
    with _write(engine) as conn:
        if _row(conn, name) is not None:
            raise UserError(f"a researcher named {name!r} already exists")
        conn.execute(researchers.insert().values(username=name, password_hash=hashed, role=role, locked=False,
                                                 failed_logins=0, created_at=utcnow()))
        _audit(conn, actor, "researcher_added", detail={"username": name, "role": role})
    return Researcher(name, role)


def list_researchers(engine: Engine) -> list[dict]:
    """Every account without its hash: username, role, locked, failed_logins, created/last login, studies."""
    with _read(engine) as conn:
        rows = conn.execute(sa.select(researchers).order_by(researchers.c.username)).mappings().all()
        access = conn.execute(sa.select(researcher_study_access.c.researcher_id, researcher_study_access.c.study_id)
                              .order_by(researcher_study_access.c.study_id)).all()
    by_id: dict[int, list[str]] = {}
    for rid, sid in access:
        by_id.setdefault(rid, []).append(sid)
    return [{"username": r["username"], "role": r["role"], "locked": bool(r["locked"]),
             "failed_logins": r["failed_logins"], "created_at": r["created_at"], "last_login_at": r["last_login_at"],
             "studies": by_id.get(r["id"], [])} for r in rows]


def set_locked(engine: Engine, username: str, locked: bool, actor: str = "cli") -> None:
    with _write(engine) as conn:
        row = _must_row(conn, username)
        conn.execute(researchers.update().where(researchers.c.id == row["id"])
                     .values(locked=locked, failed_logins=0 if not locked else row["failed_logins"]))
        _audit(conn, actor, "researcher_locked" if locked else "researcher_unlocked", detail={"username": username})


def delete_researcher(engine: Engine, username: str, actor: str = "cli") -> None:
    with _write(engine) as conn:
        row = _must_row(conn, username)
        if row["role"] == "owner":
            owners = conn.execute(sa.select(sa.func.count()).select_from(researchers).where(
                researchers.c.role == "owner", researchers.c.id != row["id"])).scalar_one()
            others = conn.execute(sa.select(sa.func.count()).select_from(researchers).where(
                researchers.c.id != row["id"])).scalar_one()
            if owners == 0 and others > 0:
                raise UserError(f"{username!r} is the last owner; add another owner first, or nobody could "
                                "manage the remaining accounts")
        conn.execute(researcher_study_access.delete().where(researcher_study_access.c.researcher_id == row["id"]))
        conn.execute(researchers.delete().where(researchers.c.id == row["id"]))
        _audit(conn, actor, "researcher_deleted", detail={"username": username})


def grant(engine: Engine, username: str, study_id: str, actor: str = "cli", revoke: bool = False) -> None:
    with _write(engine) as conn:
        row = _must_row(conn, username)
        if conn.execute(sa.select(studies.c.id).where(studies.c.id == study_id)).first() is None:
            raise UserError(f"no study {study_id!r} in the database (see `kuleshov study list`)")
        where = (researcher_study_access.c.researcher_id == row["id"]) & (researcher_study_access.c.study_id == study_id)
        exists = conn.execute(sa.select(researcher_study_access.c.study_id).where(where)).first() is not None
        if revoke and exists:
            conn.execute(researcher_study_access.delete().where(where))
        elif not revoke and not exists:
            conn.execute(researcher_study_access.insert().values(researcher_id=row["id"], study_id=study_id,
                                                                 granted_at=utcnow()))
        _audit(conn, actor, "access_revoked" if revoke else "access_granted", study_id, detail={"username": username})


# --------------------------------------------------------------------------- login


def login(engine: Engine, username: str, password: str, detail: dict | None = None) -> LoginResult:
    """Check a username and password; counts failures and locks the account at MAX_FAILED_LOGINS.

    Every outcome is audited under the name given (an unknown name under "researcher-login").
    The message on failure is the same whether the name is unknown, the password wrong or the
    account locked."""
    name = (username or "").strip().lower()
    detail = dict(detail or {})
    with _read(engine) as conn:
        row = _row(conn, name) if name else None
    ok = _verify(row["password_hash"] if row is not None else None, password or "")
    with _write(engine) as conn:
        row = _row(conn, name) if name else None  # again, inside the write transaction
        if row is None:
            _audit(conn, "researcher-login", "login_failed", detail={**detail, "reason": "unknown user"})
            return LoginResult(False, None, LOGIN_FAILED_MESSAGE)
        if row["locked"]:
            _audit(conn, name, "login_refused_locked", detail=detail)
            return LoginResult(False, None, LOGIN_FAILED_MESSAGE)
        if not ok:
            failed = row["failed_logins"] + 1
            lock = failed >= MAX_FAILED_LOGINS
            conn.execute(researchers.update().where(researchers.c.id == row["id"])
                         .values(failed_logins=failed, locked=lock))
            _audit(conn, name, "login_failed", detail={**detail, "failed_logins": failed, "locked": lock})
            return LoginResult(False, None, LOGIN_FAILED_MESSAGE)
        values = {"failed_logins": 0, "last_login_at": utcnow()}
        if _hasher().check_needs_rehash(row["password_hash"]):
            values["password_hash"] = _hasher().hash(password)
        conn.execute(researchers.update().where(researchers.c.id == row["id"]).values(**values))
        _audit(conn, name, "login", detail=detail)
    return LoginResult(True, Researcher(name, row["role"]), "")


# --------------------------------------------------------------------------- permissions


def current(engine: Engine, who: Researcher) -> Researcher:
    """The researcher as the database has them now; Forbidden if the account is gone or locked."""
    if not who.account:
        if has_accounts(engine):
            raise Forbidden("researcher accounts exist now, so the shared password no longer applies: log in "
                            "with your own account")
        return SHARED
    with _read(engine) as conn:
        row = _row(conn, who.username)
    if row is None:
        raise Forbidden(f"the account {who.username!r} no longer exists")
    if row["locked"]:
        raise Forbidden(f"the account {who.username!r} is locked")
    return Researcher(row["username"], row["role"])


current_researcher = current


def visible_studies(engine: Engine, who: Researcher) -> set[str] | None:
    """Study ids the researcher may see; None means every study (owners)."""
    now = current(engine, who)
    if "all_studies" in PERMISSIONS[now.role]:
        return None
    with _read(engine) as conn:
        return set(conn.execute(
            sa.select(researcher_study_access.c.study_id).join(
                researchers, researchers.c.id == researcher_study_access.c.researcher_id)
            .where(researchers.c.username == now.username)).scalars())


def allowed(engine: Engine, who: Researcher, action: str, study_id: str | None = None) -> bool:
    try:
        authorize(engine, who, action, study_id)
        return True
    except Forbidden:
        return False


def authorize(engine: Engine, who: Researcher, action: str, study_id: str | None = None) -> Researcher:
    """Raise Forbidden unless `who` may take `action` ("view", "change", "register", "accounts")
    on `study_id`; returns the researcher as stored now. Every researcher action calls this first."""
    now = current(engine, who)
    if action not in PERMISSIONS[now.role]:
        raise Forbidden(f"{now.role} {now.username!r} may not {ACTION_WORDS.get(action, action)}"
                        + (f" in study {study_id!r}" if study_id else "")
                        + f" ({' and '.join(r for r in RESEARCHER_ROLES if action in PERMISSIONS[r])} may)")
    if study_id is not None:
        ids = visible_studies(engine, now)
        if ids is not None and study_id not in ids:
            raise Forbidden(f"{now.username!r} has no access to study {study_id!r} (an owner can grant it: "
                            f"`kuleshov researcher grant {now.username} {study_id}`)")
    return now


def grant_if_new(engine: Engine, who: Researcher, study_id: str) -> None:
    """After an editor registers a study, make sure they can see it."""
    if who.account and who.role != "owner":
        with _write(engine) as conn:
            row = _row(conn, who.username)
            if row is None:
                return
            where = ((researcher_study_access.c.researcher_id == row["id"])
                     & (researcher_study_access.c.study_id == study_id))
            if conn.execute(sa.select(researcher_study_access.c.study_id).where(where)).first() is None:
                conn.execute(researcher_study_access.insert().values(researcher_id=row["id"], study_id=study_id,
                                                                     granted_at=utcnow()))


# --------------------------------------------------------------------------- CLI


def _read_password(args) -> str:
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    import getpass

    if not sys.stdin.isatty():
        raise UserError("no terminal to ask for the password: pipe it in with --password-stdin")
    first = getpass.getpass(f"Password for {args.user}: ")
    if getpass.getpass("Again: ") != first:
        raise UserError("the two passwords differ")
    return first


def cli_researcher(args) -> int:
    engine = make_engine(getattr(args, "url", None))
    try:
        upgrade(engine)
        action = args.action
        if action != "list" and not args.user:
            raise UserError(f"kuleshov researcher {action} needs a username, e.g. kuleshov researcher {action} ana")
        if action == "add":
            check_username(args.user)
            if not args.role:
                raise UserError(f"kuleshov researcher add needs --role (owner, editor or viewer), e.g. "
                                f"kuleshov researcher add {args.user} --role editor")
            role = check_role(args.role)
            who = add_researcher(engine, args.user, _read_password(args), role)
            first = len(list_researchers(engine)) == 1
            print(f"added {who.role} {who.username!r}" + (
                "; the researcher pages now ask for a username and password (the shared password no longer works)"
                if first else ""))
            if first and role != "owner":
                print("warning: the first account is not an owner; add an owner to manage accounts", file=sys.stderr)
        elif action == "list":
            rows = list_researchers(engine)
            if not rows:
                print("no researcher accounts: the shared password (KULESHOV_RESEARCHER_PASSWORD) is in use")
            for r in rows:
                last = r["last_login_at"].strftime("%Y-%m-%d %H:%M") if isinstance(r["last_login_at"], datetime) else "never"
                studies_text = "all studies" if r["role"] == "owner" else (", ".join(r["studies"]) or "no studies")
                print(f"{r['username']}\t{r['role']}\t{'LOCKED' if r['locked'] else 'active'}\t"
                      f"last login {last}\t{studies_text}")
        elif action in ("lock", "unlock"):
            set_locked(engine, args.user, action == "lock")
            print(f"{args.user} {action}ed")
        elif action == "delete":
            delete_researcher(engine, args.user)
            print(f"deleted {args.user}")
        elif action in ("grant", "revoke"):
            if not args.study:
                raise UserError(f"kuleshov researcher {action} needs a study id, e.g. kuleshov researcher {action} "
                                f"{args.user} demo")
            grant(engine, args.user, args.study, revoke=action == "revoke")
            print(f"{args.user}: access to {args.study} {'revoked' if action == 'revoke' else 'granted'}")
    finally:
        engine.dispose()
    return 0
