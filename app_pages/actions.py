"""Every researcher action the pages offer, each checked against the researcher's role and study
access on the server before it runs (plain Python, no streamlit: tests call these directly).

A page hides what a role may not do, but hiding is only a courtesy: these functions are the
check. Each takes the logged-in `store.Researcher` (app_pages.auth.who()) and writes its audit
entry under that researcher's username. A refusal raises store.Forbidden (a UserError).
"""

from __future__ import annotations

from pathlib import Path

from study import store
from study.errors import UserError


def studies(engine, who: store.Researcher) -> list[dict]:
    """The studies this researcher may see (store.list_studies rows)."""
    ids = store.visible_studies(engine, who)
    return [row for row in store.list_studies(engine) if ids is None or row["id"] in ids]


def may(engine, who: store.Researcher, action: str, study_id: str | None = None) -> bool:
    return store.allowed(engine, who, action, study_id)


def set_status(engine, who: store.Researcher, study_id: str, status: str) -> None:
    now = store.authorize(engine, who, "change", study_id)
    store.set_study_status(engine, study_id, status, actor=now.username)


def register(engine, who: store.Researcher, path: str) -> str:
    now = store.authorize(engine, who, "register")
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file on the server")
    from study.protocol import load_study

    spec_id = load_study(Path(path)).id
    if any(row["id"] == spec_id for row in store.list_studies(engine)):
        store.authorize(engine, now, "change", spec_id)  # a new version of a study they may change
    study_id = store.register_study(engine, path, actor=now.username)
    store.grant_if_new(engine, now, study_id)
    return study_id


def delete_participant(engine, who: store.Researcher, study_id: str, ref: str) -> int:
    now = store.authorize(engine, who, "change", study_id)
    return store.delete_participant(engine, study_id, ref, actor=now.username)


def export(engine, who: store.Researcher, study_id: str, include_pilot: bool = False) -> bytes:
    now = store.authorize(engine, who, "view", study_id)
    from analysis.export import export_zip

    return export_zip(engine, study_id, include_pilot=include_pilot, actor=now.username)


def followup_invitations(engine, who: store.Researcher, study_id: str, name: str) -> list[dict]:
    """Participants eligible for a follow-up, with their Prolific IDs (like the payments table: any
    role with access to the study)."""
    now = store.authorize(engine, who, "view", study_id)
    from study.store import followups

    rows = followups.eligible(engine, study_id, name)
    store.audit(engine, now.username, "followup_invitations_viewed", study_id, detail={"followup": name,
                                                                                     "rows": len(rows)})
    return rows


def view(engine, who: store.Researcher, study_id: str) -> store.Researcher:
    """Dashboard, payments and results of a study: any role with access."""
    return store.authorize(engine, who, "view", study_id)


# --------------------------------------------------------------------------- accounts (owners)


def _owner(engine, who: store.Researcher, target: str | None = None) -> store.Researcher:
    now = store.authorize(engine, who, "accounts")
    if not now.account:
        raise store.Forbidden("accounts are managed from the command line until the first one exists: "
                              "kuleshov researcher add NAME --role owner")
    if target is not None and target == now.username:
        raise UserError("you cannot lock or delete your own account here (another owner, or the command line, can)")
    return now


def accounts(engine, who: store.Researcher) -> list[dict]:
    _owner(engine, who)
    return store.list_researchers(engine)


def add_account(engine, who: store.Researcher, username: str, password: str, role: str) -> store.Researcher:
    now = _owner(engine, who)
    return store.add_researcher(engine, username, password, role, actor=now.username)


def lock_account(engine, who: store.Researcher, username: str, locked: bool) -> None:
    now = _owner(engine, who, username)
    store.set_locked(engine, username, locked, actor=now.username)


def delete_account(engine, who: store.Researcher, username: str) -> None:
    now = _owner(engine, who, username)
    store.delete_researcher(engine, username, actor=now.username)


def grant_access(engine, who: store.Researcher, username: str, study_id: str, revoke: bool = False) -> None:
    now = _owner(engine, who)
    store.grant(engine, username, study_id, actor=now.username, revoke=revoke)


# --------------------------------------------------------------------------- study builder (editors, owners)


def builder_allowed(engine, who: store.Researcher) -> store.Researcher:
    """The builder is for researchers who may register studies (editors and owners)."""
    return store.authorize(engine, who, "register")


def builder_open(engine, who: store.Researcher, study_id: str):
    """A new builder draft holding the current version of a registered study (copied); (draft, data)."""
    now = store.authorize(engine, who, "register")
    store.authorize(engine, now, "change", study_id)
    from study import builder

    info = store.get_study(engine, study_id)
    return builder.open_registered(info.manifest_dir or "", info.spec_yaml)


def builder_save(engine, who: store.Researcher, draft_folder: str) -> tuple[str, str, str]:
    """Save a builder draft as a new version folder and register it; (study id, version, study file).

    The version is the draft's own unless that study already has it registered; then the next
    free one (study.builder.next_version), written into the saved file. Refused (UserError with
    every problem) while the draft has errors. Audited as study_registered/study_updated under
    the researcher's name, plus builder_saved with the folder."""
    now = store.authorize(engine, who, "register")
    from study import builder
    from study.protocol import load_study

    draft = builder.draft_at(draft_folder)
    spec = load_study(draft.study_file)  # every problem, before anything is written
    known = {row["id"] for row in store.list_studies(engine)}
    if spec.id in known:
        store.authorize(engine, now, "change", spec.id)
        taken = [v["version"] for v in store.list_versions(engine, spec.id)]
        version = builder.next_version(taken, str(spec.version))
    else:
        version = str(spec.version)
    if version != str(spec.version):
        data, _ = builder.from_yaml(draft.study_file.read_text(encoding="utf-8"))
        data["version"] = version
        builder.write_study(draft, builder.to_yaml(data))
        load_study(draft.study_file)
    path = builder.save_draft(draft, spec.id, version)
    study_id = store.register_study(engine, path, actor=now.username)
    store.grant_if_new(engine, now, study_id)
    store.audit(engine, now.username, "builder_saved", study_id,
                detail={"version": version, "folder": str(path.parent)})
    return study_id, version, str(path)


def builder_upload_ticket(engine, who: store.Researcher, draft_folder: str) -> str:
    """A ticket for the upload route (server.py /api/builder/upload) into this draft."""
    now = store.authorize(engine, who, "register")
    from study import builder

    return builder.TICKETS.issue(now, builder.draft_at(draft_folder).folder)
