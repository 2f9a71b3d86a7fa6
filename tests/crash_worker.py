"""A burst of participants submitting pages through the real store, for tests/test_crash.py.

    python tests/crash_worker.py DATABASE_URL STUDY_ID THREADS

Prints `enrolled TOKEN` after each enrolment and `ack TOKEN STEP_KEY N_ITEMS` after each page
whose transaction committed (flushed at once), so the parent knows exactly what was
acknowledged when it kills this process with SIGKILL.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from study import flow, store  # noqa: E402
from study.flow import Answer  # noqa: E402

_print_lock = threading.Lock()


def say(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def valid_answers(step) -> dict:
    out = {}
    for item in step.items:
        values = flow.option_values(item)
        if getattr(item, "correct", None):
            out[item.id] = Answer(item.correct)
        elif step.kind == "consent":
            out[item.id] = Answer("agree")
        elif values:
            out[item.id] = Answer(values[-1])
        else:
            out[item.id] = Answer(item.max if item.max is not None else 30)
    return out


def answers_for(state) -> dict:
    """valid_answers, and for the device check before consent what a working browser reports."""
    if state.step.kind == "device_check":
        from types import SimpleNamespace

        return flow.kind_of(state.step).bot_answers(SimpleNamespace(state=state), state.step)
    return valid_answers(state.step)


def walk(engine, state) -> None:
    """Submit valid pages until the participant completes (or the process is killed)."""
    while state.active:
        meta = {"watched_share": 1.0, "max_time": 8.0, "play_count": 1} if state.step.has_clip else None
        answers = answers_for(state)
        result = store.submit_step(engine, state.token, state.step.key, answers, meta)
        if not result.ok:
            raise RuntimeError(f"{state.step.key}: {result.errors} {result.message}")
        # The device check stores device_info, no response rows: 0 items to find.
        items = 0 if state.step.kind == "device_check" else len(answers)
        say(f"ack {state.token} {state.step.key} {items}")
        state = result.state


def main() -> None:
    url, study_id, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    engine = store.make_engine(url)

    def run() -> None:
        while True:
            state = store.enrol(engine, study_id)
            say(f"enrolled {state.token}")
            walk(engine, state)

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


if __name__ == "__main__":
    main()
