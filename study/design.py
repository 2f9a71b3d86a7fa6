"""Pure, seeded assignment of clips to participants and of the order they see them in.

Three steps, each a pure function of the study's design settings and the clip pool:

* `build_lists` makes the counterbalancing lists: which clips a participant sees (and, for a
  Latin square, in which order). Every clip appears equally often across one full cycle of
  lists, so balance comes from filling lists evenly, not from luck.
* `choose_assignment` picks the least-filled cell (list x label condition) for the next
  participant, from counts the caller reads inside the same database transaction that records
  the choice.
* `sequence_for` turns a list into the order one participant sees.

Randomness always comes from `random.Random` seeded with a string built from the study's seed
(string seeds are hashed with SHA-512, so results do not depend on PYTHONHASHSEED or platform).

How the pieces fit (why the rotation is built the way it is):

* Clips are grouped into units: a pair shown together ('both') is one unit of two clips, a pair
  of which one member is shown ('one_per_participant') is one unit of one clip, and every other
  clip is a unit of its own ('ignore' treats all clips as unpaired). Units of one place share
  one circle; with 'both', pairs and unpaired clips rotate on two circles and every list takes
  a fixed number of each (chosen so both kinds are shown about equally often). A list is the
  next window of each circle, so within each circle every unit appears exactly equally often
  over a full cycle of lists.
* Unpaired clips sit on their circle with the two sources spread evenly (a Bresenham pattern),
  so every window holds the pool's share of human clips, rounded up or down.
* 'one_per_participant' doubles each list into two mirror lists showing the opposite member of
  every pair, so each member is shown exactly as often as its partner.
* 'latin_square' expands each list into the rows of a Williams square (even n: n rows, each clip
  once in each position and each clip followed by every other clip once; odd n: the square and
  its mirror, 2n rows, the classical Williams design for odd n). With pairs: 'both' this is
  impossible (carryover balance puts every clip right after its partner in some row), so the
  rows are the rotations of one base order in which partners stand half the list apart: each
  clip is still in each position once, partners are never adjacent, and each member comes first
  in half of the rows (+-1 for odd n).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from study.errors import UserError

SOURCES = ("human", "ai")
ORDERINGS = ("random", "blocked_by_source", "latin_square")
PAIR_MODES = ("both", "one_per_participant", "ignore")
_WHERE = "study file: design"


class DesignError(UserError):
    """The design settings cannot be met with these clips."""


@dataclass(frozen=True)
class Clip:
    id: str
    source: str  # 'human' or 'ai'
    pair_id: str | None = None


@dataclass(frozen=True)
class DesignSpec:
    clips_per_participant: int | None = None  # None: every clip the pair rule allows
    ordering: str = "random"  # 'random' | 'blocked_by_source' | 'latin_square'
    seed: int = 0
    pairs: str = "ignore"  # 'both' | 'one_per_participant' | 'ignore'
    label_conditions: tuple[str, ...] = ("none",)

    def __post_init__(self) -> None:
        # Kept hashable (lists are cached per spec) even when built from a parsed YAML list.
        object.__setattr__(self, "label_conditions", tuple(self.label_conditions))


def _rng(spec: DesignSpec, *parts: object) -> random.Random:
    return random.Random(":".join(["kuleshov", str(spec.seed), *map(str, parts)]))


# ---------------------------------------------------------------- checking the inputs


def _check_spec(spec: DesignSpec) -> None:
    if spec.ordering not in ORDERINGS:
        raise DesignError(
            f"{_WHERE}.ordering is {spec.ordering!r}; it must be one of {', '.join(ORDERINGS)}."
        )
    if spec.pairs not in PAIR_MODES:
        raise DesignError(f"{_WHERE}.pairs is {spec.pairs!r}; it must be one of {', '.join(PAIR_MODES)}.")
    k = spec.clips_per_participant
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise DesignError(f"{_WHERE}.clips_per_participant is {k!r}; it must be a whole number of at least 1.")
    if not spec.label_conditions:
        raise DesignError(f"{_WHERE}.label_conditions is empty; list at least one condition (e.g. none).")
    if len(set(spec.label_conditions)) != len(spec.label_conditions):
        raise DesignError(f"{_WHERE}.label_conditions lists a condition twice: {list(spec.label_conditions)}.")


def _pair_key(clip: Clip) -> str | None:
    # Manifests read from CSV give '' for a blank pair_id.
    return clip.pair_id or None


def _group(spec: DesignSpec, clips: Sequence[Clip]) -> tuple[list[tuple[Clip, Clip]], list[Clip]]:
    """Check the pool and split it into pairs (human member first) and unpaired clips, sorted by id."""
    if not clips:
        raise DesignError("The design has no clips to assign: the stimulus manifest lists none.")
    seen: set[str] = set()
    for clip in clips:
        if clip.source not in SOURCES:
            raise DesignError(f"Clip {clip.id!r} has source {clip.source!r}; it must be 'human' or 'ai'.")
        if clip.id in seen:
            raise DesignError(f"Clip id {clip.id!r} appears more than once in the manifest.")
        seen.add(clip.id)
    ordered = sorted(clips, key=lambda c: c.id)
    if spec.pairs == "ignore":
        return [], ordered
    members: dict[str, list[Clip]] = {}
    singles: list[Clip] = []
    for clip in ordered:
        key = _pair_key(clip)
        if key is None:
            singles.append(clip)
        else:
            members.setdefault(key, []).append(clip)
    pairs = []
    for key in sorted(members):
        group = members[key]
        if len(group) != 2 or {c.source for c in group} != set(SOURCES):
            described = ", ".join(f"{c.id} ({c.source})" for c in group)
            raise DesignError(
                f"pair_id {key!r} must join exactly one human and one AI clip, but it joins: {described}. "
                f"Fix the manifest's pair_id column, or set {_WHERE}.pairs to ignore."
            )
        human, ai = sorted(group, key=lambda c: SOURCES.index(c.source))
        pairs.append((human, ai))
    return pairs, singles


# ---------------------------------------------------------------- lists


def _interleave(first: list, second: list) -> list:
    """Merge two lists so every run of consecutive items (also around the end) holds each list's share.

    This is a Bresenham line: item i comes from `first` exactly when floor((i+1)f/n) steps up,
    so any window of w items holds floor or ceil of w*f/n items of `first`.
    """
    first, second = list(first), list(second)
    n, f = len(first) + len(second), len(first)
    return [first.pop(0) if (i + 1) * f // n > i * f // n else second.pop(0) for i in range(n)]


def _spread_by_source(clips: list[Clip]) -> list[Clip]:
    return _interleave([c for c in clips if c.source == "human"], [c for c in clips if c.source == "ai"])


def _windows(circle: list, size: int, count: int) -> list[list]:
    """`count` consecutive windows of `size` items walking round `circle`."""
    m = len(circle)
    return [[circle[(j * size + t) % m] for t in range(size)] for j in range(count)]


def _period(m: int, size: int) -> int:
    # After m / gcd(m, size) windows the walk is back at the start, having covered each item equally.
    return 1 if size == 0 else m // math.gcd(m, size)


def _feasible_counts(n_pairs: int, n_singles: int) -> list[tuple[int, int]]:
    """(pairs, unpaired clips) per list such that rotation shows every clip to someone."""
    options = []
    for a in range(n_pairs + 1):
        for b in range(n_singles + 1):
            if (a > 0 or n_pairs == 0) and (b > 0 or n_singles == 0):
                options.append((a, b))
    return options


def _list_size(spec: DesignSpec, n_pairs: int, n_singles: int) -> int:
    width = 2 if spec.pairs == "both" else 1
    pool = width * n_pairs + n_singles
    k = pool if spec.clips_per_participant is None else spec.clips_per_participant
    if k > pool:
        shown = "clips"
        if spec.pairs == "one_per_participant":
            shown = "clips a participant can see (one per pair plus the unpaired ones)"
        raise DesignError(f"{_WHERE}.clips_per_participant is {k}, but there are only {pool} {shown}.")
    return k


def _composition(spec: DesignSpec, n_pairs: int, n_singles: int) -> tuple[int, int]:
    """How many pairs shown together and how many unpaired clips each list holds."""
    k = _list_size(spec, n_pairs, n_singles)
    options = [(a, b) for a, b in _feasible_counts(n_pairs, n_singles) if 2 * a + b == k]
    if not options:
        sizes = sorted({2 * a + b for a, b in _feasible_counts(n_pairs, n_singles)})
        raise DesignError(
            f"{_WHERE}.clips_per_participant is {k}, which cannot be made of whole pairs "
            f"({n_pairs} pairs shown together, 2 clips each) and unpaired clips ({n_singles}) "
            f"so that every clip is shown to someone. Possible values: {', '.join(map(str, sizes))}."
        )

    if not (n_pairs and n_singles):
        return options[0]
    # Make a paired clip and an unpaired clip as equally likely to be shown as the counts allow.
    return min(options, key=lambda ab: abs(ab[0] / n_pairs - ab[1] / n_singles))


def _williams(n: int) -> list[list[int]]:
    first = [0]
    low, high = 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    rows = [[(x + r) % n for x in first] for r in range(n)]
    if n % 2 and n > 1:
        rows += [row[::-1] for row in rows]
    return rows


def _partner_map(clips: Sequence[Clip], spec: DesignSpec) -> dict[str, str]:
    if spec.pairs != "both":
        return {}
    pairs, _ = _group(spec, clips)
    out = {}
    for human, ai in pairs:
        out[human.id], out[ai.id] = ai.id, human.id
    return out


def _latin_rows(spec: DesignSpec, base: list[Clip], partner: dict[str, str], index: int) -> list[tuple[str, ...]]:
    n = len(base)
    ids = [c.id for c in base]
    in_list = [i for i in ids if i in partner]
    if not in_list:
        order = ids[:]
        _rng(spec, "latin", index).shuffle(order)
        return [tuple(order[x] for x in row) for row in _williams(n)]
    if n <= 3:
        raise DesignError(
            f"A Latin square over {n} clips that include a human/AI pair always puts the pair's two clips "
            f"back to back in some row (list {ids}). Show more clips per participant, set {_WHERE}.pairs "
            "to one_per_participant, or use ordering random."
        )
    rng = _rng(spec, "latin-pairs", index)
    pair_heads = sorted({min(i, partner[i]) for i in in_list})
    rng.shuffle(pair_heads)
    singles = [i for i in ids if i not in partner]
    rng.shuffle(singles)
    by_id = {c.id: c for c in base}
    # Alternate which source leads so each half mixes sources; partners then stand exactly
    # len(pairs) + len(singles)//2 apart, about half the row, in every rotation.
    firsts = []
    for t, head in enumerate(pair_heads):
        a, b = head, partner[head]
        human, ai = (a, b) if by_id[a].source == "human" else (b, a)
        firsts.append(human if t % 2 == 0 else ai)
    seconds = [partner[x] for x in firsts]
    half = len(singles) // 2
    order = firsts + singles[:half] + seconds + singles[half:]
    return [tuple(order[(r + t) % n] for t in range(n)) for r in range(n)]


@lru_cache(maxsize=64)
def _lists(spec: DesignSpec, clips: tuple[Clip, ...]) -> tuple[tuple[str, ...], ...]:
    _check_spec(spec)
    pairs, singles = _group(spec, clips)
    k = _list_size(spec, len(pairs), len(singles))

    pair_circle = pairs[:]
    _rng(spec, "pairs").shuffle(pair_circle)
    single_circle = singles[:]
    _rng(spec, "singles").shuffle(single_circle)
    single_circle = _spread_by_source(single_circle)

    bases: list[list[Clip]] = []
    if spec.pairs == "one_per_participant":
        # A pair takes one place like an unpaired clip, so all units share one circle and
        # every unit is shown equally often whatever the list size.
        circle = _interleave(pair_circle, single_circle)
        for j, window in enumerate(_windows(circle, k, _period(len(circle), k))):
            in_pairs = [u for u in window if isinstance(u, tuple)]
            rest = [u for u in window if not isinstance(u, tuple)]
            # The mirror list shows the other member of every pair, so each member is shown as
            # often as its partner; alternating members keeps sources even within each list.
            # A window without pairs is repeated too (when the pool has pairs), so every window
            # keeps the same weight.
            bases.append([pair[(t + j) % 2] for t, pair in enumerate(in_pairs)] + rest)
            if pairs:
                bases.append([pair[1 - (t + j) % 2] for t, pair in enumerate(in_pairs)] + rest)
    else:
        # Pairs shown together take two places, so they rotate on their own circle and each
        # list takes a fixed number of pairs and of unpaired clips.
        a, b = _composition(spec, len(pairs), len(singles))
        n_base = math.lcm(_period(len(pairs), a), _period(len(singles), b))
        pair_windows = _windows(pair_circle, a, n_base)
        single_windows = _windows(single_circle, b, n_base)
        for j in range(n_base):
            bases.append([c for pair in pair_windows[j] for c in pair] + single_windows[j])

    if spec.ordering != "latin_square":
        return tuple(tuple(c.id for c in base) for base in bases)
    partner = _partner_map(clips, spec)
    rows: list[tuple[str, ...]] = []
    for index, base in enumerate(bases):
        rows.extend(_latin_rows(spec, base, partner, index))
    return tuple(rows)


def build_lists(spec: DesignSpec, clips: Sequence[Clip]) -> list[tuple[str, ...]]:
    """The counterbalancing lists: the clip ids each participant of a list sees.

    For 'random' and 'blocked_by_source' a list is a set (its order carries no meaning); for
    'latin_square' each list is one row of a square and its order is the presentation order.
    Raises DesignError when the settings cannot be met with these clips.
    """
    lists = list(_lists(spec, tuple(clips)))
    if spec.pairs == "both" and spec.ordering != "latin_square":
        partner = _partner_map(clips, spec)
        for ids in lists:
            if len(ids) == 2 and partner.get(ids[0]) == ids[1]:
                raise DesignError(
                    f"With {_WHERE}.pairs set to both, a list holds only the pair {ids[0]} / {ids[1]}, so its "
                    "two clips would always be shown back to back. Show more clips per participant, add "
                    "clips, or set pairs to one_per_participant."
                )
    return lists


# ---------------------------------------------------------------- assignment


def _cell_order(spec: DesignSpec, n_lists: int, round_: int) -> list[tuple[int, str]]:
    """Every (list, condition) cell once, in an order whose every prefix has list and condition
    totals within 1 of each other.

    Step j takes list j mod L and condition (j + j // lcm(L, C)) mod C: lists cycle, conditions
    cycle, and the shift after each lcm steps reaches the cells the plain cycle skips when L and
    C share a factor. Lists and conditions are shuffled per round (seeded), so the order of
    assignments is not the same cycle in every round.
    """
    rng = _rng(spec, "cells", n_lists, round_)
    lists = list(range(n_lists))
    rng.shuffle(lists)
    conditions = list(spec.label_conditions)
    rng.shuffle(conditions)
    n_cond = len(conditions)
    step = math.lcm(n_lists, n_cond)
    return [(lists[j % n_lists], conditions[(j + j // step) % n_cond]) for j in range(n_lists * n_cond)]


def choose_assignment(
    cell_counts: Mapping[tuple[int, str], int],
    n_lists: int,
    spec: DesignSpec,
) -> tuple[int, str]:
    """The list index and label condition for the next participant.

    `cell_counts` maps (list index, condition) to the number of participants who count for
    balance in that cell (the caller decides who counts: completed and still-active sessions),
    read inside the transaction that stores the result. Lists and conditions are balanced
    jointly: the pick is always a least-filled cell, so every cell stays within 1 of the others
    at any N. Among the least-filled cells the first in `_cell_order` for the current round
    (the lowest count) wins, so with nobody dropping out the list totals and the condition totals
    also stay within 1. The order is seeded from the study seed: the same counts always give the
    same answer. Cells of lists or conditions the design no longer has are ignored.
    """
    _check_spec(spec)
    if isinstance(n_lists, bool) or not isinstance(n_lists, int) or n_lists < 1:
        raise DesignError("There are no counterbalancing lists to assign a participant to.")
    if any(n < 0 for n in cell_counts.values()):
        raise DesignError(f"Participant counts cannot be negative: {dict(cell_counts)}.")
    cells = [(i, c) for i in range(n_lists) for c in spec.label_conditions]
    low = min(cell_counts.get(cell, 0) for cell in cells)
    return next(cell for cell in _cell_order(spec, n_lists, low) if cell_counts.get(cell, 0) == low)


# ---------------------------------------------------------------- order for one participant


def _shuffle_apart(ids: list[str], partner: dict[str, str], rng: random.Random) -> list[str]:
    """A random order in which no clip directly follows its partner.

    Draw the next clip among those that are not the previous clip's partner; at most one
    remaining clip is excluded, so the only dead end is a last clip whose partner came just
    before, and that clip then goes into a random gap away from the end (always exists when
    at least two clips precede it). So this always terminates in len(ids) draws.
    """
    remaining = ids[:]
    rng.shuffle(remaining)
    out: list[str] = []
    while remaining:
        previous = out[-1] if out else None
        allowed = [i for i in remaining if previous is None or partner.get(i) != previous]
        if allowed:
            pick = rng.choice(allowed)
            remaining.remove(pick)
            out.append(pick)
            continue
        # Inserting before out[g] for g < len(out) - 1 never touches the partner at the end.
        out.insert(rng.randrange(len(out) - 1), remaining.pop())
    return out


def _put_first(order: list[str], leader: str, partner: dict[str, str]) -> None:
    """Swap a pair's members if needed so `leader` comes first; adjacency is unchanged."""
    other = partner[leader]
    i, j = order.index(leader), order.index(other)
    if i > j:
        order[i], order[j] = other, leader


def sequence_for(spec: DesignSpec, clips: Sequence[Clip], list_index: int, participant_seed: int) -> list[str]:
    """The clip ids, in order, for one participant of list `list_index`.

    `participant_seed` seeds the shuffle and, through its parity, decides which source block
    (blocked_by_source) or which member of each pair (pairs: both) comes first. Pass the
    participant's 0-based ordinal within their list (the list's count read when assigning) so
    that those alternate exactly between consecutive participants of a list.
    """
    lists = build_lists(spec, clips)
    if isinstance(list_index, bool) or not isinstance(list_index, int) or not 0 <= list_index < len(lists):
        raise DesignError(f"List {list_index!r} does not exist: this design has lists 0 to {len(lists) - 1}.")
    ids = list(lists[list_index])
    if spec.ordering == "latin_square":
        return ids
    source = {c.id: c.source for c in clips}
    partner = _partner_map(clips, spec)
    rng = _rng(spec, "sequence", list_index, participant_seed)
    flip = participant_seed % 2

    if spec.ordering == "random":
        order = _shuffle_apart(ids, partner, rng)
        heads = sorted(i for i in ids if i in partner and source[i] == "human")
        for rank, human in enumerate(heads):
            # Offsetting by rank keeps each participant's leading members a mix of both sources.
            _put_first(order, human if (rank + flip) % 2 == 0 else partner[human], partner)
        return order

    # blocked_by_source: the block order alternates between participants and, for lists'
    # first participants, between lists.
    first_source = SOURCES[(flip + list_index) % 2]
    blocks = [[i for i in ids if source[i] == first_source], [i for i in ids if source[i] != first_source]]
    for block in blocks:
        rng.shuffle(block)
    first, second = blocks
    if first and second and partner.get(first[-1]) == second[0]:
        # A list holding more than just one pair has a second clip in one of the blocks.
        if len(second) > 1:
            second[0], second[1] = second[1], second[0]
        else:
            first[-1], first[0] = first[0], first[-1]
    return first + second


# ---------------------------------------------------------------- summary


def describe_design(spec: DesignSpec, clips: Sequence[Clip]) -> dict:
    """Plain numbers about the design, for validation messages and the dashboard."""
    lists = build_lists(spec, clips)
    source = {c.id: c.source for c in clips}
    pairs, singles = _group(spec, clips)
    appearances = {c.id: 0 for c in clips}
    for ids in lists:
        for i in ids:
            appearances[i] += 1
    human = [sum(source[i] == "human" for i in ids) for ids in lists]
    n_conditions = len(spec.label_conditions)
    return {
        "lists": len(lists),
        "clips_per_list": len(lists[0]),
        "human_per_list": human,
        "ai_per_list": [len(ids) - h for ids, h in zip(lists, human)],
        "pairs": len(pairs),
        "unpaired_clips": len(singles),
        "appearances_per_clip": appearances,
        "label_conditions": list(spec.label_conditions),
        # Cells (list x condition) are filled evenly: every cell holds one participant at this size.
        "participants_per_full_cycle": len(lists) * n_conditions,
    }
