"""The web server: Streamlit (participants and researchers) plus two plain HTTP routes.

    GET  /clips/{study_id}/{stimulus_id}   a clip file: range requests (206), ETag and
                                           Last-Modified (304), Cache-Control
    GET  /captions/{study_id}/{stimulus_id}  its WebVTT captions (text/vtt), checked the same way
    GET  /stills/{study_id}/{stimulus_id}    a JPEG still of the clip's midpoint (follow-ups; cached on
                                           disk, study/stills.py), the clip found the same way
    POST /api/events                       the player's batched playback events
    POST /api/traces                       continuous-rating traces and moment marks, in batches
    POST /api/builder/upload               a clip, captions or a study zip for the study builder,
                                           streamed to disk with a size limit (researchers only)

Clips are served as files rather than through `st.video(path)`, which re-reads the file on
every script run and keeps it in the process's memory. Events arrive in batches on their own
route, so a pause or a stall never costs a Streamlit rerun.

`serve()` migrates the database once before anything listens, because several processes
migrating at once race on PostgreSQL. It sets Streamlit's configuration itself (from the
.streamlit/config.toml beside app.py), so the app looks and behaves the same whatever folder
it is started from, and it starts the job that marks timed-out participants (one thread per
process), so no page has to write while it displays.
"""

from __future__ import annotations

import email.utils
import json
import math
import mimetypes
import os
import re
import secrets
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from study import store
from study.access import pilot_key, researcher_password
from study.config import app_processes, database_url, production, setting
from study.errors import UserError

ROOT = Path(__file__).resolve().parent
APP_SCRIPT = ROOT / "app.py"
STREAMLIT_CONFIG = ROOT / ".streamlit" / "config.toml"

MAX_EVENTS_BYTES = 256 * 1024
MAX_EVENTS_PER_BATCH = 500
# 50 batches of 3 s at 10 Hz with marks are ~40 KB; an offline backlog is sent in several requests.
MAX_TRACES_BYTES = 512 * 1024
CLIP_CACHE_CONTROL = "public, max-age=86400"
# Only media (and subtitles) leave this route: a manifest pointing at an .html file must never
# turn the app's own origin into a place that serves researcher-supplied pages.
SERVABLE_TYPES = ("video/", "audio/", "image/", "text/vtt")
_RESOLVE_TTL_S = 30.0

mimetypes.add_type("video/mp4", ".m4v")
mimetypes.add_type("text/vtt", ".vtt")


# --------------------------------------------------------------------------- clip lookup


@dataclass
class ClipResolver:
    """Maps (study id, stimulus id) to a file inside that study's stimulus folder.

    The folder of a study comes from `roots` (filled by `serve` for the study file it opened)
    or from the database record. Manifest entries are cached briefly: a browser asks for the
    same clip several times (range requests), and they change only when a study is
    re-registered. The file itself is checked at every request.
    """

    engine: Any
    roots: dict[str, Path]

    def __post_init__(self) -> None:
        self._cache: dict[tuple[str, str, str], tuple[float, tuple[Path, str] | None]] = {}
        self._lock = threading.Lock()

    def resolve(self, study_id: str, stimulus_id: str, what: str = "clip") -> Path | None:
        """The clip's real file (what="captions": its caption file), checked against the folder
        now: only the manifest entry is cached, never the resolved path, so a clip swapped for a
        link that leads outside the folder is refused on the next request."""
        if "\x00" in study_id or "\x00" in stimulus_id:
            return None  # no id holds a NUL, and PostgreSQL refuses one in a query (a 500)
        key = (study_id, stimulus_id, what)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit and now - hit[0] < _RESOLVE_TTL_S:
            entry = hit[1]
        else:
            entry = self._lookup(study_id, stimulus_id, what)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = (now, entry)
        return None if entry is None else _contained_file(*entry, stimulus_id)

    def _folder(self, study_id: str) -> Path | None:
        if study_id in self.roots:
            return self.roots[study_id]
        try:
            info = store.get_study(self.engine, study_id)
        except (UserError, LookupError):
            return None
        return Path(info.manifest_dir).resolve() if info.manifest_dir else None

    def _lookup(self, study_id: str, stimulus_id: str, what: str = "clip") -> tuple[Path, str] | None:
        """(stimulus folder, file as written in the manifest) from the database, or None."""

        folder = self._folder(study_id)
        if folder is None:
            return None
        lookup = store.stimulus_captions if what == "captions" else store.stimulus_file
        file = lookup(self.engine, study_id, stimulus_id)
        if not file:
            return None
        return folder, file


def _contained_file(folder: Path, file: str, stimulus_id: str) -> Path | None:
    """The real path (links followed) of a clip if it is a file inside `folder`, else None."""
    from study.stimuli import Stimulus, stimulus_path

    try:
        path = stimulus_path(folder, Stimulus.model_construct(id=stimulus_id, file=file))
    except UserError:
        return None
    # stimulus_path already refuses traversal; checked again here because this is the
    # one place where a request path becomes a file read.
    if not path.is_relative_to(folder):
        return None
    return path


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    strip = lambda tag: tag.strip().removeprefix("W/")  # noqa: E731 - weak comparison, RFC 9110 13.1.2
    return any(strip(tag) == strip(etag) for tag in header.split(","))


def _not_modified(request: Request, response: FileResponse) -> bool:
    inm = request.headers.get("if-none-match")
    if inm is not None:
        return _etag_matches(inm, response.headers["etag"])
    ims = request.headers.get("if-modified-since")
    if ims:
        try:
            since = email.utils.parsedate_to_datetime(ims)
            modified = email.utils.parsedate_to_datetime(response.headers["last-modified"])
        except (TypeError, ValueError):
            return False
        return modified <= since
    return False


def _clip_route(resolver: ClipResolver, what: str = "clip"):
    # Captions are only ever text/vtt (a manifest's captions column must name a .vtt file).
    servable = ("text/vtt",) if what == "captions" else SERVABLE_TYPES

    async def clip(request: Request) -> Response:
        study_id = request.path_params["study_id"]
        stimulus_id = request.path_params["stimulus_id"]
        path = await run_in_threadpool(resolver.resolve, study_id, stimulus_id, what)
        if path is None or not path.is_file():
            return PlainTextResponse(f"no such {what}", status_code=404)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if not media_type.startswith(servable):
            return PlainTextResponse(f"no such {what}", status_code=404)
        response = FileResponse(
            path,
            media_type=media_type,
            headers={"Cache-Control": CLIP_CACHE_CONTROL, "X-Content-Type-Options": "nosniff"},
            stat_result=await run_in_threadpool(os.stat, path),
        )
        if _not_modified(request, response):
            keep = ("etag", "last-modified", "cache-control")
            return Response(status_code=304, headers={k: response.headers[k] for k in keep})
        return response

    return clip


def _still_route(resolver: ClipResolver):
    """A clip's still (study/stills.py): the clip is found exactly as the clip route finds it
    (the folder checked at every request), then its cached midpoint frame is served."""
    from study import stills

    async def still(request: Request) -> Response:
        study_id = request.path_params["study_id"]
        stimulus_id = request.path_params["stimulus_id"]
        path = await run_in_threadpool(resolver.resolve, study_id, stimulus_id)
        if path is None or not path.is_file():
            return PlainTextResponse("no such still", status_code=404)
        if not (mimetypes.guess_type(path.name)[0] or "").startswith("video/"):
            return PlainTextResponse("no such still", status_code=404)
        image = await run_in_threadpool(stills.still_for, path)
        if image is None:
            return PlainTextResponse("no such still", status_code=404)
        response = FileResponse(image, media_type="image/jpeg",
                                headers={"Cache-Control": CLIP_CACHE_CONTROL, "X-Content-Type-Options": "nosniff"},
                                stat_result=await run_in_threadpool(os.stat, image))
        if _not_modified(request, response):
            keep = ("etag", "last-modified", "cache-control")
            return Response(status_code=304, headers={k: response.headers[k] for k in keep})
        return response

    return still


# --------------------------------------------------------------------------- events


class _TooLarge(Exception):
    pass


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


MAX_JSON_DEPTH = 16  # the player nests 3 deep; a hostile body nests until the parser recurses out
MAX_INT_DIGITS = 18
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth(body: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest, counted without parsing it
    (Python's parser recurses once per level and fails with RecursionError on deep input)."""
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', body)):
        if match.group() in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _refused(reason: str):
    from study.store import RefusedValue

    return RefusedValue(reason)


def _parse_int(text: str):
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return _refused(f"holds a number of {len(text)} digits")
    return int(text)


def _parse_float(text: str):
    number = float(text)
    return number if math.isfinite(number) else _refused(f"holds a number out of range ({text[:20]})")


def parse_json_strictly(body: bytes) -> Any:
    """JSON that both databases can store: a bounded depth, and NaN, Infinity or huge numbers
    replaced by RefusedValue markers, so that only the event holding one is refused."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"the body is not valid JSON (UnicodeDecodeError: {exc})") from None
    if (depth := json_depth(body)) > MAX_JSON_DEPTH:
        raise UserError(f"the body nests {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted")
    try:
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                          parse_constant=lambda name: _refused(f"holds {name}, which is not a number"))
    except json.JSONDecodeError as exc:
        raise UserError(f"the body is not valid JSON (JSONDecodeError: {exc})") from None


def _shape_problem(ev: Any) -> str | None:
    """The checks that need no database; the store checks the rest (position, type, detail)."""
    from study.store import RefusedValue, unsafe_json

    if not isinstance(ev, dict):
        return "must be an object"
    seq = ev.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return "seq must be an integer" + (f" (it {seq.reason})" if isinstance(seq, RefusedValue) else "")
    if not isinstance(ev.get("event"), str) or not ev["event"]:
        return "event must be a non-empty string"
    if why := unsafe_json(ev):
        return why
    return None


def parse_events_payload(body: bytes) -> tuple[str, list]:
    """Check the shape of an events POST as a whole; raises UserError with a message for the
    client. Each event is judged later, on its own."""
    payload = parse_json_strictly(body)
    if not isinstance(payload, dict):
        raise UserError("the body must be a JSON object with 'token' and 'events'")
    token = payload.get("token")
    events = payload.get("events")
    if not isinstance(token, str) or not token:
        raise UserError("'token' must be a non-empty string")
    from study.store import bad_text

    if why := bad_text(token):
        raise UserError(f"'token' {why}")
    if not isinstance(events, list):
        raise UserError("'events' must be a list")
    if len(events) > MAX_EVENTS_PER_BATCH:
        raise UserError(f"at most {MAX_EVENTS_PER_BATCH} events per request, got {len(events)}")
    return token, events


def _seq_of(ev: Any) -> int | None:
    seq = ev.get("seq") if isinstance(ev, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


async def _parsed_body(request: Request, limit: int, parse):
    """The POST body read within `limit` bytes and parsed, or the 413/400 answer that says why not."""
    try:
        body = await _read_limited(request, limit)
    except _TooLarge:
        return JSONResponse({"error": f"request larger than {limit} bytes"}, status_code=413)
    try:
        return parse(body)
    except UserError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)


def _preview_dropped(received: int) -> Response:
    """A researcher's preview (study/store/preview.py) records nothing: what its player sends is
    answered as settled (every index accepted, so the browser never sends it again) and dropped."""
    return JSONResponse({"received": received, "recorded": 0, "accepted": list(range(received)), "refused": [],
                         "preview": True})


def _events_route(engine: Any):
    import asyncio

    from study import store

    writer = GroupWriter(engine, store.record_event_requests, "kuleshov-events")

    async def post_events(request: Request) -> Response:
        parsed = await _parsed_body(request, MAX_EVENTS_BYTES, parse_events_payload)
        if isinstance(parsed, Response):
            return parsed
        token, events = parsed
        if store.is_preview_token(token):
            return _preview_dropped(len(events))
        refused = {i: why for i, ev in enumerate(events) if (why := _shape_problem(ev))}
        kept = [i for i in range(len(events)) if i not in refused]
        recorded, accepted = 0, []
        if kept or not events:  # an empty batch still says whether the token is valid
            # Written together with the other requests that arrive meanwhile (GroupWriter).
            outcome = await asyncio.wrap_future(writer.submit(token, [events[i] for i in kept]))
            if isinstance(outcome, UserError):
                # Unknown token, withdrawn participant, closed study: the batch is refused for good.
                return JSONResponse({"error": str(outcome)}, status_code=403)
            recorded = outcome.recorded
            accepted = [kept[j] for j in outcome.accepted]
            refused.update({kept[j]: why for j, why in outcome.refused.items()})
        answer: dict[str, Any] = {
            "received": len(events), "recorded": int(recorded), "accepted": accepted,
            "refused": [{"index": i, "seq": _seq_of(events[i]), "reason": f"events[{i}]: {why}"}
                        for i, why in sorted(refused.items())],
        }
        if not refused:
            return JSONResponse(answer)
        # 400 says "do not send these again"; the accepted ones are stored all the same.
        first = answer["refused"][0]["reason"]
        answer["error"] = (f"{len(refused)} of {len(events)} events refused (the others were stored); "
                           f"first: {first}")
        return JSONResponse(answer, status_code=400)

    return post_events


def parse_traces_payload(body: bytes) -> tuple[str, list]:
    """Check the shape of a traces POST as a whole ({token, batches}); raises UserError."""
    payload = parse_json_strictly(body)
    if not isinstance(payload, dict):
        raise UserError("the body must be a JSON object with 'token' and 'batches'")
    token, batches = payload.get("token"), payload.get("batches")
    if not isinstance(token, str) or not token:
        raise UserError("'token' must be a non-empty string")
    if not isinstance(batches, list):
        raise UserError("'batches' must be a list")
    if len(batches) > store.MAX_BATCHES_PER_REQUEST:
        raise UserError(f"at most {store.MAX_BATCHES_PER_REQUEST} batches per request, got {len(batches)}")
    return token, batches


class GroupWriter:
    """One thread per process that writes one kind of request, many requests per transaction.

    A request that arrives while a commit is under way waits for the next one together with
    every other request that arrived meanwhile (`record_many(engine, [(token, payload), ...])`
    answers each with its outcome, a UserError or an exception: store.record_trace_requests,
    store.record_event_requests), so at 100 participants sending a batch every 2-3 s the commits
    (an fsync each on SQLite with synchronous=FULL, a pool connection each on PostgreSQL) are
    shared instead of queued one by one on the write lock or the pool.
    """

    MAX_GROUP = 200

    def __init__(self, engine: Any, record_many: Callable[[Any, list], list], name: str) -> None:
        import queue

        self.engine = engine
        self.record_many = record_many
        self.name = name
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, token: str, payload: list):
        from concurrent.futures import Future

        future: Future = Future()
        self._queue.put((token, payload, future))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
        return future

    def _loop(self) -> None:
        import queue

        while True:
            group = [self._queue.get()]
            while len(group) < self.MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            # In token order (a stable sort keeps one participant's requests in arrival order):
            # each request updates its participant's row, and the events and traces writers'
            # transactions, each over many participants, deadlocked on PostgreSQL when they
            # took the same rows in different orders (300 participants, one or two a run, the
            # loser's whole group answered 503). One order for every writer takes them in turn.
            group.sort(key=lambda request: request[0])
            outcomes = None
            for _ in range(2):  # once more after a failure (its transaction was rolled back: nothing of it is stored)
                try:
                    outcomes = self.record_many(self.engine, [(tok, b) for tok, b, _ in group])
                    break
                except Exception as exc:  # the database failed: every request of the group may retry
                    failure = exc
            if outcomes is None:
                for _, _, future in group:
                    future.set_exception(failure)
                continue
            for (_, _, future), outcome in zip(group, outcomes):
                if isinstance(outcome, Exception) and not isinstance(outcome, UserError):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


def _traces_route(engine: Any):
    import asyncio

    writer = GroupWriter(engine, store.record_trace_requests, "kuleshov-traces")

    async def post_traces(request: Request) -> Response:
        parsed = await _parsed_body(request, MAX_TRACES_BYTES, parse_traces_payload)
        if isinstance(parsed, Response):
            return parsed
        token, batches = parsed
        if store.is_preview_token(token):
            return _preview_dropped(len(batches))
        try:
            outcome = await asyncio.wrap_future(writer.submit(token, batches))
        except Exception as exc:
            print(f"kuleshov: storing trace batches failed ({exc.__class__.__name__}: {exc})", file=sys.stderr)
            return JSONResponse({"error": "the batches could not be stored now; send them again"}, status_code=503)
        if isinstance(outcome, UserError):
            # The shape was checked above: what is left is the token (unknown, withdrawn, closed).
            return JSONResponse({"error": str(outcome)}, status_code=403)
        answer: dict[str, Any] = {
            "received": len(batches), "recorded": outcome.recorded, "accepted": outcome.accepted,
            "refused": [{"index": i, "reason": f"batches[{i}]: {why}"} for i, why in sorted(outcome.refused.items())],
        }
        if not outcome.refused:
            return JSONResponse(answer)
        # 400 says "do not send these again"; the accepted ones are stored all the same.
        answer["error"] = (f"{len(outcome.refused)} of {len(batches)} batches refused (the others were stored); "
                           f"first: {answer['refused'][0]['reason']}")
        return JSONResponse(answer, status_code=400)

    return post_traces


def _builder_upload_route(engine: Any):
    """The study builder's uploads: `?ticket=T&name=FILE[&kind=zip]`, the file as the body.

    The ticket is issued by the builder page to a logged-in researcher for one draft
    (study.builder.TICKETS); the researcher is checked against the database again here (role
    editor or owner, account not locked), so a viewer, or a ticket of an account locked since,
    is refused. The body is written to disk as it arrives, never held in memory, and refused
    past KULESHOV_MAX_CLIP_MB (zips: KULESHOV_MAX_STUDY_ZIP_MB)."""
    from study import builder

    async def upload(request: Request) -> Response:
        token = request.query_params.get("ticket", "")
        ticket = builder.TICKETS.get(token)
        if ticket is None:
            return JSONResponse({"error": "no valid upload ticket: reload the builder page"}, status_code=403)
        try:
            await run_in_threadpool(store.authorize, engine, ticket.researcher, "register")
        except UserError as exc:
            return JSONResponse({"error": str(exc)}, status_code=403)
        name = request.query_params.get("name", "")[:200] or "upload"
        is_zip = request.query_params.get("kind") == "zip"
        limit = builder.max_zip_bytes() if is_zip else builder.max_clip_bytes()
        draft = builder.Draft(ticket.folder)
        try:
            up = (builder.Upload(draft, name, limit, suffixes=(".zip",), setting="KULESHOV_MAX_STUDY_ZIP_MB")
                  if is_zip else builder.Upload(draft, name, limit))
        except UserError as exc:
            builder.TICKETS.deliver(token, ("error", name, str(exc)))
            return JSONResponse({"error": str(exc)}, status_code=400)
        declared = request.headers.get("content-length")
        try:
            if declared and declared.isdigit() and int(declared) > limit:
                up.abort()
                raise UserError(up.too_big_message())
            async for chunk in request.stream():
                up.write(chunk)
            if is_zip:
                path = up.close()
                try:
                    new = await run_in_threadpool(builder.open_zip, path, ticket.folder.parent.parent, limit)
                finally:
                    path.unlink(missing_ok=True)
                builder.TICKETS.deliver(token, ("zip", name, str(new.folder)))
                return JSONResponse({"ok": True, "message": f"{name}: opened"})
            received = await run_in_threadpool(up.finish)
        except UserError as exc:
            up.abort()
            builder.TICKETS.deliver(token, ("error", name, str(exc)))
            return JSONResponse({"error": str(exc)}, status_code=413 if "limit" in str(exc) else 400)
        except BaseException:
            up.abort()
            raise
        builder.TICKETS.deliver(token, ("clip", name, received))
        return JSONResponse({"ok": True, "file": received.filename, "sha256": received.sha256,
                             "size_bytes": received.size_bytes, "warnings": received.warnings})

    return upload


async def _health(_request: Request) -> Response:
    return PlainTextResponse("ok")


# --------------------------------------------------------------------------- framework endpoints

# Streamlit's own endpoints that tell a stranger about the server's state: the metrics (cache
# names and sizes, e.g. that an interim report was computed) and the agent API (off by default;
# closed here too so that a config change cannot open it to participants).
_CLOSED_PATHS = ("/_stcore/metrics",)
_CLOSED_PREFIXES = ("/_stcore/agent/",)


class CloseFrameworkEndpoints:
    """ASGI middleware answering 404 for the paths above, whatever the base URL in front."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and _closed(scope.get("path", "")):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await PlainTextResponse("not found", status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _closed(path: str) -> bool:
    path = "/" + path.strip("/")
    return (any(path.endswith(closed) for closed in _CLOSED_PATHS)
            or any(prefix.rstrip("/") in path for prefix in _CLOSED_PREFIXES))


# --------------------------------------------------------------------------- app


def make_routes(engine: Any, resolver: ClipResolver) -> list[Route]:
    return [
        Route("/clips/{study_id}/{stimulus_id}", _clip_route(resolver), methods=["GET", "HEAD"]),
        Route("/captions/{study_id}/{stimulus_id}", _clip_route(resolver, "captions"), methods=["GET", "HEAD"]),
        Route("/stills/{study_id}/{stimulus_id}", _still_route(resolver), methods=["GET", "HEAD"]),
        Route("/api/events", _events_route(engine), methods=["POST"]),
        Route("/api/traces", _traces_route(engine), methods=["POST"]),
        Route("/api/builder/upload", _builder_upload_route(engine), methods=["POST"]),
        Route("/api/health", _health, methods=["GET"]),
    ]


def make_app(engine: Any = None, clip_roots: dict[str, Path] | None = None, *, streamlit: bool = True):
    """The ASGI app. `streamlit=False` gives only the plain routes (a Starlette app for tests)."""
    from starlette.applications import Starlette

    if engine is None:
        engine = store.shared_engine(database_url())
    resolver = ClipResolver(engine, {k: Path(v).resolve() for k, v in (clip_roots or {}).items()})
    routes = make_routes(engine, resolver)
    from starlette.middleware import Middleware

    middleware = [Middleware(CloseFrameworkEndpoints)]
    if not streamlit:
        return Starlette(routes=routes, middleware=middleware)
    import streamlit as st

    configure_streamlit()
    return st.App(str(APP_SCRIPT), routes=routes, middleware=middleware)


# --------------------------------------------------------------------------- configuration


def streamlit_options(path: Path = STREAMLIT_CONFIG) -> dict[str, Any]:
    """The app's Streamlit options ("section.option" -> value) from the config.toml beside app.py."""
    options: dict[str, Any] = {}

    def flatten(table: dict, prefix: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                flatten(value, f"{prefix}{key}.")
            else:
                options[f"{prefix}{key}"] = value

    flatten(tomllib.loads(path.read_text(encoding="utf-8")), "")
    return options


def configure_streamlit(path: Path = STREAMLIT_CONFIG) -> None:
    """Apply the app's options over whatever Streamlit found in the working directory.

    Streamlit reads .streamlit/config.toml from the folder it is started in: started anywhere
    else, the participant page showed the Deploy button and developer menu, lost the theme and
    sent usage statistics. Set before the app is built, these win over any file.
    """
    from streamlit import config

    for key, value in streamlit_options(path).items():
        config.set_option(key, value, where_defined=str(path))


# --------------------------------------------------------------------------- timeout job


class TimeoutJob:
    """Marks timed-out participants of every study that takes answers, every `interval_s` seconds.

    One daemon thread per server process (`serve` starts it), so timeouts are marked whether or
    not anyone has a page open, and no page writes while it displays. `clock` gives the time
    compared with each study's timeout_minutes (a test passes a fake one).
    """

    def __init__(self, engine: Any, interval_s: float, clock: Callable[[], Any] = store.utcnow) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> dict[str, int]:
        try:
            return store.mark_all_timed_out(self.engine, self.clock())
        except Exception as exc:  # a database hiccup must not end the job; the next run retries
            print(f"kuleshov: marking timeouts failed ({exc.__class__.__name__}: {exc}); retrying in "
                  f"{self.interval_s:g} s", file=sys.stderr)
            return {}

    def _loop(self) -> None:
        while True:
            self.run_once()
            if self._stop.wait(self.interval_s):
                return

    def start(self) -> "TimeoutJob":
        if self._thread is None and self.interval_s > 0:
            self._thread = threading.Thread(target=self._loop, name="kuleshov-timeouts", daemon=True)
            self._thread.start()
        return self

    def stop(self, wait_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait_s)


# --------------------------------------------------------------------------- serve


def serve(host: str = "127.0.0.1", port: int = 8501, study_file: str | None = None) -> int:
    """Migrate, register the study file (if any), print the links, run until stopped."""
    import uvicorn

    # Every setting is read (and a bad value refused) before anything is touched.
    is_production = production()
    log_level = setting("KULESHOV_LOG_LEVEL")
    timeout_check_s = setting("KULESHOV_TIMEOUT_CHECK_S")
    password = researcher_password()
    generated = False
    if not password:
        if is_production:
            raise UserError(
                "no researcher password: set KULESHOV_RESEARCHER_PASSWORD or researcher_password in "
                ".streamlit/secrets.toml (KULESHOV_MODE=production never starts without one)"
            )
        password = secrets.token_urlsafe(12)
        generated = True
        # The app runs in this process and reads the same variable.
        os.environ["KULESHOV_RESEARCHER_PASSWORD"] = password

    engine = store.shared_engine(database_url())
    store.check_connection_budget(engine, app_processes())
    store.upgrade(engine)

    roots: dict[str, Path] = {}
    study_id = None
    if study_file:
        study_id = store.register_study(engine, study_file)
        roots[study_id] = _manifest_dir(Path(study_file))
        store.set_study_status(engine, study_id, "open")

    app = make_app(engine, roots)
    TimeoutJob(engine, timeout_check_s).start()
    shown_host = "localhost" if host in ("0.0.0.0", "127.0.0.1", "::") else host
    base = f"http://{shown_host}:{port}"
    print(f"Kuleshov on {base}  (database: {engine.url.render_as_string(hide_password=True)})")
    if study_id:
        print(f"  participant link:  {base}/?study={study_id}")
        print(f"  pilot link:        {base}/?study={study_id}&pilot={pilot_key(study_id, password)}")
    print(f"  researcher pages:  {base}/researcher")
    accounts = len(store.list_researchers(engine))
    if accounts:
        # The password above stays the secret behind pilot links; it no longer logs in.
        print(f"  researcher login:  your own account ({accounts} in `kuleshov researcher list`)")
    elif generated:
        print(f"  researcher password (generated for this demo run): {password}")
    sys.stdout.flush()
    # The player posts events every few seconds on a kept-alive connection; uvicorn's 5 s
    # default would close it just as the next batch is sent.
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=30, **proxy_options())
    return 0


def proxy_options() -> dict[str, Any]:
    """uvicorn's X-Forwarded-For handling, on only for KULESHOV_TRUSTED_PROXIES. uvicorn's own
    default believes the header from 127.0.0.1, so anyone on the machine (or any local proxy
    that passes the header through) could pick the address the login rate limit counts."""
    from study.config import trusted_proxies

    proxies = trusted_proxies()
    return {"proxy_headers": bool(proxies), "forwarded_allow_ips": proxies}


def _manifest_dir(study_file: Path) -> Path:
    from study.protocol import load_study

    return load_study(study_file).manifest_path.parent
