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

When the study asks for a continuous rating or moment marks, each bot also sends them through
store.record_traces, batch by batch as the player does. Every clip has a known curve per
dimension (`trace_truth`: a baseline, one peak at a known time and height, a known end level);
a bot's trace is

    midpoint + sd * (sqrt(agreement) * curve(t) + sqrt(1 - agreement) * smooth noise(t)) +- effect / 2

sampled at the study's rate in video time, held at the start value until the bot first moves
it (0.3-2 s in), clipped to the scale; `agreement` is the share of a trace's variance that all
raters share (so it sets their agreement), `effect` the same planted human-minus-AI difference
as for the ratings (rating and valence dimensions only). For marks, every clip has one known
moment per prompt (`mark_truth`); a bot marks it with probability MARK_HIT_RATE, 0.3 s late on
average, plus a few marks at random times. A few bots reload mid-clip (trace_reload): the
interrupted attempt stays, partial, and the clip is played again from the start.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
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
    "trace_reload": 0.03,  # reloads the page mid-clip: a partial trace, then the clip again
}
TRACE_AGREEMENT = 0.6
TRACE_BATCH_S = 3.0
MARK_HIT_RATE = 0.8
MARK_DELAY_S = (0.3, 0.25)  # mean and sd of how late a mark comes after its moment
MARK_FALSE_PER_CLIP = 0.3
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


@dataclass(frozen=True)
class TraceTruth:
    """The known curve of one clip on one dimension, in standard units (times in seconds)."""

    base: float
    peak_time: float
    peak_height: float
    width: float
    end: float
    duration: float

    def at(self, t):
        """curve(t): baseline, plus a Gaussian peak, drifting linearly to the end level."""
        import numpy as np

        t = np.asarray(t, dtype="float64")
        drift = (self.end - self.base) * np.clip(t / self.duration, 0, 1)
        return self.base + drift + self.peak_height * np.exp(-0.5 * ((t - self.peak_time) / self.width) ** 2)


def trace_truth(study_seed: int, stimulus_id: str, dimension: str, duration: float) -> TraceTruth:
    """The clip's known curve (the same for every bot and run with this design seed)."""
    r = random.Random(f"trace:{study_seed}:{stimulus_id}:{dimension}")
    return TraceTruth(base=r.uniform(-0.6, 0.2), peak_time=r.uniform(0.35, 0.75) * duration,
                      peak_height=r.uniform(1.2, 2.0), width=max(0.3, 0.08 * duration),
                      end=r.uniform(-0.8, 0.8), duration=float(duration))


def mark_truth(study_seed: int, stimulus_id: str, prompt_id: str, duration: float) -> float:
    """The video time of the clip's one known moment for this prompt."""
    return random.Random(f"mark:{study_seed}:{stimulus_id}:{prompt_id}").uniform(0.2, 0.85) * float(duration)


def _smooth_noise(rng: random.Random, n: int, rate_hz: float, timescale_s: float = 1.5) -> list[float]:
    """Unit-variance AR(1) noise whose correlation falls to 1/e over `timescale_s`."""
    phi = math.exp(-1.0 / (rate_hz * timescale_s))
    scale = math.sqrt(1 - phi * phi)
    value, out = rng.gauss(0, 1), []
    for _ in range(n):
        out.append(value)
        value = phi * value + scale * rng.gauss(0, 1)
    return out


class Bot:
    def __init__(self, engine, study_id: str, number: int, rng: random.Random, effect: float, is_pilot: bool,
                 agreement: float = TRACE_AGREEMENT):
        self.engine = engine
        self.rng = rng
        self.effect = effect
        self.agreement = agreement
        self.person = rng.gauss(0, 1.0)
        self.given: dict[tuple[str, str], float] = {}  # (clip, item) -> the rating given, for the follow-ups
        self.fate = self._draw_fate()
        self.state = store.enrol(engine, study_id, prolific_pid=f"sim{rng.getrandbits(80):020x}",
                                 prolific_study_id="simulated", prolific_session_id=f"s{number}",
                                 is_pilot=is_pilot, user_agent="kuleshov-simulate")
        n_steps = len(self.state.steps)
        # Dropping out or withdrawing happens somewhere after consent and before the debrief.
        self.stop_at = self.rng.randrange(1, max(2, n_steps - 2)) if self.fate in ("drop_out", "withdraw") else None

    @classmethod
    def answering(cls, state, rng: random.Random, effect: float = 0.0, engine=None) -> "Bot":
        """A bot that answers for an existing session (`state`) without enrolling anyone (the
        preview's tests walk an in-memory session with it); it completes. `engine`: where its
        playback events go when it watches a clip (none for an in-memory session)."""
        bot = cls.__new__(cls)
        bot.engine, bot.rng, bot.effect, bot.agreement = engine, rng, effect, TRACE_AGREEMENT
        bot.person, bot.given, bot.fate, bot.stop_at, bot.state = 0.0, {}, "complete", None, state
        return bot

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
        value = _snap(item, value)
        if step.stimulus_id:
            self.given[(step.stimulus_id, item.id)] = value
        return flow.Answer(value, response_time_ms=self._rt())

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
        self.capture(step, duration, share)
        return {"watched_share": share, "max_time": end, "play_count": 1}

    def capture(self, step, duration: float, share: float) -> None:
        """Send the continuous trace and marks of one clip, if the study asks for them."""
        from study.capture import mode as capture_mode

        mode = capture_mode(self.state.study)
        if mode is None:
            return
        # Its own generator: a study with traces gives the same ratings as one without.
        rng = random.Random(f"capture:{self.state.study.design.seed}:{self.state.pseudonym}:{step.position}")
        if rng.random() < RATES["trace_reload"]:
            self._attempt(rng, mode, step, duration, rng.uniform(0.2, 0.7) * share, final=False)
        self._attempt(rng, mode, step, duration, share, final=share >= 1.0)

    def _attempt(self, rng: random.Random, mode: str, step, duration: float, share: float, final: bool) -> None:
        study = self.state.study
        cr, marks = study.playback.continuous_rating, study.playback.marks
        seed = study.design.seed
        attempt = rng.getrandbits(31)
        end = duration * share
        source = self.state.stimuli.get(step.stimulus_id, {}).get("source")
        sign = (1 if source == "human" else -1) if source in ("human", "ai") else 0
        batches: list[dict] = []
        times: list[float] = []
        axes: dict[str, list[float]] = {}
        starts: dict[str, float] = {}
        first_move = None
        if cr is not None:
            rate = float(cr.rate_hz)
            n = int(end * rate) + 1
            times = [round(min(k / rate, end), 3) for k in range(n)]
            times = sorted(set(times))
            first_move = round(min(rng.uniform(0.3, 2.0), end), 3)
            dims = [("rating", "x", cr.min, cr.max, cr.start)] if cr.mode == "1d" else [
                ("valence", "x", cr.min, cr.max, cr.start),
                ("arousal", "y", cr.arousal_min, cr.arousal_max, cr.arousal_start)]
            for dimension, column, low, high, start in dims:
                truth = trace_truth(seed, step.stimulus_id, dimension, duration).at(times)
                noise = _smooth_noise(rng, len(times), rate)
                mid, sd = (low + high) / 2, (high - low) / 6
                shift = sign * self.effect / 2 if dimension in ("rating", "valence") else 0.0
                start_value = mid if start is None else start
                starts[column] = start_value
                values = []
                for t, c, e in zip(times, truth, noise):
                    v = mid + sd * (math.sqrt(self.agreement) * c + math.sqrt(1 - self.agreement) * e) + shift
                    v = start_value if t < first_move else min(max(v, low), high)
                    values.append(round(v, 3))
                axes[column] = values
        pressed: list[list] = []
        if marks is not None:
            for prompt in marks.prompts:
                moment = mark_truth(seed, step.stimulus_id, prompt.id, duration)
                if rng.random() < MARK_HIT_RATE:
                    pressed.append([moment + max(0.05, rng.gauss(*MARK_DELAY_S)), prompt.id])
                if rng.random() < MARK_FALSE_PER_CLIP:
                    pressed.append([rng.uniform(0, duration), prompt.id])
            pressed = sorted([round(t, 3), p] for t, p in pressed if t <= end)
        n_batches = max(1, math.ceil(end / TRACE_BATCH_S))
        for k in range(n_batches):
            lo, hi = k * TRACE_BATCH_S, (k + 1) * TRACE_BATCH_S
            last = k == n_batches - 1
            idx = [i for i, t in enumerate(times) if lo <= t < hi or (last and t >= hi)]
            batch = {"position": step.position, "attempt": attempt, "seq": k, "mode": mode, "final": final and last,
                     "t": [times[i] for i in idx], "x": [axes["x"][i] for i in idx] if "x" in axes else [],
                     "marks": [m for m in pressed if lo <= m[0] < hi or (last and m[0] >= hi)],
                     "start_x": starts.get("x"), "first_move_t": first_move if first_move is not None and first_move < hi else None}
            if "y" in axes:
                batch["y"] = [axes["y"][i] for i in idx]
                batch["start_y"] = starts["y"]
            batches.append(batch)
        store.record_traces(self.engine, self.state.token, batches)

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


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# Share of simulated follow-up sessions started after their window closed (flagged late).
LATE_RATE = 0.1
FOLLOWUP_RETURN_RATE = 0.85
AROUSAL_FADE = -0.5  # scale points, the same for both sources: feelings fade
FEELING_NOISE = 0.7  # scale points, sd of the change from session 1 to the follow-up


FEELING_ITEMS = {"valence_now": "valence", "arousal_now": "arousal"}  # follow-up scale -> session-1 SAM item


class FollowupBot:
    """A simulated participant coming back for a follow-up, at a time set on the follow-up clock.

    `linger` plants a lingering effect, human-made clips (x = +1/2) against AI-generated ones
    (x = -1/2), of known size in what the report estimates:

    * recall: a seen clip is named in the free recall with probability
      logit^-1(-0.2 + m + linger x), m the bot's memory (normal, sd 0.7, its participant effect),
      so the report's crossed logistic model estimates log odds ratio = linger;
    * felt arousal now = the bot's own session-1 arousal rating of the clip + AROUSAL_FADE +
      linger x + noise (sd FEELING_NOISE), rounded and kept on the scale, so the session x source
      interaction of the report is linger, less what rounding and the scale's ends cut off (about
      5%: 1.42 for linger 1.5 in the demo study's SAM ratings, by Monte Carlo);
      felt valence now = session-1 valence + noise: nothing planted, so its interaction is 0;
    * recognised: logit^-1(1.5 + m + linger x) for a seen clip's still, logit^-1(-1.5) for a foil;
      vividness, intrusions and watch more: midpoint + sd (m + noise) + linger x, no exact target.

    With linger = 0 nothing differs by source. Without a session-1 rating of the clip (a study
    that does not ask SAM), the felt ratings fall back to the midpoint model of vividness.
    """

    def __init__(self, engine, bot: Bot, rng: random.Random, linger: float):
        self.engine, self.bot, self.rng, self.linger = engine, bot, rng, linger
        self.memory = rng.gauss(0, 0.7)

    def _sign(self, state, sid: str) -> float:
        return 0.5 if (state.stimuli.get(sid) or {}).get("source") == "human" else -0.5

    def answers(self, state, page) -> dict:
        from study import followup as fup

        rng = self.rng
        if page.kind == "recall":
            named = []
            for p in state.pages:
                if p.kind != "clip":
                    continue
                if rng.random() < _sigmoid(-0.2 + self.memory + self.linger * self._sign(state, p.stimulus_id)):
                    info = state.stimuli.get(p.stimulus_id) or {}
                    words = fup.recall_keywords(info.get("title"), info.get("recall_keywords"))
                    if words:
                        named.append(rng.choice(words))
            return {fup.RECALL_ITEM: ("I remember " + ", ".join(named)) if named else "I do not remember much."}
        if page.kind == "recognition":
            seen = {p.stimulus_id for p in state.pages if p.kind == "clip"} or set(self.bot.state.sequence)
            out = {}
            for sid in page.stills:
                logit = (1.5 + self.memory + self.linger * self._sign(state, sid)) if sid in seen else -1.5
                old = rng.random() < _sigmoid(logit)
                out[fup.old_item(sid)] = int(old)
                out[fup.confidence_item(sid)] = max(1, min(5, round(3 + abs(logit) / 1.5 + rng.gauss(0, 0.8))))
            return out
        out = {}
        for scale in page.scales:
            mid = (scale.low + scale.high) / 2
            sd = (scale.high - scale.low) / 6
            push = self.linger * self._sign(state, page.stimulus_id)
            before = self.bot.given.get((page.stimulus_id, FEELING_ITEMS.get(scale.id, "")))
            if before is not None and scale.id == "arousal_now":
                value = before + AROUSAL_FADE + push + rng.gauss(0, FEELING_NOISE)
            elif before is not None and scale.id == "valence_now":
                value = before + rng.gauss(0, FEELING_NOISE)
            else:
                value = mid + sd * (self.memory + rng.gauss(0, 0.8)) + push
            out[scale.id] = max(scale.low, min(scale.high, round(value)))
        return out

    def run(self, fu) -> bool:
        """Take follow-up `fu` at a simulated time; False if this bot does not come back."""
        from study import followup as fup
        from study.store import followups

        rng = self.rng
        if rng.random() > FOLLOWUP_RETURN_RATE:
            return False
        done = followups.completed_at(self.engine, self.bot.state.participant_id)
        late = rng.random() < LATE_RATE
        hours = fu.delay_hours + (fu.window_hours * (1 + rng.random()) if late else fu.window_hours * rng.random())
        with fup.clock_at(fup._aware(done) + timedelta(hours=hours)):
            access, state = followups.start(self.engine, self.bot.state.study_id, fu.name,
                                            prolific_pid=self.bot.state.prolific_pid)
            if state is None:
                return False
            while not state.page.final:
                result = followups.submit(self.engine, state.session_id, state.page.key,
                                          self.answers(state, state.page))
                if not result.ok:
                    raise UserError(f"simulated follow-up {fu.name} of {state.pseudonym} was refused at "
                                    f"{state.page.key}: {result.errors or result.message}")
                state = result.state
        return True


def simulate(engine, study_id_or_path: str | Path, n: int, effect: float = 0.0, seed: int = 1,
             is_pilot: bool = False, agreement: float = TRACE_AGREEMENT, linger: float = 0.0,
             followups: bool = True) -> list[str]:
    """Run `n` bots through the study; returns their tokens. A study file is registered first."""
    if n < 0:
        raise UserError(f"The number of simulated participants must be 0 or more, not {n}.")
    if not 0 <= agreement <= 1:
        raise UserError(f"The trace agreement must be between 0 and 1, not {agreement}.")
    target = str(study_id_or_path)
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        study_id = store.register_study(engine, target, actor="simulate")
    else:
        study_id = target
    if linger:
        if not followups:
            raise UserError("--plant-linger plants an effect in the follow-ups, and --no-followups leaves them "
                            "out: give one of them.")
        if not getattr(store.get_study(engine, study_id).study, "follow_ups", None):
            raise UserError(f"--plant-linger needs follow-up sessions, and study {study_id!r} ({target}) declares "
                            "no follow_ups: add them to its study file (see docs/study_file.md, follow_ups), or "
                            "try stimuli/demo/study_followup.yaml, the demo study with follow-ups.")
    # Bots are numbered after everyone already enrolled, so a second run adds new bots (with
    # new Prolific ids) instead of finding the first run's; a fresh database repeats exactly.
    already = store.get_study(engine, study_id).participants_enrolled
    rng = random.Random(f"simulate:{study_id}:{seed}:{already}")
    tokens, bots = [], []
    for number in range(already, already + n):
        bot = Bot(engine, study_id, number, random.Random(rng.getrandbits(64)), effect, is_pilot, agreement)
        tokens.append(bot.run())
        bots.append(bot)
    # Follow-ups after everyone's session 1, each at its own simulated time (the follow-up clock):
    # nobody waits a day.
    if followups:
        for bot in bots:
            fus = getattr(bot.state.study, "follow_ups", None) or []
            if not bot.state.completed or not fus:
                continue
            fbot = FollowupBot(engine, bot, random.Random(rng.getrandbits(64)), linger)
            for fu in fus:
                fbot.run(fu)
    return tokens


def cli_simulate(args) -> int:
    engine = store.make_engine(getattr(args, "url", None))
    try:
        store.upgrade(engine)
        started = time.perf_counter()
        tokens = simulate(engine, args.study, args.participants, effect=args.effect, seed=args.seed,
                          agreement=getattr(args, "trace_agreement", TRACE_AGREEMENT),
                          linger=getattr(args, "plant_linger", 0.0) or 0.0,
                          followups=not getattr(args, "no_followups", False))
        took = time.perf_counter() - started
        study_id = store.resolve_study_id(args.study)
        row = next((r for r in store.list_studies(engine) if r["id"] == study_id), None)
        counts = ", ".join(f"{k} {v}" for k, v in sorted((row or {}).get("by_status", {}).items()))
        print(f"simulated {len(tokens)} participants in {timedelta(seconds=round(took))} "
              f"(effect {args.effect:+g} scale points, seed {args.seed}); study {study_id} now has: {counts}")
        fus = getattr(store.get_study(engine, study_id).study, "follow_ups", None) or []
        if fus and not getattr(args, "no_followups", False):
            from study.store.followups import session_counts

            done = session_counts(engine, study_id)
            per = ", ".join(f"{fu.name} {done.get(fu.name, 0)}" for fu in fus)
            print(f"completed follow-up sessions (planted linger {getattr(args, 'plant_linger', 0.0) or 0.0:+g}): "
                  f"{per}")
    finally:
        engine.dispose()
    return 0
