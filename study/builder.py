"""A study built in the browser: the draft folder, its YAML, clips, manifest, saving and zips.

Pure functions over a draft folder (no streamlit; the page is app_pages/builder.py):

- a draft is a folder under <data dir>/builder/drafts/<random>/ holding study.yaml,
  manifest.csv and the clip files; the page writes the form's data there at every change and
  validates the folder exactly as `kuleshov validate` does (study.protocol's _validate);
- clips arrive through `receive_clip` from a stream (the upload route in server.py), written
  to a temporary file with a size limit, probed with the checks of `kuleshov stimuli check`
  and only then moved into the draft: a refused clip leaves nothing behind;
- `save_draft` copies the draft to a new version folder <data dir>/builder/studies/<id>/<n>/
  that did not exist before (never over a registered version's files); the caller registers it;
- `folder_zip` / `open_zip` pack and unpack a study folder, refusing hostile archives.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import secrets
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from study.errors import Problem, UserError

STUDY_FILE = "study.yaml"
MANIFEST = "manifest.csv"
CLIP_SUFFIXES = (".mp4", ".webm", ".m4v", ".ogv", ".mov", ".mkv")
CAPTION_SUFFIXES = (".vtt",)
# The manifest columns the builder's table edits, in this order (study.stimuli.COLUMNS' subset).
TABLE_COLUMNS = ["id", "file", "source", "pair_id", "title", "credit", "licence", "generator",
                 "generator_version", "prompt", "seed", "captions", "notes"]
MAX_ZIP_ENTRIES = 2000
MAX_ZIP_RATIO = 200  # uncompressed / compressed, per entry: beyond it an entry is a zip bomb
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def max_clip_bytes() -> int:
    from study.config import setting

    return int(float(setting("KULESHOV_MAX_CLIP_MB")) * 1024 * 1024)


def max_zip_bytes() -> int:
    from study.config import setting

    return int(float(setting("KULESHOV_MAX_STUDY_ZIP_MB")) * 1024 * 1024)


def megabytes(n: int) -> str:
    """A byte count in MB as a message says it (a limit below 10 MB keeps two digits: 0.05 MB, not 0 MB)."""
    mb = n / 1024 / 1024
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.2g} MB"


def builder_root() -> Path:
    from study.config import data_dir

    return data_dir() / "builder"


# --------------------------------------------------------------------------- YAML


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(data: dict[str, Any]) -> str:
    """The study file's text for the form's data (keys in schema order, unicode kept)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def from_yaml(text: str) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The data of a study file's text, or the problems reading it (as `kuleshov validate` says them)."""
    from study.protocol.loading import _read_yaml

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / STUDY_FILE
        path.write_text(text, encoding="utf-8")
        data, _, problems = _read_yaml(path)
    return data, problems


# --------------------------------------------------------------------------- drafts


@dataclass
class Draft:
    folder: Path

    @property
    def study_file(self) -> Path:
        return self.folder / STUDY_FILE

    @property
    def manifest_file(self) -> Path:
        return self.folder / MANIFEST


def new_draft(root: Path | None = None) -> Draft:
    folder = (root or builder_root()) / "drafts" / secrets.token_hex(8)
    folder.mkdir(parents=True)
    return Draft(folder)


def draft_at(folder: str | Path, root: Path | None = None) -> Draft:
    """The draft in `folder`, which must lie under the drafts folder (it comes from the session)."""
    base = ((root or builder_root()) / "drafts").resolve()
    path = Path(folder).resolve()
    if path.parent != base or not path.is_dir():
        raise UserError("this builder draft no longer exists; start again or open the study")
    return Draft(path)


def open_registered(folder: str | Path, spec_yaml: str, root: Path | None = None) -> tuple[Draft, dict]:
    """A new draft holding a registered version's study file, manifest and clips (copied)."""
    draft = new_draft(root)
    draft.study_file.write_text(spec_yaml, encoding="utf-8")
    data, _ = from_yaml(spec_yaml)
    data = data or {}
    stimuli = data.get("stimuli") if isinstance(data.get("stimuli"), dict) else {}
    manifest = Path(folder) / (stimuli.get("manifest") or MANIFEST) if folder else None
    rows: list[dict] = []
    if manifest is not None and manifest.is_file():
        rows = read_manifest(manifest)
        for row in rows:
            for col in ("file", "captions"):
                name = row.get(col)
                if name:
                    src = (Path(folder) / name).resolve()
                    if src.is_file() and Path(folder).resolve() in src.parents:
                        dest = draft.folder / Path(name).name
                        shutil.copyfile(src, dest)
                        row[col] = dest.name
    if isinstance(data.get("stimuli"), dict):
        data["stimuli"]["manifest"] = MANIFEST
    write_manifest(draft, rows)
    return draft, data


def read_manifest(path: Path) -> list[dict]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return [{k: (v or "") for k, v in row.items() if k} for row in csv.DictReader(fh)]


def write_manifest(draft: Draft, rows: list[dict]) -> None:
    from study.stimuli import COLUMNS

    extra = [c for row in rows for c in row if c not in COLUMNS]
    columns = COLUMNS + list(dict.fromkeys(extra))
    with draft.manifest_file.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else str(row.get(c)) for c in columns})


def write_study(draft: Draft, text: str) -> None:
    draft.study_file.write_text(text, encoding="utf-8")


def validate(draft: Draft) -> list[Problem]:
    """Every problem of the draft, as `kuleshov validate` reports them (with the media probed)."""
    from study.protocol.loading import _validate

    return _validate(draft.study_file, True, None)[1]


def clips(draft: Draft) -> list[str]:
    return sorted(p.name for p in draft.folder.iterdir() if p.suffix.lower() in CLIP_SUFFIXES + CAPTION_SUFFIXES)


def pair_table(rows: list[dict], durations: dict[str, float | None]) -> list[dict]:
    """One row per pair id: its members, their durations and the mismatch (the stimuli checks' rule)."""
    from study.stimuli import PAIR_MAX_DURATION_DIFF_S, PAIR_MAX_DURATION_RATIO

    pairs: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("pair_id"):
            pairs.setdefault(str(row["pair_id"]), []).append(row)
    out = []
    for pid, members in pairs.items():
        secs = [durations.get(str(m.get("file") or "")) for m in members]
        known = [s for s in secs if s]
        diff = round(max(known) - min(known), 2) if len(known) == 2 else None
        ratio = max(known) / min(known) if len(known) == 2 else None
        if len(members) != 2:
            verdict = f"needs exactly 2 clips (has {len(members)})"
        elif {m.get("source") for m in members} != {"human", "ai"}:
            verdict = "needs one human and one ai clip"
        elif diff is not None and (ratio > PAIR_MAX_DURATION_RATIO or diff > PAIR_MAX_DURATION_DIFF_S):
            verdict = "lengths differ a lot"
        else:
            verdict = "ok"
        # the verdict first: on a phone the table shows its first columns only
        out.append({"pair": pid, "check": verdict, "difference (s)": diff,
                    "durations (s)": ", ".join("?" if s is None else f"{s:.1f}" for s in secs),
                    "clips": ", ".join(f"{m.get('id')} ({m.get('source')})" for m in members)})
    return out


# --------------------------------------------------------------------------- clips


def safe_filename(name: str) -> str:
    """A plain file name for an uploaded clip (no folders, no leading dot)."""
    base = Path(str(name).replace("\\", "/")).name
    stem, suffix = os.path.splitext(base)
    stem = _SAFE_NAME.sub("_", stem).strip("._") or "clip"
    return f"{stem[:80]}{suffix.lower()}"


def clip_id(filename: str) -> str:
    from study.protocol.schema import slugify

    return slugify(Path(filename).stem).replace("-", "_")


@dataclass
class Received:
    filename: str
    size_bytes: int
    sha256: str
    info: dict
    warnings: list[str]


class Upload:
    """One clip (or .vtt) arriving in pieces: written to a hidden temporary file in the draft,
    counted as it comes (past `limit` bytes: refused at once), then probed with the checks of
    `kuleshov stimuli check` (study.stimuli.probe_media + playback_issues) and moved to its name
    only if browsers can play it. Any refusal deletes the temporary file: nothing half-written."""

    def __init__(self, draft: Draft, filename: str, limit: int | None = None,
                 suffixes: tuple[str, ...] = CLIP_SUFFIXES + CAPTION_SUFFIXES, setting: str = "KULESHOV_MAX_CLIP_MB") -> None:
        self.draft, self.filename, self.setting = draft, filename, setting
        self.limit = max_clip_bytes() if limit is None else limit
        self.name = safe_filename(filename)
        self.suffix = Path(self.name).suffix
        if self.suffix not in suffixes:
            raise UserError(f"{filename}: not a file the builder takes here (allowed: {', '.join(suffixes)})")
        fd, tmp_name = tempfile.mkstemp(prefix=".upload-", suffix=self.suffix, dir=draft.folder)
        self.tmp = Path(tmp_name)
        self._out = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self.size = 0

    def too_big_message(self) -> str:
        return (f"{self.filename}: larger than the limit of {megabytes(self.limit)} "
                f"({self.setting}); nothing of it was kept")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.abort()
            raise UserError(self.too_big_message())
        self._digest.update(chunk)
        self._out.write(chunk)

    def abort(self) -> None:
        self._out.close()
        self.tmp.unlink(missing_ok=True)

    def close(self) -> Path:
        """The whole file, unprobed, at its temporary path (the caller deletes it)."""
        self._out.close()
        return self.tmp

    def finish(self) -> Received:
        try:
            self._out.close()
            if self.size == 0:
                raise UserError(f"{self.filename}: the file is empty (0 bytes)")
            info: dict = {}
            if self.suffix in CAPTION_SUFFIXES:
                from study.captions import vtt_problems

                issues = vtt_problems(self.tmp, None)
            else:
                from study.stimuli import playback_issues, probe_media

                info = probe_media(self.tmp, hash=False)
                issues = playback_issues(info)
            errors = [m for sev, m in issues if sev == "error"]
            if errors:
                raise UserError(f"{self.filename}: {'; '.join(errors)}")
            info["sha256"] = self._digest.hexdigest()
            os.replace(self.tmp, self.draft.folder / self.name)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        return Received(self.name, self.size, info["sha256"], info, [m for sev, m in issues if sev != "error"])


def receive_clip(draft: Draft, filename: str, chunks: Iterable[bytes], limit: int | None = None) -> Received:
    """An uploaded clip written into the draft through Upload, or UserError with nothing left behind."""
    upload = Upload(draft, filename, limit)
    try:
        for chunk in chunks:
            upload.write(chunk)
    except BaseException:
        upload.abort()
        raise
    return upload.finish()


def add_clip_row(rows: list[dict], received: Received) -> list[dict]:
    """The manifest rows with a row for a newly received clip (captions go to the clip of the same name)."""
    rows = [dict(r) for r in rows]
    if received.filename.endswith(CAPTION_SUFFIXES):
        stem = Path(received.filename).stem
        for row in rows:
            if Path(str(row.get("file") or "")).stem == stem:
                row["captions"] = received.filename
        return rows
    if any(r.get("file") == received.filename for r in rows):
        return rows
    taken = {r.get("id") for r in rows}
    cid, n = clip_id(received.filename), 2
    base = cid
    while cid in taken:
        cid, n = f"{base}_{n}", n + 1
    rows.append({"id": cid, "file": received.filename, "source": "human"})
    return rows


def durations(draft: Draft) -> dict[str, float | None]:
    """Each clip file's duration (probed; no hash)."""
    from study.stimuli import probe_media

    return {name: probe_media(draft.folder / name, hash=False).get("duration_s")
            for name in clips(draft) if not name.endswith(CAPTION_SUFFIXES)}


# --------------------------------------------------------------------------- saving


def next_version(taken: Iterable[str], wanted: str) -> str:
    """`wanted` if no version of the study has it yet, else the next free one (2 -> 3, 1.1 -> 1.2, a -> a-2)."""
    taken = {str(t) for t in taken}
    if wanted not in taken:
        return wanted
    match = re.match(r"^(.*?)(\d+)$", wanted)
    head, n = (match.group(1), int(match.group(2))) if match else (f"{wanted}-", 1)
    while f"{head}{n}" in taken or f"{head}{n}" == wanted:
        n += 1
    return f"{head}{n}"


def save_draft(draft: Draft, study_id: str, version: str, root: Path | None = None) -> Path:
    """Copy the draft's study file, manifest and the files it names into a new folder; returns
    the new study file. The folder is new (a name already taken gets a suffix), so a version
    once registered keeps its files."""
    base = (root or builder_root()) / "studies" / _SAFE_NAME.sub("_", study_id)
    base.mkdir(parents=True, exist_ok=True)
    name = _SAFE_NAME.sub("_", f"v{version}")
    target, n = base / name, 2
    while True:
        try:
            target.mkdir()
            break
        except FileExistsError:
            target, n = base / f"{name}-{n}", n + 1
    names = {STUDY_FILE, MANIFEST}
    for row in read_manifest(draft.manifest_file) if draft.manifest_file.is_file() else []:
        names.update(v for k in ("file", "captions") if (v := row.get(k)))
    for item in sorted(names):
        src = draft.folder / item
        if src.is_file() and not src.is_symlink():
            shutil.copyfile(src, target / item)
    return target / STUDY_FILE


# --------------------------------------------------------------------------- zips


def folder_zip(folder: Path) -> bytes:
    """The study folder (study file, manifest, clips, captions) as a zip, files at the top level."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                # clips are compressed already: deflating them again costs time and saves nothing
                packed = zipfile.ZIP_STORED if path.suffix.lower() in CLIP_SUFFIXES else zipfile.ZIP_DEFLATED
                zf.write(path, path.name, compress_type=packed)
    return buf.getvalue()


def open_zip(data: bytes | Path, root: Path | None = None, limit: int | None = None) -> Draft:
    """A new draft from a zipped study folder, or UserError saying what is wrong with the zip.

    Refused: not a zip, too large (compressed or unpacked, KULESHOV_MAX_STUDY_ZIP_MB), too many
    entries, an entry that compresses implausibly well (a zip bomb), absolute or `..` paths,
    symlinks, and a zip without study.yaml. The study folder may sit at the top or in one folder.
    """
    limit = max_zip_bytes() if limit is None else limit
    size = data.stat().st_size if isinstance(data, Path) else len(data)
    if size > limit:
        raise UserError(f"the zip is larger than {megabytes(limit)} (KULESHOV_MAX_STUDY_ZIP_MB); refused")
    try:
        zf = zipfile.ZipFile(data if isinstance(data, Path) else io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UserError(f"not a zip file ({exc})") from None
    if len(infos) > MAX_ZIP_ENTRIES:
        raise UserError(f"the zip holds {len(infos)} entries (at most {MAX_ZIP_ENTRIES})")
    files = [i for i in infos if not i.is_dir()]
    total = 0
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
            raise UserError(f"the zip entry {name!r} points outside the study folder; refused")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UserError(f"the zip entry {name!r} is a symbolic link; refused")
        total += info.file_size
        if total > limit:
            raise UserError(f"the zip unpacks to more than {megabytes(limit)} "
                            "(KULESHOV_MAX_STUDY_ZIP_MB); refused")
        if info.file_size > 1024 * 1024 and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
            raise UserError(f"the zip entry {name!r} unpacks to {info.file_size} bytes from "
                            f"{info.compress_size}: refused as a zip bomb")
    studies = [i for i in files if Path(i.filename).name == STUDY_FILE]
    if not studies:
        raise UserError(f"the zip holds no {STUDY_FILE} (the study file must be named {STUDY_FILE})")
    top = min(studies, key=lambda i: i.filename.count("/"))
    prefix = top.filename[: -len(STUDY_FILE)]
    draft = new_draft(root)
    try:
        for info in files:
            if not info.filename.startswith(prefix):
                continue
            rel = info.filename[len(prefix):]
            if "/" in rel or rel.startswith("."):
                continue  # the builder's folders are flat; subfolders are not part of a study it made
            with zf.open(info) as src, (draft.folder / safe_filename(rel)).open("wb") as out:
                written = 0
                while chunk := src.read(1024 * 1024):
                    written += len(chunk)
                    if written > info.file_size:  # a header that lies about the size
                        raise UserError(f"the zip entry {info.filename!r} is larger than it says; refused")
                    out.write(chunk)
    except (UserError, zipfile.BadZipFile, OSError, EOFError) as exc:
        shutil.rmtree(draft.folder, ignore_errors=True)
        raise exc if isinstance(exc, UserError) else UserError(f"the zip cannot be read ({exc})") from None
    if not draft.manifest_file.is_file():
        write_manifest(draft, [])
    return draft


# --------------------------------------------------------------------------- upload tickets


@dataclass
class Ticket:
    researcher: Any  # store.Researcher, re-checked against the database at every upload
    folder: Path  # the draft the uploads go to
    expires: float
    inbox: list  # (filename, Received | None, message) since the page last looked


class UploadTickets:
    """Process-wide: the builder page issues a ticket per draft, the upload route (server.py)
    accepts a POST only with a live ticket, and the page collects what arrived. Tickets live in
    the process that served the page (uploads need the sticky sessions that Streamlit needs)."""

    TTL_S = 4 * 3600

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._tickets: dict[str, Ticket] = {}

    def issue(self, researcher: Any, folder: Path) -> str:
        import time

        now = time.monotonic()
        with self._lock:
            for token, t in list(self._tickets.items()):
                if t.expires < now:
                    del self._tickets[token]
            token = secrets.token_urlsafe(24)
            self._tickets[token] = Ticket(researcher, Path(folder), now + self.TTL_S, [])
            return token

    def get(self, token: str | None) -> Ticket | None:
        import time

        with self._lock:
            t = self._tickets.get(token or "")
            return t if t is not None and t.expires >= time.monotonic() else None

    def deliver(self, token: str, entry: tuple) -> None:
        with self._lock:
            t = self._tickets.get(token)
            if t is not None:
                t.inbox.append(entry)

    def collect(self, token: str) -> list:
        with self._lock:
            t = self._tickets.get(token)
            if t is None:
                return []
            out, t.inbox = t.inbox, []
            return out


TICKETS = UploadTickets()
