"""How a clip was seen and heard, from its playback events (study/playback.py), and the trials
columns the store writes from them (SQLite and PostgreSQL), the export and the exclusion rules."""

from __future__ import annotations

import random

import pandas as pd
import pytest
import sqlalchemy as sa

from study import store
from study.playback import PLAYBACK_METRICS, trial_metrics

from conftest import DEMO_STUDY
from test_store import advance, studies_yaml, valid_answers

T0 = 1_800_000_000_000.0  # a client clock in ms


def ev(seq, event, mt=None, at=None, **detail):
    """One event: `at` seconds after T0 on the browser clock."""
    return {"seq": seq, "event": event, "media_time": mt, "client_time": None if at is None else T0 + at * 1000,
            "detail": detail or None}


def played_8s(**muting):
    """An 8 s clip played through in one go, with progress events every 2 s."""
    events = [ev(0, "start_click", 0, 0), ev(1, "volume", 0, 0, volume=1.0, muted=False, initial=True),
              ev(2, "play", 0, 0.05), ev(3, "playing", 0, 0.1)]
    seq = 4
    for t in (2, 4, 6):
        events.append(ev(seq, "progress", t, t + 0.1))
        seq += 1
    events.append(ev(seq, "ended", 8, 8.1))
    return events


# --------------------------------------------------------------------------- the pure function


def test_no_events_is_not_recorded():
    assert trial_metrics([]) is None


def test_clip_played_once_with_sound():
    m = trial_metrics(played_8s())
    assert (m.play_count, m.replayed, m.skipped) == (1, False, False)
    assert m.seconds_played == pytest.approx(8.0)
    assert m.share_muted == 0.0
    assert (m.seconds_hidden, m.seconds_stalled, m.seconds_offline) == (0.0, 0.0, 0.0)
    assert m.load_ms is None  # no canplay event
    assert list(m.row()) == list(PLAYBACK_METRICS)


def test_muted_mid_clip_gives_the_share_after_the_mute():
    events = played_8s()
    # muted at media time 3.0, between the progress events at 2 and 4
    events.insert(5, ev(20, "volume", 3.0, 3.1, volume=1.0, muted=True))
    events = [dict(e, seq=i) for i, e in enumerate(events)]
    assert trial_metrics(events).share_muted == pytest.approx(5 / 8)
    # volume 0 counts as muted; turning the sound back up at 7 s leaves 4 s of 8
    events.insert(8, ev(0, "volume", 7.0, 7.1, volume=0.6, muted=False))
    events[5] = ev(0, "volume", 3.0, 3.1, volume=0.0, muted=False)
    events = [dict(e, seq=i) for i, e in enumerate(events)]
    assert trial_metrics(events).share_muted == pytest.approx(4 / 8)


def test_muted_from_the_start():
    events = played_8s()
    events[1] = ev(1, "volume", 0, 0, volume=1.0, muted=True, initial=True)
    assert trial_metrics(events).share_muted == 1.0


def test_out_of_order_and_duplicate_events_give_the_same_result():
    events = played_8s()
    events.insert(5, ev(20, "volume", 3.0, 3.1, volume=1.0, muted=True))
    events = [dict(e, seq=i) for i, e in enumerate(events)]
    expected = trial_metrics(events)
    shuffled = events + [dict(events[3]), dict(events[6])]  # a resent batch
    random.Random(3).shuffle(shuffled)
    assert trial_metrics(shuffled) == expected
    # a repeated seq counts once, whatever the copy says: the first one seen wins
    doubled = events + [dict(events[-1], event="play", media_time=0.0)]
    assert trial_metrics(doubled) == expected


def test_pause_while_hidden_counts_hidden_time_and_no_playback():
    events = [ev(0, "start_click", 0, 0), ev(1, "play", 0, 0.05), ev(2, "playing", 0, 0.1),
              ev(3, "visibility_hidden", 2.0, 2.0), ev(4, "pause", 2.0, 2.01, reason="hidden"),
              # 5 s away; the player sends nothing meanwhile (the media time stays put)
              ev(5, "visibility_visible", 2.0, 7.0), ev(6, "resume_click", 2.0, 9.0, reason="hidden"),
              ev(7, "play", 2.0, 9.0), ev(8, "progress", 6.0, 13.0), ev(9, "ended", 8.0, 15.0)]
    m = trial_metrics(events)
    assert m.seconds_hidden == pytest.approx(5.0)
    assert m.seconds_played == pytest.approx(8.0)  # not 8 + the time away
    assert m.play_count == 1  # resuming is not a new play


def test_hidden_and_unfocused_overlapping_count_once():
    events = [ev(0, "play", 0, 0), ev(1, "window_blur", 1.0, 1.0), ev(2, "visibility_hidden", 1.0, 1.1),
              ev(3, "pause", 1.0, 1.1, reason="blur"), ev(4, "visibility_visible", 1.0, 4.0),
              ev(5, "window_focus", 1.0, 4.5), ev(6, "window_blur", 1.0, 10.0), ev(7, "window_focus", 1.0, 11.0)]
    assert trial_metrics(events).seconds_hidden == pytest.approx(3.5 + 1.0)


def test_missing_end_closes_at_the_last_event():
    # hidden and never shown again, offline and never back online, a stall that never ended
    events = [ev(0, "play", 0, 0), ev(1, "playing", 0, 0.2), ev(2, "waiting", 3.0, 3.0),
              ev(3, "offline", 3.0, 4.0), ev(4, "visibility_hidden", 3.0, 6.0), ev(5, "pause", 3.0, 6.0)]
    m = trial_metrics(events)
    assert m.seconds_stalled == pytest.approx(3.0)  # waiting 3.0 .. the pause at 6.0
    assert m.seconds_offline == pytest.approx(2.0)  # 4.0 .. last event 6.0
    assert m.seconds_hidden == pytest.approx(0.0)   # hidden at the last event itself
    events.append(ev(6, "progress", 3.0, 9.5))      # a later event (e.g. pagehide's batch)
    m = trial_metrics(events)
    assert (m.seconds_offline, m.seconds_hidden) == (pytest.approx(5.5), pytest.approx(3.5))
    # a clip that stopped without pause or ended: played up to the last event with a media time
    assert trial_metrics([ev(0, "play", 0, 0), ev(1, "progress", 5.0, 5.0)]).seconds_played == pytest.approx(5.0)


def test_stalls_between_waiting_and_playing():
    events = [ev(0, "stalled", 0, 0),  # before any play: loading, not a stall of playback
              ev(1, "play", 0, 1.0), ev(2, "playing", 0, 1.0), ev(3, "waiting", 2.0, 3.0),
              ev(4, "stalled", 2.0, 3.5), ev(5, "playing", 2.0, 4.25), ev(6, "waiting", 5.0, 7.0),
              ev(7, "playing", 5.0, 7.5), ev(8, "ended", 8.0, 10.5)]
    m = trial_metrics(events)
    assert m.seconds_stalled == pytest.approx(1.25 + 0.5)
    assert m.seconds_played == pytest.approx(8.0)


def test_replays_and_a_restart_after_reload():
    events = played_8s()
    n = len(events)
    events += [ev(n, "start_click", 8.0, 12.0), ev(n + 1, "seeking", 0.0, 12.0, replay=True, to=0.0, **{"from": 8.0}),
               ev(n + 2, "play", 0.0, 12.1), ev(n + 3, "progress", 4.0, 16.1), ev(n + 4, "ended", 8.0, 20.1)]
    m = trial_metrics(events)
    assert (m.play_count, m.replayed) == (2, True)
    assert m.seconds_played == pytest.approx(16.0)
    # A reload mid-clip: the new page's player starts again from 0 (seqs from a later clock).
    reload = [ev(0, "play", 0, 0), ev(1, "progress", 5.0, 5.0),
              ev(5_000, "play", 0.0, 30.0), ev(5_001, "progress", 4.0, 34.0)]
    assert trial_metrics(reload).play_count == 2
    # ... but pausing at the very start and resuming is one play
    assert trial_metrics([ev(0, "play", 0, 0), ev(1, "pause", 0.3, 0.3), ev(2, "play", 0.3, 2)]).play_count == 1


def test_seeks_and_jumps_are_not_playback():
    events = [ev(0, "play", 0, 0), ev(1, "progress", 2.0, 2.0),
              # allowed seek forward to 6: not played
              ev(2, "seeking", 6.0, 2.1, blocked=False, to=6.0, **{"from": 2.0}), ev(3, "seeked", 6.0, 2.2),
              ev(4, "ended", 8.0, 4.2)]
    assert trial_metrics(events).seconds_played == pytest.approx(4.0)
    # a blocked seek: the player puts the video back where it was; playback goes on from there
    blocked = [ev(0, "play", 0, 0), ev(1, "progress", 2.0, 2.0),
               ev(2, "seeking", 7.0, 2.1, blocked=True, to=7.0, **{"from": 2.1}), ev(3, "seeked", 2.1, 2.15),
               ev(4, "progress", 4.0, 4.0)]
    assert trial_metrics(blocked).seconds_played == pytest.approx(2.0 + 1.9)
    # media time that rose far more than the wall clock without a seek event is a jump
    assert trial_metrics([ev(0, "play", 0, 0), ev(1, "progress", 7.0, 1.0)]).seconds_played == 0.0


def test_load_time_skip_and_retry():
    events = [ev(0, "canplay", None, 0.5, load_ms=4000, attempt=0), ev(1, "error", None, 1.0, code="media_3"),
              ev(2, "retry", None, 2.0, attempt=1), ev(3, "canplay", None, 2.3, load_ms=312.4, attempt=1),
              ev(4, "canplay", None, 2.9, load_ms=999, attempt=1)]
    assert trial_metrics(events).load_ms == 312
    skipped = [ev(0, "error", None, 1.0, code="media_4"), ev(1, "skip", None, 5.0, reason="load failed")]
    m = trial_metrics(skipped)
    assert (m.skipped, m.play_count, m.load_ms, m.share_muted) == (True, 0, None, None)


def test_events_without_clock_or_media_time_are_tolerated():
    events = [{"seq": 0, "event": "play"}, {"seq": 1, "event": "visibility_hidden"}, {"seq": "x", "event": "pause"},
              {"seq": 2, "event": "volume", "detail": {"volume": "loud"}}, {"seq": 3, "event": "visibility_visible"}]
    m = trial_metrics(events)
    assert (m.play_count, m.seconds_hidden, m.share_muted) == (1, 0.0, None)


# --------------------------------------------------------------------------- the store writes them


@pytest.fixture
def demo(engine):
    return store.register_study(engine, DEMO_STUDY)


def trial_row(engine, participant_id, position):
    with engine.connect() as conn:
        return conn.execute(sa.select(store.trials).where(store.trials.c.participant_id == participant_id,
                                                          store.trials.c.position == position)).mappings().one()


def test_submit_writes_the_playback_columns_and_late_events_update_them(engine, demo):
    state = advance(engine, store.enrol(engine, demo), until_key="trial:1")
    events = played_8s()
    events.insert(5, ev(20, "volume", 3.0, 3.1, volume=1.0, muted=True))
    events = [dict(e, seq=i, position=1) for i, e in enumerate(events)]
    events.insert(0, dict(ev(100, "canplay", None, -1.0, load_ms=87.6), position=1))
    store.record_events(engine, state.token, events)
    # before the submit the columns stay empty (only the share comes from the events)
    assert trial_row(engine, state.participant_id, 1)["share_muted"] is None
    result = store.submit_step(engine, state.token, "trial:1", valid_answers(state.step), {"watched_share": 1.0})
    assert result.ok
    row = trial_row(engine, state.participant_id, 1)
    assert {k: row[k] for k in PLAYBACK_METRICS} == {
        "play_count": 1, "replayed": False, "skipped": False, "seconds_hidden": 0.0,
        "share_muted": pytest.approx(5 / 8), "seconds_stalled": 0.0, "load_ms": 88, "seconds_offline": 0.0}
    # the player's last batch arrives after the submit: the row follows the events
    store.record_events(engine, state.token, [
        dict(ev(200, "visibility_hidden", 8.0, 9.0), position=1), dict(ev(201, "visibility_visible", 8.0, 11.5), position=1)])
    row = trial_row(engine, state.participant_id, 1)
    assert row["seconds_hidden"] == pytest.approx(2.5)
    assert row["share_muted"] == pytest.approx(5 / 8)
    # a trial never played (no events) keeps what its submit said
    state = advance(engine, result.state, until_key="trial:2")
    state = advance(engine, state, steps=1)
    row = trial_row(engine, state.participant_id, 2)
    assert (row["play_count"], row["seconds_hidden"]) == (1, None)


def test_exclusion_rules_read_the_playback_columns(engine, tmp_path):
    from analysis import export, load
    from analysis.results import exclusion_counts

    path = studies_yaml(tmp_path, **{"  min_completion: 1.0": "  min_completion: 0\n  max_seconds_hidden: 3\n"
                                     "  max_share_muted: 0.5\n  exclude_replayed: true"})
    study_id = store.register_study(engine, path)
    state = advance(engine, store.enrol(engine, study_id), until_key="trial:1")
    muted = played_8s()
    muted[1] = ev(1, "volume", 0, 0, volume=1.0, muted=True, initial=True)
    away = played_8s() + [ev(50, "visibility_hidden", 8, 9), ev(51, "visibility_visible", 8, 14)]
    for position, events in ((1, muted), (2, away), (3, played_8s())):
        assert state.step.key == f"trial:{position}"
        store.record_events(engine, state.token, [dict(e, position=position) for e in events])
        state = advance(engine, state, steps=1)
    data = load.load_from_db(engine, study_id)
    trials = data.excluded[data.excluded["level"] == "trial"].set_index("position")
    assert trials.loc[1, "reason"] == "played muted or at volume 0 for 100% (share_muted; at most 50% allowed)"
    assert trials.loc[2, "reason"] == "page hidden or out of focus for 5.0 s (seconds_hidden; at most 3.0 s allowed)"
    assert 3 not in trials.index
    assert set(data.trials["position"]) == {3}  # trials without ratings are not in the table
    counts = exclusion_counts(data.excluded)
    assert set(counts.loc[counts["level"] == "trial", "reason"]) == {"share_muted above 50%",
                                                                       "seconds_hidden above 3.0 s"}
    # The dashboard's clip table shows them per clip.
    clips = load.monitoring(engine, study_id).clips.set_index("stimulus_id")
    assert clips.loc[state.sequence[1], "mean_seconds_hidden"] == pytest.approx(5.0)
    assert clips.loc[state.sequence[0], "mean_share_muted"] == pytest.approx(1.0)
    # The dataset folder carries the columns and gives the same exclusions when read back.
    out = export.export_dataset(engine, study_id, tmp_path / "dataset")
    shown = pd.read_csv(out / "trials.csv")
    assert list(shown.columns[-7:]) == [c for c in PLAYBACK_METRICS if c != "play_count"]
    assert shown.set_index("position").loc[2, "seconds_hidden"] == pytest.approx(5.0)
    again = load.load_trials(out)
    assert sorted(again.excluded.loc[again.excluded["level"] == "trial", "position"]) == [1, 2]
