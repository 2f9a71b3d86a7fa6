"""Simulated participants ("bots") walking the real flow into the database.

Each bot enrols through store.enrol, answers every page through store.submit_step and
reports playback through store.record_events, exactly as the participant page does, so what
they leave behind is what real participants would. Their answers are plausible rather than
realistic: each rating is

    scale midpoint + sd * (participant effect + clip effect + noise) +- effect / 2

where sd is a sixth of the item's range, the participant and clip effects are normal draws
(participant effects larger: people differ more than clips), and `effect` (in scale points)
is added for human clips and subtracted for AI clips on valence and feeling-moved items
(reverse-keyed items get the opposite sign, so scale scores show the planted difference).
Attribution judgments are right 65% of the time. A few bots decline consent, fail the
attention check, drop out, or withdraw (rates below, all seeded).
"""

from __future__ import annotations

import math
import random
import time
from datetime import timedelta
from pathlib import Path

from study import flow, store
from study.errors import UserError

RATES = {
    "decline": 0.02,  # says no at consent
    "fail_attention": 0.05,  # per attention check
    "drop_out": 0.04,  # stops at a random step and never comes back
    "withdraw": 0.02,  # presses Withdraw at a random step
    "partial_watch": 0.08,  # watches only part of a clip
    "slider_untouched": 0.05,  # leaves an optional slider where it was
}
ATTRIBUTION_ACCURACY = 0.65
PLANTED_ITEMS = ("valence",)  # item ids, plus every item of the instruments below
PLANTED_INSTRUMENTS = ("moved",)


def _clip_effect(study_seed: int, stimulus_id: str, item_id: str) -> float:
    # The same clip gets the same effects for every bot and every run with this seed.
    return random.Random(f"clip:{study_seed}:{stimulus_id}:{item_id}").gauss(0, 0.6)


def _snap(item, value: float) -> float:
    low = item.min if item.min is not None else value
    high = item.max if item.max is not None else value
    value = min(max(value, low), high)
    step = getattr(item, "step", None)
    if step:
        value = low + round((value - low) / step) * step
        value = min(max(value, low), high)
    return float(value)


class Bot:
    def __init__(self, engine, study_id: str, number: int, rng: random.Random, effect: float, is_pilot: bool):
        self.engine = engine
        self.rng = rng
        self.effect = effect
        self.person = rng.gauss(0, 1.0)
        self.fate = self._draw_fate()
        self.state = store.enrol(engine, study_id, prolific_pid=f"sim{rng.getrandbits(80):020x}",
                                 prolific_study_id="simulated", prolific_session_id=f"s{number}",
                                 is_pilot=is_pilot, user_agent="kuleshov-simulate")
        n_steps = len(self.state.steps)
        # Dropping out or withdrawing happens somewhere after consent and before the debrief.
        self.stop_at = self.rng.randrange(1, max(2, n_steps - 2)) if self.fate in ("drop_out", "withdraw") else None

    def _draw_fate(self) -> str:
        x = self.rng.random()
        for fate in ("decline", "drop_out", "withdraw"):
            if x < RATES[fate]:
                return fate
            x -= RATES[fate]
        return "complete"

    # ------------------------------------------------------------------ answers

    def _rating(self, item, step) -> flow.Answer:
        rng = self.rng
        if (not getattr(item, "required", True) and item.kind.may_be_untouched
                and rng.random() < RATES["slider_untouched"]):
            return flow.Answer(None, untouched=True, response_time_ms=self._rt())
        low, high = float(item.min), float(item.max)
        sd = (high - low) / 6
        z = self.person + rng.gauss(0, 0.8)
        source = None
        if step.stimulus_id:
            z += _clip_effect(self.state.study.design.seed, step.stimulus_id, item.id)
            source = self.state.stimuli.get(step.stimulus_id, {}).get("source")
        value = (low + high) / 2 + sd * z
        if source and (item.id in PLANTED_ITEMS or item.instrument in PLANTED_INSTRUMENTS):
            sign = 1 if source == "human" else -1
            value += (-1 if getattr(item, "reverse", False) else 1) * sign * self.effect / 2
        return flow.Answer(_snap(item, value), response_time_ms=self._rt())

    def _rt(self) -> int:
        return int(self.rng.lognormvariate(math.log(2500), 0.5))

    def answers_for(self, step) -> dict[str, flow.Answer]:
        """This bot's answers to a step, as the step's kind and each item's response type say."""
        # One draw per page, before any answer, so a seed gives the same bots whatever the page holds.
        self._judged_right = self.rng.random() < ATTRIBUTION_ACCURACY
        return flow.kind_of(step).bot_answers(self, step)

    # The answers by response type (study/item_types.py names these in each type's `simulate`).

    def consent(self) -> flow.Answer:
        return flow.Answer(flow.CONSENT_DECLINE if self.fate == "decline" else flow.CONSENT_AGREE)

    def attend(self, item) -> flow.Answer:
        wrong = [v for v in flow.option_values(item) if v != str(item.correct)]
        fail = wrong and self.rng.random() < RATES["fail_attention"]
        return flow.Answer(self.rng.choice(wrong) if fail else str(item.correct), response_time_ms=self._rt())

    def choose(self, item, step) -> flow.Answer:
        values = flow.option_values(item)
        if item.id == "judged_source" and step.stimulus_id and set(values) >= {"human", "ai"}:
            truth = self.state.stimuli.get(step.stimulus_id, {}).get("source", "human")
            guess = truth if self._judged_right else ("ai" if truth == "human" else "human")
            return flow.Answer(guess, response_time_ms=self._rt())
        return flow.Answer(self.rng.choice(values), response_time_ms=self._rt())

    def _confidence(self, item) -> flow.Answer:
        centre = 75 + (8 if self._judged_right else -5)
        return flow.Answer(_snap(item, self.rng.gauss(centre, 12)), response_time_ms=self._rt())

    def rate(self, item, step) -> flow.Answer:
        if item.id == "confidence":
            return self._confidence(item)
        return self._rating(item, step)

    def count(self, item) -> flow.Answer:
        if item.id == "confidence":
            return self._confidence(item)
        low = item.min if item.min is not None else 0
        return flow.Answer(_snap(item, low + self.rng.randint(0, 45)))

    def write(self, item) -> flow.Answer | None:
        return flow.Answer("no comment") if getattr(item, "required", True) else None

    # ------------------------------------------------------------------ playback

    def watch(self, step) -> dict:
        """Send the playback events of one clip; returns the trial_meta for its submit."""
        rng = self.rng
        duration = self.state.stimuli.get(step.stimulus_id, {}).get("duration_s") or 10.0
        share = 1.0 if rng.random() >= RATES["partial_watch"] else round(rng.uniform(0.5, 0.95), 3)
        clock = time.time() * 1000
        events = [{"position": step.position, "seq": 0, "event": "start_click", "media_time": 0.0, "client_time": clock},
                  {"position": step.position, "seq": 1, "event": "play", "media_time": 0.0, "client_time": clock + 30}]
        seq = 2
        for quarter in (0.25, 0.5, 0.75):
            if quarter <= share:
                t = duration * quarter
                events.append({"position": step.position, "seq": seq, "event": "timeupdate", "media_time": t,
                               "client_time": clock + 30 + t * 1000, "watched_share": quarter})
                seq += 1
        end = duration * share
        events.append({"position": step.position, "seq": seq,
                       "event": "ended" if share >= 1.0 else "pause", "media_time": end,
                       "client_time": clock + 30 + end * 1000, "watched_share": share})
        store.record_events(self.engine, self.state.token, events)
        return {"watched_share": share, "max_time": end, "play_count": 1}

    # ------------------------------------------------------------------ walking

    def run(self) -> str:
        state = self.state
        # A completed participant still submits the debrief; the final step needs no submit.
        while state.active or (state.completed and not flow.is_final(state.step)):
            if self.stop_at is not None and state.step_index >= self.stop_at:
                if self.fate == "withdraw":
                    store.withdraw(self.engine, state.token)
                break
            step = state.step
            meta = self.watch(step) if step.has_clip else None
            answers = self.answers_for(step) if step.collects_data else {}
            result = store.submit_step(self.engine, state.token, step.key, answers, trial_meta=meta)
            if not result.ok:
                raise UserError(f"simulated participant {state.pseudonym} was refused at {step.key}: "
                                f"{result.message} {result.errors}")
            if result.state.step_index == state.step_index:
                break  # declined at consent
            state = self.state = result.state
        return state.token


def simulate(engine, study_id_or_path: str | Path, n: int, effect: float = 0.0, seed: int = 1,
             is_pilot: bool = False) -> list[str]:
    """Run `n` bots through the study; returns their tokens. A study file is registered first."""
    if n < 0:
        raise UserError(f"The number of simulated participants must be 0 or more, not {n}.")
    target = str(study_id_or_path)
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        study_id = store.register_study(engine, target, actor="simulate")
    else:
        study_id = target
    # Bots are numbered after everyone already enrolled, so a second run adds new bots (with
    # new Prolific ids) instead of finding the first run's; a fresh database repeats exactly.
    already = store.get_study(engine, study_id).participants_enrolled
    rng = random.Random(f"simulate:{study_id}:{seed}:{already}")
    tokens = []
    for number in range(already, already + n):
        bot = Bot(engine, study_id, number, random.Random(rng.getrandbits(64)), effect, is_pilot)
        tokens.append(bot.run())
    return tokens


def cli_simulate(args) -> int:
    engine = store.make_engine(getattr(args, "url", None))
    try:
        store.upgrade(engine)
        started = time.perf_counter()
        tokens = simulate(engine, args.study, args.participants, effect=args.effect, seed=args.seed)
        took = time.perf_counter() - started
        study_id = store.resolve_study_id(args.study)
        row = next((r for r in store.list_studies(engine) if r["id"] == study_id), None)
        counts = ", ".join(f"{k} {v}" for k, v in sorted((row or {}).get("by_status", {}).items()))
        print(f"simulated {len(tokens)} participants in {timedelta(seconds=round(took))} "
              f"(effect {args.effect:+g} scale points, seed {args.seed}); study {study_id} now has: {counts}")
    finally:
        engine.dispose()
    return 0
