"""Caption files (WebVTT) named in the manifest's `captions` column, and their checks.

A clip's captions are a `.vtt` file in the stimulus folder, served beside the clip and shown
by the player as a `<track kind="captions">`. `vtt_problems` reads one file with webvtt-py in
strict mode (a malformed cue block is an error, not silently dropped) and checks that every
cue lies within the clip. Bad content never raises: it comes back as (severity, sentence).
"""

from __future__ import annotations

from pathlib import Path

# A cue may end a little after the probed duration (containers round it); more is a mistake.
END_TOLERANCE_S = 0.5
MAX_BYTES = 2 * 1024 * 1024


def _seconds(ts) -> float:
    return ts.hours * 3600 + ts.minutes * 60 + ts.seconds + ts.milliseconds / 1000


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes):02d}:{rest:06.3f}"


def vtt_problems(path: str | Path, duration_s: float | None) -> list[tuple[str, str]]:
    """(severity, sentence) for a caption file: unreadable, not WebVTT, empty, or cues outside the clip."""
    import webvtt
    from webvtt.errors import MalformedCaptionError, MalformedFileError

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            return [("error", f"the caption file is {size / 1024**2:.1f} MB; a WebVTT file for one clip should be "
                              f"far smaller (at most {MAX_BYTES // 1024**2} MB)")]
        raw = path.read_bytes()
    except OSError as exc:
        return [("error", f"cannot read the caption file: {exc.strerror or exc}")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [("error", f"the caption file is not UTF-8 text (byte {exc.start}); WebVTT must be UTF-8")]
    if "\x00" in text:
        return [("error", "the caption file holds binary data, not WebVTT text")]
    try:
        captions = webvtt.from_string(text, strict=True).captions
    except MalformedFileError as exc:
        detail = str(exc) or "it must start with the line WEBVTT"
        return [("error", f"not a WebVTT file ({detail})")]
    except (MalformedCaptionError, ValueError) as exc:
        return [("error", f"the caption file is not valid WebVTT: {exc}")]
    if not captions:
        return [("error", "the caption file holds no cues")]
    out: list[tuple[str, str]] = []
    for number, cue in enumerate(captions, start=1):
        start, end = _seconds(cue.start_time), _seconds(cue.end_time)
        where = f"cue {number} ({cue.start} --> {cue.end})"
        if end <= start:
            out.append(("error", f"{where} ends before it starts"))
        elif duration_s is not None and end > duration_s + END_TOLERANCE_S:
            out.append(("error", f"{where} ends after the clip, which lasts {_clock(duration_s)} ({duration_s:g} s)"))
        if not cue.text.strip():
            out.append(("warning", f"{where} has no text"))
    return out
