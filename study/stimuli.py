"""The stimulus manifest (a CSV beside the clips) and checks of the media files it names.

`load_manifest` reads and validates the manifest, `probe_media` looks inside one file with
PyAV, `browser_playable` says whether browsers can play what was found, and `check_manifest`
does all of it for every clip. Bad content never raises: it comes back as `Problem` rows
located like "manifest.csv line 4, column source".
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
from collections import defaultdict
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from study.errors import Problem, UserError

if TYPE_CHECKING:
    import pandas as pd

MANIFEST_NAME = "manifest.csv"
COLUMNS = ["id", "file", "url", "source", "title", "credit", "licence", "generator",
           "generator_version", "prompt", "seed", "pair_id", "notes", "captions"]
REQUIRED_COLUMNS = ["id", "source"]  # plus at least one of file / url
COLUMN_ALIASES = {"license": "licence"}
# title_<lang> (e.g. title_de): the clip's title in another of the shipped languages, for the debrief.
TITLE_PREFIX = "title_"


def _translated_title(column: str) -> str | None:
    """The language of a title_<lang> column (a shipped language), else None."""
    from study.texts import languages

    lang = column[len(TITLE_PREFIX):] if column.startswith(TITLE_PREFIX) else None
    return lang if lang in languages() else None

# Pair members whose durations differ more than this are flagged: viewers' ratings depend on
# length, so a long and a short clip are not a matched comparison.
PAIR_MAX_DURATION_RATIO = 1.5
PAIR_MAX_DURATION_DIFF_S = 5.0

# What current Chrome, Firefox and Safari all decode without plug-ins or hardware luck.
PLAYABLE_VIDEO = {"h264", "vp8", "vp9", "av1"}
PLAYABLE_AUDIO = {"aac", "mp3", "opus", "vorbis"}
PLAYABLE_CONTAINERS = {"mp4", "webm", "ogg"}
UNPLAYABLE_VIDEO_NAMES = {
    "hevc": "HEVC/H.265 (plays only in Safari and on some hardware)",
    "prores": "Apple ProRes (an editing format, not for the web)",
    "mpeg4": "MPEG-4 Part 2 (DivX/Xvid)",
    "msmpeg4v2": "Microsoft MPEG-4 v2", "msmpeg4v3": "Microsoft MPEG-4 v3",
    "wmv1": "Windows Media Video 7", "wmv2": "Windows Media Video 8", "wmv3": "Windows Media Video 9",
    "vc1": "VC-1", "mpeg2video": "MPEG-2", "mpeg1video": "MPEG-1", "dnxhd": "Avid DNxHD",
    "mjpeg": "Motion JPEG", "rawvideo": "uncompressed video", "theora": "Theora",
}
REENCODE_HINT = ("re-encode to H.264 + AAC in MP4, e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p "
                 "-c:a aac -movflags +faststart OUT.mp4")


class Stimulus(BaseModel):
    """One row of the manifest, plus what probing the file found."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="stable clip id, unique in the manifest; stored with every answer")
    file: str | None = Field(None, description="path relative to the manifest's folder")
    url: str | None = Field(None, description="https URL, instead of a file")
    source: Literal["human", "ai"] = Field(description="who made the clip: human or ai")
    title: str = Field("", description="title shown to researchers, and to participants in the debrief")
    titles: dict[str, str] = Field(default_factory=dict,
                                   description="the title in other languages, from columns title_<lang> (e.g. title_de)")
    credit: str = Field("", description="author / rights holder")
    licence: str = Field("", description="licence or permission under which the clip is used")
    generator: str = Field("", description="AI clips: the model or tool that generated it")
    generator_version: str = Field("", description="AI clips: its version")
    prompt: str = Field("", description="AI clips: the prompt used")
    seed: int | None = Field(None, description="AI clips: the random seed, if known")
    pair_id: str | None = Field(None, description="ties an AI clip to the human clip it matches")
    notes: str = Field("", description="anything else")
    captions: str | None = Field(None, description="WebVTT caption file, relative to the manifest's folder")
    recall_keywords: str = Field("", description="follow-ups: words or phrases (semicolon-separated) whose mention "
                                                 "in a free recall counts as recalling the clip; empty = the words "
                                                 "of its title")
    line: int | None = Field(None, exclude=True, description="manifest line (for messages)")
    # filled in by probing
    sha256: str | None = None
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    container: str | None = None
    size_bytes: int | None = None
    fps: float | None = None

    @field_validator("id")
    @classmethod
    def _id_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the id is empty; every clip needs a unique id")
        return v.strip()

    @field_validator("source", mode="before")
    @classmethod
    def _source_word(cls, v: object) -> object:
        text = str(v or "").strip().lower()
        if text not in ("human", "ai"):
            raise ValueError(f"source is {str(v)!r}; it must be 'human' or 'ai'")
        return text

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_int(cls, v: object) -> object:
        if v is None or str(v).strip() == "":
            return None
        try:
            return int(str(v).strip())
        except ValueError:
            raise ValueError(f"seed is {str(v)!r}; it must be a whole number or empty") from None

    @field_validator("url")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is not None and not v.lower().startswith("https://"):
            raise ValueError(f"the URL {v!r} is not https; browsers block plain http media on an "
                             "https page, so give an https:// address")
        return v

    @field_validator("captions")
    @classmethod
    def _vtt(cls, v: str | None) -> str | None:
        if v is not None and not v.lower().endswith(".vtt"):
            raise ValueError(f"the caption file {v!r} does not end in .vtt; captions must be a WebVTT file")
        return _relative(v)

    @field_validator("file")
    @classmethod
    def _file_relative(cls, v: str | None) -> str | None:
        return _relative(v)

    @model_validator(mode="after")
    def _file_or_url(self) -> Stimulus:
        if bool(self.file) == bool(self.url):
            which = "both file and url" if self.file else "neither file nor url"
            raise ValueError(f"the row has {which}; give exactly one of them")
        return self


def _relative(v: str | None) -> str | None:
    """A manifest path as written, refused if absolute or leaving the folder ('..')."""
    if v is None:
        return v
    if PurePosixPath(v).is_absolute() or PureWindowsPath(v).is_absolute() or PureWindowsPath(v).drive:
        raise ValueError(f"the path {v!r} is absolute; give it relative to the manifest's "
                         "folder (path traversal is not allowed)")
    if ".." in PureWindowsPath(v).parts:
        raise ValueError(f"the path {v!r} leaves the manifest's folder ('..'); "
                         "path traversal is not allowed")
    return v


# ---------------------------------------------------------------- manifest


def manifest_file(path: str | Path) -> Path:
    """The manifest CSV for a path that is either the CSV or the folder holding manifest.csv."""
    path = Path(path)
    return path / MANIFEST_NAME if path.is_dir() else path


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _row_problems(exc: ValidationError, where_line: str) -> list[Problem]:
    out = []
    for err in exc.errors():
        col = err["loc"][0] if err["loc"] else "file/url"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "this value is required"
        out.append(Problem(f"{where_line}, column {col}", msg))
    return out


def load_manifest(path: str | Path) -> tuple[list[Stimulus], list[Problem]]:
    """Read and validate a manifest; return the valid clips and every problem found.

    `path` is the CSV or the folder holding manifest.csv. Files are checked to exist inside
    the manifest's folder, but not opened (see `check_manifest`).
    """
    csv_path = manifest_file(path)
    name = csv_path.name
    if not csv_path.is_file():
        what = "no manifest.csv in the folder" if Path(path).is_dir() else "the file does not exist"
        return [], [Problem(str(csv_path), f"cannot read the stimulus manifest: {what}")]
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [Problem(name, f"the manifest is not UTF-8 text (byte {exc.start}); "
                                  "save it as CSV UTF-8")]
    except OSError as exc:
        return [], [Problem(str(csv_path), f"cannot read the stimulus manifest: {exc.strerror}")]
    if "\x00" in text:
        return [], [Problem(name, "the manifest is not a CSV text file (it holds binary data)")]

    problems: list[Problem] = []
    reader = csv.reader(text.splitlines(keepends=True), strict=True)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            return [], [Problem(name, "the manifest is empty; the first line must name the "
                                      f"columns ({', '.join(COLUMNS)})")]
        columns = [COLUMN_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if "file" not in columns and "url" not in columns:
            missing.append("file (or url)")
        if missing:
            return [], [Problem(f"{name} line 1", f"missing required column(s): {', '.join(missing)}; "
                                                  f"the columns are {', '.join(COLUMNS)}")]
        for col in columns:
            if col not in COLUMNS and not _translated_title(col):
                problems.append(Problem(f"{name} line 1, column {col or '(blank)'}",
                                        f"unknown column {col!r} is ignored; known columns are "
                                        f"{', '.join(COLUMNS)} and {TITLE_PREFIX}<language> for a shipped "
                                        "language", "warning"))
        dupes = {c for c in columns if columns.count(c) > 1 and c in COLUMNS}
        for col in sorted(dupes):
            problems.append(Problem(f"{name} line 1, column {col}",
                                    f"the column {col!r} appears more than once"))
        rows: list[tuple[int, dict[str, str | None]]] = []
        while True:
            start = reader.line_num + 1
            fields = next(reader, None)
            if fields is None:
                break
            if not any(f.strip() for f in fields):
                continue  # blank lines are harmless
            if len(fields) > len(columns):
                problems.append(Problem(f"{name} line {start}",
                                        f"the row has {len(fields)} values but the header names "
                                        f"{len(columns)} columns (a comma inside a value needs quotes)"))
                continue
            values = {c: _clean(v) for c, v in zip(columns, fields) if c in COLUMNS or _translated_title(c)}
            rows.append((start, values))
    except csv.Error as exc:
        return [], problems + [Problem(f"{name} line {reader.line_num}",
                                       f"the manifest cannot be read as CSV: {exc}")]

    root = csv_path.parent.resolve()
    stimuli: list[Stimulus] = []
    first_line: dict[str, int] = {}
    for line, values in rows:
        where = f"{name} line {line}"
        data = {k: (v if v is not None else "") for k, v in values.items()}
        for key in ("file", "url", "pair_id", "seed", "captions"):
            data[key] = values.get(key)
        data["id"] = data.get("id") or ""
        data["titles"] = {_translated_title(k): v for k in list(data) if _translated_title(k)
                          for v in [data.pop(k)] if v}
        try:
            stim = Stimulus(**data, line=line)
        except ValidationError as exc:
            row_problems = _row_problems(exc, where)
            # the file/url rule is a model check, which pydantic skips once a field has failed
            if bool(data["file"]) == bool(data["url"]) and not any(
                    p.where.endswith("file/url") for p in row_problems):
                which = "both file and url" if data["file"] else "neither file nor url"
                row_problems.append(Problem(f"{where}, column file/url",
                                            f"the row has {which}; give exactly one of them"))
            problems.extend(row_problems)
            continue
        if stim.id in first_line:
            problems.append(Problem(f"{where}, column id", f"duplicate id {stim.id!r} "
                                    f"(already used on line {first_line[stim.id]}); ids must be unique"))
            continue
        first_line[stim.id] = line
        if stim.file:
            try:
                stimulus_path(root, stim)
            except UserError as exc:
                problems.append(Problem(f"{where}, column file", str(exc)))
                continue
        if stim.captions:
            try:
                captions_path(root, stim)
            except UserError as exc:
                # reported once; the clip itself is still checked
                problems.append(Problem(f"{where}, column captions", str(exc)))
                stim = stim.model_copy(update={"captions": None})
        if stim.source == "ai" and not stim.generator:
            problems.append(Problem(f"{where}, column generator", "AI clip without a generator: "
                                    "say which model or tool made it", "warning"))
        if stim.source == "ai" and not stim.prompt:
            problems.append(Problem(f"{where}, column prompt",
                                    "AI clip without its prompt (recommended for reporting)", "warning"))
        if not stim.licence:
            problems.append(Problem(f"{where}, column licence",
                                    "no licence or permission recorded for this clip", "warning"))
        stimuli.append(stim)
    if not rows and not problems:
        problems.append(Problem(name, "the manifest lists no clips"))
    problems.extend(pair_problems(stimuli, name))
    return stimuli, problems


def pair_problems(stimuli: list[Stimulus], name: str = MANIFEST_NAME) -> list[Problem]:
    """Pairs must be exactly one human and one AI clip."""
    pairs: dict[str, list[Stimulus]] = defaultdict(list)
    for s in stimuli:
        if s.pair_id:
            pairs[s.pair_id].append(s)
    out = []
    for pid, members in pairs.items():
        sources = sorted(m.source for m in members)
        lines = ", ".join(f"{m.id} (line {m.line}, {m.source})" for m in members)
        if sources != ["ai", "human"]:
            if len(members) == 1:
                what = "has only one clip"
            elif len(members) > 2:
                what = f"has {len(members)} clips"
            else:
                what = f"has two {sources[0]} clips"
            out.append(Problem(f"{name}: pair {pid}", f"pair {pid!r} {what}: {lines}; "
                                                      "a pair must be one human and one AI clip"))
    return out


def stimulus_path(manifest_dir: str | Path, stim: Stimulus) -> Path:
    """The resolved file of a clip, guaranteed to lie inside `manifest_dir` and to exist.

    Raises UserError otherwise (absolute paths, '..', symlinks pointing outside, missing files):
    the web server serves only what this returns.
    """
    if not stim.file:
        raise UserError(f"clip {stim.id!r} has no file (it is served from its URL)")
    return _inside(manifest_dir, stim.file)


def captions_path(manifest_dir: str | Path, stim: Stimulus) -> Path:
    """The resolved caption file of a clip, inside `manifest_dir` and existing (as stimulus_path)."""
    if not stim.captions:
        raise UserError(f"clip {stim.id!r} has no captions")
    return _inside(manifest_dir, stim.captions)


def _inside(manifest_dir: str | Path, file: str) -> Path:
    root = Path(manifest_dir).resolve()
    rel = file.replace("\\", "/")
    if PurePosixPath(rel).is_absolute() or PureWindowsPath(file).drive or ".." in PurePosixPath(rel).parts:
        raise UserError(f"the path {file!r} is outside the stimulus folder (path traversal is not allowed)")
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise UserError(f"the path {file!r} resolves to {path}, outside the stimulus folder "
                        f"{root} (a symlink?); path traversal is not allowed")
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise UserError(f"the file {file!r} {what} (looked for {path})")
    return path


# ---------------------------------------------------------------- media


def _top_level_boxes(path: Path, limit: int = 64) -> list[str]:
    """Types of the top-level ISO-BMFF boxes (ftyp, moov, mdat ...), in file order."""
    kinds = []
    size_total = path.stat().st_size
    with path.open("rb") as fh:
        pos = 0
        while pos < size_total and len(kinds) < limit:
            fh.seek(pos)
            head = fh.read(8)
            if len(head) < 8:
                break
            size = int.from_bytes(head[:4], "big")
            kinds.append(head[4:8].decode("latin-1"))
            if size == 1:
                size = int.from_bytes(fh.read(8), "big")
            elif size == 0:
                break
            if size < 8:
                break
            pos += size
    return kinds


def _container_name(fmt_name: str, path: Path) -> str:
    names = set(fmt_name.split(","))
    ext = path.suffix.lower()
    if "mp4" in names or "mov" in names:
        # one demuxer reads both: the extension and the ftyp brand tell them apart
        try:
            with path.open("rb") as fh:
                fh.seek(8)
                brand = fh.read(4)
        except OSError:
            brand = b""
        return "mov" if ext == ".mov" or brand == b"qt  " else "mp4"
    if "matroska" in names or "webm" in names:
        return "webm" if ext == ".webm" else "matroska"
    for known in ("ogg", "avi", "asf", "flv", "mpegts", "mpeg", "gif"):
        if known in names:
            return known
    return fmt_name


def probe_media(path: str | Path, hash: bool = True) -> dict:
    """Look inside one media file with PyAV.

    Returns a dict with container, duration_s, width, height, fps, video_codec, video_profile,
    pix_fmt, audio_codec, size_bytes, sha256 (None when hash=False), faststart (True/False,
    None if not MP4/MOV) and error (None, or a plain sentence when the file is unreadable or
    corrupt). Never raises for bad media.
    """
    import av  # imported here so that reading a manifest does not load FFmpeg

    path = Path(path)
    info: dict = {"container": None, "duration_s": None, "width": None, "height": None,
                  "fps": None, "video_codec": None, "video_profile": None, "pix_fmt": None,
                  "audio_codec": None, "size_bytes": None, "sha256": None, "faststart": None,
                  "error": None}
    try:
        info["size_bytes"] = path.stat().st_size
        if hash:
            with path.open("rb") as fh:
                info["sha256"] = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        info["error"] = f"cannot read the file: {exc.strerror or exc}"
        return info
    if info["size_bytes"] == 0:
        info["error"] = "the file is empty (0 bytes)"
        return info
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            info["container"] = _container_name(container.format.name, path)
            if container.duration is not None:
                info["duration_s"] = round(container.duration / av.time_base, 3)
            if container.streams.audio:
                info["audio_codec"] = container.streams.audio[0].codec_context.name
            if not container.streams.video:
                info["error"] = "the file has no video stream"
                return info
            v = container.streams.video[0]
            cc = v.codec_context
            info["video_codec"] = cc.name
            info["video_profile"] = v.profile
            info["pix_fmt"] = cc.pix_fmt
            info["width"], info["height"] = cc.width, cc.height
            if v.average_rate:
                info["fps"] = round(float(v.average_rate), 3)
            if info["duration_s"] is None and v.duration is not None and v.time_base:
                info["duration_s"] = round(float(v.duration * v.time_base), 3)
            # Opening only reads headers; decoding one frame catches files whose data is broken.
            try:
                frame = next(container.decode(video=0), None)
            except (av.FFmpegError, ValueError) as exc:
                info["error"] = f"the video cannot be decoded ({exc.__class__.__name__}: {exc})"
                return info
            if frame is None:
                info["error"] = "the video stream holds no frames"
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        info["error"] = f"not a readable video file ({reason})"
        return info
    if info["container"] in ("mp4", "mov"):
        try:
            boxes = _top_level_boxes(path)
            if "moov" in boxes and "mdat" in boxes:
                info["faststart"] = boxes.index("moov") < boxes.index("mdat")
        except OSError:
            pass
    return info


def playback_issues(info: dict) -> list[tuple[str, str]]:
    """(severity, sentence) for everything that stops or hinders playback in browsers."""
    if info.get("error"):
        return [("error", info["error"])]
    issues: list[tuple[str, str]] = []
    container, vcodec, acodec = info.get("container"), info.get("video_codec"), info.get("audio_codec")
    if container == "mov":
        issues.append(("warning", "QuickTime .mov: Chrome and Safari play it only with H.264/AAC "
                                  "inside and Firefox may not; prefer .mp4"))
    elif container == "matroska":
        issues.append(("warning", "Matroska (.mkv) is not supported by Safari and only partly by "
                                  "other browsers; prefer .mp4 or .webm"))
    elif container not in PLAYABLE_CONTAINERS:
        issues.append(("error", f"browsers cannot play the {container or 'unknown'} container; "
                                f"{REENCODE_HINT}"))
    if vcodec not in PLAYABLE_VIDEO:
        label = UNPLAYABLE_VIDEO_NAMES.get(vcodec or "", vcodec or "unknown")
        issues.append(("error", f"browsers cannot play {label} video; {REENCODE_HINT}"))
    elif vcodec == "h264":
        profile = (info.get("video_profile") or "").lower()
        pix = info.get("pix_fmt") or ""
        if any(p in profile for p in ("10", "4:2:2", "4:4:4", "high 422", "high 444")):
            issues.append(("error", f"H.264 profile {info.get('video_profile')} is not decoded by "
                                    "browsers; use Main or High with -pix_fmt yuv420p"))
        elif pix and pix not in ("yuv420p", "yuvj420p"):
            issues.append(("error", f"H.264 with pixel format {pix} is not decoded by browsers; "
                                    "re-encode with -pix_fmt yuv420p"))
        if container == "webm":
            issues.append(("warning", "H.264 inside WebM is not standard; Firefox will refuse it"))
    if acodec is not None and acodec not in PLAYABLE_AUDIO:
        sev = "warning" if acodec == "flac" else "error"
        issues.append((sev, f"browsers cannot reliably play {acodec} audio; use AAC (MP4) or Opus (WebM)"))
    if info.get("faststart") is False:
        issues.append(("warning", "the MP4 index (moov) is at the end of the file, so playback "
                                  "waits for the whole download; re-mux with -movflags +faststart"))
    w, h = info.get("width") or 0, info.get("height") or 0
    if w > 3840 or h > 2160:
        issues.append(("warning", f"{w}x{h} is larger than 4K; many devices will stutter"))
    return issues


def browser_playable(info: dict) -> tuple[bool, str]:
    """(False, why) if browsers cannot play the probed file; warnings are reported but playable."""
    issues = playback_issues(info)
    ok = not any(sev == "error" for sev, _ in issues)
    return ok, "; ".join(msg for _, msg in issues) or "plays in current browsers"


_AAC_OBJECT = {"LC": 2, "HE-AAC": 5, "HE-AACv2": 29, "Main": 1, "LTP": 4}
_CONTAINER_MIME = {"mp4": "video/mp4", "mov": "video/mp4", "webm": "video/webm", "ogg": "video/ogg"}


def codec_mime(path: str | Path) -> str | None:
    """The MIME type with RFC 6381 codec strings a browser is asked about, e.g.
    'video/mp4; codecs="avc1.4D401E, mp4a.40.2"' (H.264 profile and level read from the avcC
    box), or None when the file cannot be read. Used by the device check before consent
    (study/device_check.py), which asks the participant's browser `canPlayType` with it.
    """
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            mime = _CONTAINER_MIME.get(_container_name(container.format.name, Path(path)))
            if mime is None or not container.streams.video:
                return None
            codecs = []
            cc = container.streams.video[0].codec_context
            extra = bytes(cc.extradata or b"")
            if cc.name == "h264":
                codecs.append(f"avc1.{extra[1]:02X}{extra[2]:02X}{extra[3]:02X}" if len(extra) >= 4 and extra[0] == 1
                              else "avc1.42E01E")
            elif cc.name == "hevc":
                codecs.append("hvc1.1.6.L93.B0")
            elif cc.name in ("vp8", "vp9"):
                codecs.append(cc.name)
            elif cc.name == "av1":
                codecs.append("av01.0.05M.08")
            else:
                codecs.append(cc.name)
            if container.streams.audio:
                audio = container.streams.audio[0]
                name = audio.codec_context.name
                if name == "aac":
                    codecs.append(f"mp4a.40.{_AAC_OBJECT.get(audio.profile or 'LC', 2)}")
                elif name == "mp3":
                    codecs.append("mp4a.6B" if mime == "video/mp4" else "mp3")
                else:
                    codecs.append(name)
            return f'{mime}; codecs="{", ".join(codecs)}"'
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------- whole manifest

PROBE_FIELDS = ["sha256", "duration_s", "width", "height", "video_codec", "audio_codec",
                "container", "size_bytes", "fps"]
TABLE_COLUMNS = ["id", "source", "pair_id", "file", "url", "status", "container", "video_codec",
                 "audio_codec", "width", "height", "fps", "duration_s", "size_bytes", "sha256", "captions"]


def load_probed(path: str | Path, hash: bool = True) -> tuple[list[Stimulus], list[Problem]]:
    """load_manifest, then probe each file: the clips come back with sha256, duration etc. filled."""
    csv_path = manifest_file(path)
    stimuli, problems = load_manifest(csv_path)
    root = csv_path.parent
    name = csv_path.name
    probed = []
    for stim in stimuli:
        if stim.url:
            probed.append(stim)
            continue
        where = f"{name} line {stim.line}, column file"
        try:
            info = probe_media(stimulus_path(root, stim), hash=hash)
        except UserError as exc:  # the file changed since the manifest was read
            problems.append(Problem(where, str(exc)))
            continue
        for sev, msg in playback_issues(info):
            problems.append(Problem(where, f"{stim.file}: {msg}", sev))
        probed.append(stim.model_copy(update={k: info.get(k) for k in PROBE_FIELDS}))
    for stim in probed:
        if stim.captions:
            problems.extend(_caption_problems(root, stim, name))
    problems.extend(_pair_duration_problems(probed, name))
    return probed, sorted(problems, key=_problem_order)


def _caption_problems(root: Path, stim: Stimulus, name: str) -> list[Problem]:
    from study.captions import vtt_problems

    where = f"{name} line {stim.line}, column captions"
    try:
        path = captions_path(root, stim)
    except UserError as exc:  # the file changed since the manifest was read
        return [Problem(where, str(exc))]
    return [Problem(where, f"{stim.captions}: {msg}", sev) for sev, msg in vtt_problems(path, stim.duration_s)]


def _problem_order(p: Problem) -> tuple[int, int]:
    """Manifest order: header, then rows by line, then pairs (stable within each)."""
    match = re.search(r" line (\d+)", p.where)
    return (0, int(match.group(1))) if match else (1, 0)


def _pair_duration_problems(stimuli: list[Stimulus], name: str) -> list[Problem]:
    pairs: dict[str, list[Stimulus]] = defaultdict(list)
    for s in stimuli:
        if s.pair_id:
            pairs[s.pair_id].append(s)
    out = []
    for pid, members in pairs.items():
        durations = [m.duration_s for m in members if m.duration_s]
        if len(durations) != 2:
            continue
        short, long_ = sorted(durations)
        if long_ / short > PAIR_MAX_DURATION_RATIO or long_ - short > PAIR_MAX_DURATION_DIFF_S:
            desc = ", ".join(f"{m.id} {m.duration_s:.1f} s" for m in members)
            out.append(Problem(f"{name}: pair {pid}", f"the clips of pair {pid!r} differ a lot in "
                               f"length ({desc}); matched clips should last about as long", "warning"))
    return out


def check_manifest(path: str | Path, hash: bool = True) -> tuple[pd.DataFrame, list[Problem]]:
    """Load, validate and probe every clip: one table row per clip and every problem found.

    `status` is 'ok', 'warning', 'error' or 'url (not probed)'; URL clips are not fetched.
    """
    import pandas as pd

    csv_path = manifest_file(path)
    stimuli, problems = load_probed(csv_path, hash=hash)
    name = csv_path.name
    rows = []
    for s in stimuli:
        mine = [p for p in problems if p.where.startswith(f"{name} line {s.line},")
                or (s.pair_id and p.where == f"{name}: pair {s.pair_id}")]
        if any(p.severity == "error" for p in mine):
            status = "error"
        elif s.url:
            status = "url (not probed)"
        elif mine:
            status = "warning"
        else:
            status = "ok"
        row = s.model_dump()
        row["status"] = status
        rows.append(row)
    for s in stimuli:
        if s.url:
            problems.append(Problem(f"{name} line {s.line}, column url", f"{s.url} was not checked "
                                    "(no network access during checks); make sure it serves H.264/AAC "
                                    "MP4 with CORS and range requests", "warning"))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS) if rows else pd.DataFrame(columns=TABLE_COLUMNS)
    # Unprobed clips (URLs, unreadable files) leave gaps; keep the counts whole numbers.
    table = table.astype({c: "Int64" for c in ("width", "height", "size_bytes")})
    return table, problems


# ---------------------------------------------------------------- command line


def _manifest_from_study(study_file: Path) -> tuple[Path | None, list[Problem]]:
    import yaml

    try:
        data = yaml.safe_load(study_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return None, [Problem(str(study_file), f"the study file is not valid YAML: {exc}")]
    except OSError as exc:
        return None, [Problem(str(study_file), f"cannot read the study file: {exc.strerror}")]
    section = data.get("stimuli", {}) if isinstance(data, dict) else None
    # The schema's default (study.protocol.StimuliSettings.manifest) is manifest.csv.
    manifest = section.get("manifest", "manifest.csv") if isinstance(section, dict) else None
    if not manifest or not isinstance(manifest, str):
        return None, [Problem(f"{study_file.name}: stimuli.manifest",
                              "the study file does not name a stimulus manifest")]
    return (study_file.parent / manifest), []


def _fmt_size(n: float | None) -> str:
    import pandas as pd

    if n is None or pd.isna(n):
        return ""
    return f"{n / 1024:.0f} KB" if n < 1024**2 else f"{n / 1024**2:.1f} MB"


def cli_stimuli(args: argparse.Namespace) -> int:
    """`kuleshov stimuli check PATH [--no-hash]`: a table of the clips and every problem; exit 1 on errors."""
    if getattr(args, "action", "check") != "check":
        raise UserError(f"unknown action {args.action!r}; the only action is 'check'")
    path = Path(args.path)
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.is_file():
            print(f"error: {path}: the study file does not exist")
            return 1
        manifest, problems = _manifest_from_study(path)
        if manifest is None:
            for p in problems:
                print(f"error: {p}")
            return 1
        path = manifest
    import pandas as pd

    table, problems = check_manifest(path, hash=not getattr(args, "no_hash", False))
    csv_path = manifest_file(path)
    print(f"Stimulus manifest: {csv_path}")
    if len(table):
        shown = table.assign(
            size=table["size_bytes"].map(_fmt_size),
            duration=table["duration_s"].map(lambda d: "" if pd.isna(d) else f"{d:.1f} s"),
            resolution=["" if pd.isna(w) or pd.isna(h) else f"{w}x{h}" for w, h in
                        zip(table["width"], table["height"])],
            sha256=table["sha256"].map(lambda h: h[:12] if isinstance(h, str) else ""),
        )[["id", "source", "pair_id", "status", "container", "video_codec", "audio_codec",
           "resolution", "duration", "size", "sha256", "captions"]].fillna("")
        print(shown.to_string(index=False))
        counts = table["source"].value_counts()
        print(f"\n{len(table)} clips ({counts.get('human', 0)} human, {counts.get('ai', 0)} ai), "
              f"{table['pair_id'].dropna().nunique()} pairs")
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity != "error"]
    for p in errors:
        print(f"error: {p}")
    for p in warnings:
        print(f"warning: {p}")
    if errors:
        print(f"\n{len(errors)} error(s), {len(warnings)} warning(s): fix the errors before running the study.")
        return 1
    print(f"\nNo errors ({len(warnings)} warning(s)).")
    return 0
