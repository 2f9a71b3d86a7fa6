"""Still frames of clips for the follow-up's recognition and per-clip pages (PyAV).

One JPEG per clip file, taken at the clip's midpoint, extracted on first request and cached
on disk in KULESHOV_DATA_DIR/stills (beside the data, never in the repository). The cache key
is the clip's real path, size and modification time, so a replaced clip gets a new still.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

MAX_WIDTH = 960


def cache_dir() -> Path:
    from study import config

    folder = config.data_dir() / "stills"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def still_for(clip: Path, folder: Path | None = None) -> Path | None:
    """The cached still of `clip` (made now if missing); None if the file has no decodable video."""
    folder = folder or cache_dir()
    st = clip.stat()
    key = hashlib.sha256(f"{clip.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]
    out = folder / f"{key}.jpg"
    if out.is_file():
        return out
    image = midpoint_frame(clip)
    if image is None:
        return None
    if image.width > MAX_WIDTH:
        image = image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)))
    # written beside, then renamed: two requests at once never serve half a file
    fd, tmp = tempfile.mkstemp(suffix=".jpg", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.convert("RGB").save(fh, "JPEG", quality=85)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def midpoint_frame(clip: Path):
    """A PIL image of the first frame at or after the clip's midpoint (the first frame if seeking fails)."""
    import av

    try:
        with av.open(str(clip), metadata_errors="ignore") as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / 1_000_000
            mid = (duration or 0) / 2
            if mid > 0 and stream.time_base is not None:
                container.seek(int(mid / stream.time_base), stream=stream, backward=True, any_frame=False)
            first = None
            for frame in container.decode(stream):
                first = first or frame
                if frame.time is None or frame.time >= mid - 1e-3:
                    return frame.to_image()
            return first.to_image() if first is not None else None
    except (av.error.FFmpegError, OSError, ValueError):
        return None
