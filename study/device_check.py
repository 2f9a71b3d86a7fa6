"""The device and browser check before consent: its sounds, the check of the browser's report, the verdict.

Pure: no Streamlit, no database. The browser (components/device_check) measures what only it
can see: which of the study's codec strings it can play (`canPlayType`,
`MediaSource.isTypeSupported`), the window and screen, touch, and how fast a ranged fetch of the
first clip came in; it plays the sound test and the headphone check and sends the participant's
answers, all in one report. Everything here judges that report on the server:

- `report_problem` refuses a report of the wrong shape (hostile or broken input) with a sentence;
- `judge` turns a well-formed report into a `Verdict` (passed, the reasons it failed, whether
  the sound test may be tried again) and the `device_info` to store.

The sounds are made here, not in the browser, so that the answer is never sent to the browser:
the page gets a WAV file, and the digits (counts of beeps) and the headphone answers follow from
a random seed kept in participants.device_info (`seed`), drawn at enrolment and never shown.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
import wave
from dataclasses import dataclass, field
from typing import Any

import numpy as np

REPORT_VERSION = 1
DIGITS = 3  # groups of beeps in the sound test
MIN_BEEPS, MAX_BEEPS = 1, 5  # beeps per group: guessing all three right is a 1 in 125 chance
HEADPHONE_TRIALS = 6
HEADPHONE_PASS = 5  # Woods et al. (2017): at least 5 of 6 right
# The reasons a check fails, in the order the participant is told them.
REASONS = ("codec", "window", "connection", "audio", "headphones")
SAMPLE_RATE = 8000
HEADPHONE_RATE = 4000

# --------------------------------------------------------------------------- the participant's seed


def seed_of(device_info: Any, token: str) -> str:
    """The secret the sounds follow from: device_info's seed (drawn at enrolment), else one from the token.

    The token fallback covers participants enrolled before the check existed; it is weaker (the
    token is in the participant's address bar), which only matters to someone reading this code.
    """
    if isinstance(device_info, dict) and isinstance(device_info.get("seed"), str) and device_info["seed"]:
        return device_info["seed"]
    return hashlib.sha256(f"device-check:{token}".encode()).hexdigest()[:16]


def _draws(seed: str, label: str, n: int, low: int, high: int) -> list[int]:
    digest = hashlib.sha256(f"{seed}:{label}".encode()).digest()
    return [low + digest[i] % (high - low + 1) for i in range(n)]


def digits(seed: str, attempt: int) -> str:
    """The sound test's answer for one attempt (0-based): e.g. '314' = 3 beeps, 1 beep, 4 beeps."""
    return "".join(str(d) for d in _draws(seed, f"digits:{attempt}", DIGITS, MIN_BEEPS, MAX_BEEPS))


def headphone_plan(seed: str) -> list[tuple[int, int]]:
    """Per trial (quietest, antiphase): which of the three tones is 6 dB quieter, which is in antiphase."""
    quiet = _draws(seed, "headphones:quiet", HEADPHONE_TRIALS, 0, 2)
    shift = _draws(seed, "headphones:phase", HEADPHONE_TRIALS, 1, 2)
    return [(q, (q + s) % 3) for q, s in zip(quiet, shift, strict=True)]


# --------------------------------------------------------------------------- sounds


def _ramp(n: int, rate: int, ms: float = 10.0) -> np.ndarray:
    env = np.ones(n)
    k = min(n // 2, int(rate * ms / 1000))
    if k:
        env[:k] = np.linspace(0, 1, k)
        env[-k:] = np.linspace(1, 0, k)
    return env


def _tone(freq: float, seconds: float, rate: int, amp: float) -> np.ndarray:
    n = int(rate * seconds)
    t = np.arange(n) / rate
    return amp * np.sin(2 * math.pi * freq * t) * _ramp(n, rate)


def _wav(channels: list[np.ndarray], rate: int) -> bytes:
    """8-bit PCM WAV (small enough to send inline; every browser decodes it)."""
    data = np.stack(channels, axis=1) if len(channels) > 1 else channels[0][:, None]
    pcm = np.clip(np.round(data * 127 + 128), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(len(channels))
        w.setsampwidth(1)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


def beeps_wav(answer: str, seed: str = "") -> bytes:
    """Groups of short beeps, one group per digit of `answer`, a clear pause between groups."""
    rate = SAMPLE_RATE
    pitches = [660.0, 880.0, 990.0, 770.0, 550.0]
    start = _draws(seed, "pitch", 1, 0, len(pitches) - 1)[0]
    parts = [np.zeros(int(rate * 0.4))]
    for i, digit in enumerate(answer):
        freq = pitches[(start + i) % len(pitches)]
        for _ in range(int(digit)):
            parts += [_tone(freq, 0.14, rate, 0.6), np.zeros(int(rate * 0.16))]
        parts.append(np.zeros(int(rate * 0.9)))
    return _wav([np.concatenate(parts)], rate)


def headphone_wav(quietest: int, antiphase: int) -> bytes:
    """One trial of the antiphase test: three 200 Hz tones; one 6 dB quieter, one with its right channel inverted.

    Over loudspeakers the antiphase tone partly cancels in the air and sounds quietest; over
    headphones it does not, so only a listener with headphones reliably picks the quiet one.
    """
    rate = HEADPHONE_RATE
    left, right = [np.zeros(int(rate * 0.2))], [np.zeros(int(rate * 0.2))]
    for i in range(3):
        amp = 0.5 * (10 ** (-6 / 20) if i == quietest else 1.0)
        tone = _tone(200.0, 0.8, rate, amp)
        left.append(tone)
        right.append(-tone if i == antiphase else tone)
        gap = np.zeros(int(rate * 0.5))
        left.append(gap)
        right.append(gap)
    return _wav([np.concatenate(left), np.concatenate(right)], rate)


def data_url(wav: bytes) -> str:
    return "data:audio/wav;base64," + base64.b64encode(wav).decode("ascii")


# --------------------------------------------------------------------------- the browser's report

_MAX_TEXT = 500
_CAN_PLAY = ("probably", "maybe", "")


def _num(value: Any, low: float, high: float) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high)


def _text(value: Any, limit: int = _MAX_TEXT) -> bool:
    """Text either database stores: bounded, no NUL, no lone surrogate (PostgreSQL refuses both)."""
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def report_problem(report: Any, expected_codecs: list[str]) -> str | None:
    """Why a report from the browser cannot be judged (a sentence naming the field), or None.

    Checks the shape only: types, ranges, lengths, and that every codec string the page asked
    about was answered. The browser is not trusted to judge itself: `judge` decides.
    """
    if not isinstance(report, dict):
        return f"the device report must be an object, not {type(report).__name__}"
    if report.get("version") != REPORT_VERSION:
        return f"the device report has version {report.get('version')!r}; this server reads version {REPORT_VERSION}"
    allowed = {"version", "screen", "window", "pixel_ratio", "touch", "max_touch_points", "user_agent",
               "platform", "language", "codecs", "speed", "audio", "headphones", "stopped"}
    unknown = sorted(str(k)[:40] for k in report if k not in allowed)
    if unknown:
        return f"the device report has unknown fields: {', '.join(unknown[:5])}"
    for name in ("screen", "window"):
        box = report.get(name)
        if not isinstance(box, dict) or set(box) - {"width", "height"} or \
                not all(_num(box.get(k), 0, 100_000) for k in ("width", "height")):
            return f"{name} must be {{width, height}} with numbers from 0 to 100000"
    if not _num(report.get("pixel_ratio"), 0, 100):
        return "pixel_ratio must be a number from 0 to 100"
    if not isinstance(report.get("touch"), bool):
        return "touch must be true or false"
    if not _num(report.get("max_touch_points"), 0, 1000):
        return "max_touch_points must be a number from 0 to 1000"
    for name in ("user_agent", "platform", "language"):
        if not _text(report.get(name)):
            return f"{name} must be text of at most {_MAX_TEXT} characters"
    codecs = report.get("codecs")
    if not isinstance(codecs, list) or len(codecs) > 50:
        return "codecs must be a list of at most 50 entries"
    seen = set()
    for i, entry in enumerate(codecs):
        if not isinstance(entry, dict) or not _text(entry.get("mime"), 200):
            return f"codecs[{i}] must have a mime of at most 200 characters"
        if entry.get("can_play") not in _CAN_PLAY:
            return f"codecs[{i}].can_play must be one of 'probably', 'maybe' or ''"
        if entry.get("mse") not in (True, False, None):
            return f"codecs[{i}].mse must be true, false or null"
        seen.add(entry["mime"])
    missing = [m for m in expected_codecs if m not in seen]
    if missing:
        return f"the device report does not say whether the browser plays {missing[0]}"
    speed = report.get("speed")
    if speed is not None:
        if not isinstance(speed, dict) or not _num(speed.get("bytes", 0), 0, 1e10) \
                or not _num(speed.get("ms", 0), 0, 1e7) or not (speed.get("error") is None or _text(speed["error"], 200)):
            return "speed must be {bytes, ms, error} with bytes and ms from 0 and error as short text"
    audio = report.get("audio")
    if audio is not None:
        if not isinstance(audio, dict) or not _text(audio.get("typed", ""), 20) or \
                not _num(audio.get("plays", 0), 0, 1000) or not (audio.get("error") is None or _text(audio["error"], 200)):
            return "audio must be {typed (at most 20 characters), plays (a number), error}"
    phones = report.get("headphones")
    if phones is not None:
        picks = phones.get("picks") if isinstance(phones, dict) else None
        if not isinstance(picks, list) or len(picks) != HEADPHONE_TRIALS or \
                not all(p in (0, 1, 2) and not isinstance(p, bool) for p in picks):
            return f"headphones.picks must be {HEADPHONE_TRIALS} choices, each 0, 1 or 2"
    stopped = report.get("stopped")
    if stopped is not None and stopped not in REASONS:
        return f"stopped must be one of {', '.join(REASONS)} or null"
    return None


@dataclass(frozen=True)
class Expectations:
    """What the server knows about the study: computed on the server, never read from the browser."""

    codecs: tuple[str, ...] = ()
    bitrate_kbps: float | None = None  # the highest bitrate of the study's clips


@dataclass(frozen=True)
class Verdict:
    passed: bool
    failed: tuple[str, ...]  # reasons, in REASONS order
    retry_audio: bool  # the sound test was wrong and may be tried again
    device_info: dict = field(default_factory=dict)


def browser_name(user_agent: str) -> str:
    """'Chrome 156', 'Firefox 133', 'Safari 18', 'Edge 131' ... from a user agent, or 'other'."""
    for name, pattern in (("Edge", r"Edg/(\d+)"), ("Opera", r"OPR/(\d+)"), ("Samsung Internet", r"SamsungBrowser/(\d+)"),
                          ("Firefox", r"Firefox/(\d+)"), ("Chrome", r"(?:Chrome|Chromium|CriOS)/(\d+)"),
                          ("Safari", r"Version/(\d+)[\d.]* (?:Mobile/\w+ )?Safari")):
        m = re.search(pattern, user_agent or "")
        if m:
            return f"{name} {m.group(1)}"
    return "other"


def _typed_digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def judge(report: dict, settings, expect: Expectations, seed: str, before: Any = None) -> Verdict:
    """The verdict on a well-formed report (`report_problem` gave None) under the study's `settings`.

    `before`: device_info stored so far (earlier sound-test attempts count against
    `settings.audio_attempts`). Hard failures (codec, window, connection) end the check at once;
    the browser may stop early (`stopped`) when one of them is clear, and then sends no answers.
    """
    before = before if isinstance(before, dict) else {}
    codec_rows = [{"mime": c["mime"], "can_play": c["can_play"], "mse": c.get("mse")} for c in report["codecs"]]
    by_mime = {c["mime"]: c for c in codec_rows}
    unplayable = [m for m in expect.codecs
                  if by_mime[m]["can_play"] == "" and by_mime[m]["mse"] is not True]
    win = report["window"]
    window_ok = win["width"] >= settings.min_width and win["height"] >= settings.min_height
    speed = report.get("speed") or {}
    kbps = None
    if speed.get("bytes") and speed.get("ms") and not speed.get("error"):
        kbps = round(speed["bytes"] * 8 / speed["ms"], 1)  # bytes per ms x 8 = kbit/s
    needed = None
    if settings.min_speed_factor and expect.bitrate_kbps:
        needed = round(settings.min_speed_factor * expect.bitrate_kbps, 1)
    connection_ok = needed is None or kbps is None or kbps >= needed
    failed = []
    if unplayable:
        failed.append("codec")
    if not window_ok:
        failed.append("window")
    if not connection_ok:
        failed.append("connection")

    attempts = list(before.get("audio_attempts") or [])
    audio_ok = None
    retry = False
    audio = report.get("audio")
    if settings.audio_test and not failed:
        expected = digits(seed, len(attempts))
        typed = _typed_digits((audio or {}).get("typed", ""))
        audio_ok = typed == expected
        attempts.append({"expected": expected, "typed": typed, "plays": int((audio or {}).get("plays") or 0),
                         "error": (audio or {}).get("error"), "ok": audio_ok})
        if not audio_ok:
            if len(attempts) < settings.audio_attempts:
                retry = True
            else:
                failed.append("audio")
    headphones_right = None
    if settings.headphone_check and not failed and not retry:
        picks = ((report.get("headphones") or {}).get("picks")) or []
        plan = headphone_plan(seed)
        headphones_right = sum(1 for pick, (quiet, _) in zip(picks, plan) if pick == quiet)
        if headphones_right < HEADPHONE_PASS:
            failed.append("headphones")
    screen = report["screen"]
    info = {
        "seed": seed,
        "screen_width": screen["width"], "screen_height": screen["height"],
        "window_width": win["width"], "window_height": win["height"],
        "pixel_ratio": report["pixel_ratio"], "touch": report["touch"],
        "max_touch_points": report["max_touch_points"],
        "user_agent": report["user_agent"], "browser": browser_name(report["user_agent"]),
        "platform": report["platform"], "language": report["language"],
        "codecs": codec_rows, "codecs_ok": not unplayable, "unplayable_codecs": unplayable,
        "window_ok": window_ok, "min_width": settings.min_width, "min_height": settings.min_height,
        "speed_kbps": kbps, "speed_needed_kbps": needed, "speed_error": speed.get("error"),
        "connection_ok": connection_ok,
        "audio_attempts": attempts, "audio_ok": audio_ok,
        "headphone_picks": (report.get("headphones") or {}).get("picks"),
        "headphone_right": headphones_right,
        "headphone_ok": None if headphones_right is None else headphones_right >= HEADPHONE_PASS,
        "passed": not failed and not retry, "failed": failed,
    }
    return Verdict(passed=not failed and not retry, failed=tuple(r for r in REASONS if r in failed),
                   retry_audio=retry, device_info=info)


def excluded_reason(failed) -> str:
    return "device check failed: " + ", ".join(failed)


def expectations(manifest: list[dict], manifest_dir: str | None, settings) -> Expectations:
    """The codec strings to ask the browser about and the highest clip bitrate, from the registered manifest.

    Codec strings: the study file's `device_check.codecs` if given, else those the probe reads
    from each clip file (study.stimuli.codec_mime), one per distinct string. Clips given by URL
    are not probed; name their codecs in the study file. Bitrate: size x 8 / duration.
    """
    from pathlib import Path

    codecs: list[str] = list(settings.codecs)
    rates = []
    for clip in manifest or []:
        size, duration = clip.get("size_bytes"), clip.get("duration_s")
        if size and duration:
            rates.append(size * 8 / 1000 / duration)
        if not settings.codecs and clip.get("file") and manifest_dir:
            mime = _mime_cached(str(Path(manifest_dir) / clip["file"]), clip.get("sha256") or "")
            if mime and mime not in codecs:
                codecs.append(mime)
    return Expectations(codecs=tuple(codecs), bitrate_kbps=round(max(rates), 1) if rates else None)


_MIME_CACHE: dict[tuple[str, str], str | None] = {}


def _mime_cached(path: str, sha256: str) -> str | None:
    from study.stimuli import codec_mime

    key = (path, sha256)
    if key not in _MIME_CACHE:
        if len(_MIME_CACHE) > 4096:
            _MIME_CACHE.clear()
        _MIME_CACHE[key] = codec_mime(path)
    return _MIME_CACHE[key]


# --------------------------------------------------------------------------- export

# participants.csv columns from device_info: (column, device_info key, type, description).
# The seed, the full user agent and the expected digits stay in the database.
EXPORT_COLUMNS: list[tuple[str, str, str, str]] = [
    ("device_check_passed", "passed", "boolean", "Whether the device check before consent was passed."),
    ("device_check_failed", "failed", "string", "Why the device check failed: codec, window, connection, audio, "
                                                "headphones (several separated by ';')."),
    ("device_browser", "browser", "string", "Browser and major version, from the user agent (e.g. Chrome 156)."),
    ("device_platform", "platform", "string", "Operating system as the browser reports it."),
    ("device_language", "language", "string", "The browser's language setting."),
    ("device_screen_width", "screen_width", "integer", "Screen width in CSS pixels."),
    ("device_screen_height", "screen_height", "integer", "Screen height in CSS pixels."),
    ("device_window_width", "window_width", "integer", "Browser window (viewport) width in CSS pixels at the check."),
    ("device_window_height", "window_height", "integer", "Browser window (viewport) height in CSS pixels at the check."),
    ("device_pixel_ratio", "pixel_ratio", "number", "Device pixels per CSS pixel (2 = a high-density screen)."),
    ("device_touch", "touch", "boolean", "Whether the device has a touch screen."),
    ("device_codecs_ok", "codecs_ok", "boolean", "Whether the browser said it can play every codec string of the "
                                                 "study's clips (canPlayType or MediaSource.isTypeSupported)."),
    ("device_codecs", "codecs", "json", "Per codec string: canPlayType's answer (probably, maybe or empty) and "
                                        "MediaSource.isTypeSupported's (JSON list)."),
    ("device_speed_kbps", "speed_kbps", "number", "Download speed of a ranged fetch of the first clip, kbit/s."),
    ("device_speed_needed_kbps", "speed_needed_kbps", "number", "The speed needed: min_speed_factor x the clips' "
                                                                "highest bitrate, kbit/s."),
    ("device_audio_attempts", "audio_attempts", "count", "How many times the sound test was answered."),
    ("device_audio_ok", "audio_ok", "boolean", "Whether the last answer to the sound test was right."),
    ("device_headphone_right", "headphone_right", "integer", "Headphone check: trials (of 6) where the quietest "
                                                             "tone was picked."),
    ("device_headphone_ok", "headphone_ok", "boolean", "Headphone check passed (at least 5 of 6)."),
]


def export_values(device_info: Any) -> dict[str, Any]:
    """One participant's device_info as EXPORT_COLUMNS values (None where not measured)."""
    import json

    info = device_info if isinstance(device_info, dict) else {}
    if isinstance(device_info, str):  # some drivers hand JSON back as text
        try:
            info = json.loads(device_info)
        except ValueError:
            info = {}
    out: dict[str, Any] = {}
    for column, key, kind, _ in EXPORT_COLUMNS:
        value = info.get(key)
        if kind == "count":
            value = len(value) if isinstance(value, list) else None
        elif kind == "json":
            value = json.dumps(value, sort_keys=True) if value is not None else None
        elif kind == "string" and isinstance(value, list):
            value = ";".join(map(str, value)) if value else None
        out[column] = value
    return out
