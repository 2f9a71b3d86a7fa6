"""Assignment and ordering of clips: unit tests and hypothesis property tests.

The properties are checked against the design's definitions (every participant sees exactly
their list, pair rules, equal exposure, Latin-square and carryover balance, balance of counts
at any N), not against the implementation's own helpers.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from study.design import (
    Clip,
    DesignError,
    DesignSpec,
    build_lists,
    choose_assignment,
    describe_design,
    sequence_for,
)
from study.errors import UserError

ORDERINGS = ["random", "blocked_by_source", "latin_square"]
PAIR_MODES = ["both", "one_per_participant", "ignore"]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_pool(n_pairs: int, n_human: int, n_ai: int) -> list[Clip]:
    clips = []
    for p in range(n_pairs):
        clips += [Clip(f"p{p}h", "human", f"pair{p}"), Clip(f"p{p}a", "ai", f"pair{p}")]
    clips += [Clip(f"sh{i}", "human", None) for i in range(n_human)]
    clips += [Clip(f"sa{i}", "ai", None) for i in range(n_ai)]
    return clips


def pool_size(clips: list[Clip], mode: str) -> int:
    n_pairs = len({c.pair_id for c in clips if c.pair_id})
    n_single = sum(1 for c in clips if not c.pair_id)
    return {"both": 2 * n_pairs + n_single, "one_per_participant": n_pairs + n_single, "ignore": len(clips)}[mode]


def partners(clips: list[Clip]) -> dict[str, str]:
    by_pair: dict[str, list[str]] = {}
    for c in clips:
        if c.pair_id:
            by_pair.setdefault(c.pair_id, []).append(c.id)
    out = {}
    for a, b in by_pair.values():
        out[a], out[b] = b, a
    return out


def expected_infeasible(spec: DesignSpec, clips: list[Clip]) -> bool:
    """Independent statement of when a design cannot exist (see the module docstring)."""
    if spec.pairs != "both":
        return False
    n_pairs = len({c.pair_id for c in clips if c.pair_id})
    n_single = sum(1 for c in clips if not c.pair_id)
    k = spec.clips_per_participant or 2 * n_pairs + n_single
    compositions = [
        (a, b)
        for a in range(1 if n_pairs else 0, n_pairs + 1)
        for b in range(1 if n_single else 0, n_single + 1)
        if 2 * a + b == k
    ]
    if not compositions:
        return True  # some clip would never be shown
    if k == 2 and n_pairs:
        return True  # every list is one pair: its clips are always back to back
    return spec.ordering == "latin_square" and k == 3 and n_pairs > 0  # pair + 1 clip: middle clip fixed


@st.composite
def designs(draw, modes=PAIR_MODES, orderings=ORDERINGS):
    n_pairs = draw(st.integers(0, 5))
    n_human = draw(st.integers(0, 4))
    n_ai = draw(st.integers(0, 4))
    assume(2 * n_pairs + n_human + n_ai >= 1)
    clips = draw(st.permutations(make_pool(n_pairs, n_human, n_ai)))
    mode = draw(st.sampled_from(modes))
    ordering = draw(st.sampled_from(orderings))
    k = draw(st.one_of(st.none(), st.integers(1, pool_size(clips, mode))))
    conditions = tuple(draw(st.sampled_from([("none",), ("true", "swapped"), ("none", "true", "swapped")])))
    spec = DesignSpec(k, ordering, draw(st.integers(0, 2**31)), mode, conditions)
    return spec, list(clips)


def adjacent_pairs(seq, partner) -> list[tuple[str, str]]:
    return [(x, y) for x, y in zip(seq, seq[1:]) if partner.get(x) == y]


# ---------------------------------------------------------------- property tests


@SETTINGS
@given(designs())
def test_lists_and_sequences_meet_the_design(design):
    spec, clips = design
    if expected_infeasible(spec, clips):
        with pytest.raises(DesignError):
            build_lists(spec, clips)
        return
    lists = build_lists(spec, clips)
    source = {c.id: c.source for c in clips}
    partner = partners(clips)
    k = spec.clips_per_participant or pool_size(clips, spec.pairs)

    assert lists
    for ids in lists:
        assert len(ids) == k
        assert len(set(ids)) == k

    # Pair rules within every list.
    for ids in lists:
        members = set(ids)
        for x, y in partner.items():
            if spec.pairs == "both":
                assert (x in members) == (y in members)
            elif spec.pairs == "one_per_participant":
                assert not (x in members and y in members)
                if spec.clips_per_participant is None:
                    assert (x in members) != (y in members)

    # Every clip appears equally often over a full cycle of lists, within paired and within
    # unpaired clips ('both' lists hold a fixed number of each). With one member per
    # participant, a pair as a whole is shown as often as an unpaired clip.
    counts = Counter(i for ids in lists for i in ids)
    if spec.pairs == "ignore":
        groups = [[c.id for c in clips]]
    else:
        groups = [[c.id for c in clips if c.pair_id], [c.id for c in clips if not c.pair_id]]
    for group in groups:
        assert len({counts[i] for i in group}) <= 1, counts
        assert all(counts[i] > 0 for i in group)
    if spec.pairs == "one_per_participant" and groups[0] and groups[1]:
        assert 2 * counts[groups[0][0]] == counts[groups[1][0]]

    # Source balance: each list holds the pool's share of human clips, rounded up or down.
    paired = spec.pairs != "ignore"
    singles = [c for c in clips if not (paired and c.pair_id)]
    share = sum(c.source == "human" for c in singles) / len(singles) if singles else 0
    for ids in lists:
        in_pairs = [i for i in ids if paired and i in partner]
        rest = [i for i in ids if not (paired and i in partner)]
        human_pairs = sum(source[i] == "human" for i in in_pairs)
        assert abs(2 * human_pairs - len(in_pairs)) <= 1
        assert abs(sum(source[i] == "human" for i in rest) - share * len(rest)) < 1

    # Latin square: per set of clips, each clip in each position equally often; without
    # pairs shown together, also each ordered neighbour pair equally often (Williams).
    if spec.ordering == "latin_square":
        squares: dict[frozenset, list[tuple[str, ...]]] = {}
        for ids in lists:
            squares.setdefault(frozenset(ids), []).append(ids)
        for members, rows in squares.items():
            per_cell = Counter((pos, i) for row in rows for pos, i in enumerate(row))
            assert set(per_cell.values()) == {len(rows) // k}
            assert len(per_cell) == k * k
            if spec.pairs != "both" and k > 1:
                carry = Counter(p for row in rows for p in zip(row, row[1:]))
                assert len(carry) == k * (k - 1)
                assert set(carry.values()) == {len(rows) // k}
            if spec.pairs == "both":
                for row in rows:
                    assert not adjacent_pairs(row, partner), row
                for x in members:
                    if x in partner and source[x] == "human":
                        first = sum(row.index(x) < row.index(partner[x]) for row in rows)
                        assert abs(2 * first - len(rows)) <= 1

    # Sequences: exactly the list, pair rule, blocks, order of pair members alternating.
    for list_index in sorted({0, len(lists) - 1, len(lists) // 2}):
        ids = lists[list_index]
        human_first = Counter()
        for seed in range(6):
            seq = sequence_for(spec, clips, list_index, seed)
            assert sorted(seq) == sorted(ids)
            assert seq == sequence_for(spec, clips, list_index, seed)
            if spec.ordering == "latin_square":
                assert tuple(seq) == ids
                continue
            if spec.pairs == "both":
                assert not adjacent_pairs(seq, partner), seq
                for x in seq:
                    if x in partner and source[x] == "human":
                        human_first[x] += seq.index(x) < seq.index(partner[x])
                # Alternation: over any prefix of participants, first/second differ by <= 1.
                for x, n in human_first.items():
                    assert abs(2 * n - (seed + 1)) <= 1, (x, n, seed)
            if spec.ordering == "blocked_by_source":
                sources = [source[i] for i in seq]
                assert sources == sorted(sources, key=lambda s: s != sources[0])

    # Determinism: the same inputs in another order give the same lists.
    assert build_lists(spec, list(reversed(clips))) == lists


@SETTINGS
@given(
    n_lists=st.integers(1, 12),
    conditions=st.sampled_from([("none",), ("true", "swapped"), ("none", "true", "swapped")]),
    n=st.integers(1, 80),
    seed=st.integers(0, 2**31),
)
def test_sequential_assignment_keeps_cells_and_margins_within_one(n_lists, conditions, n, seed):
    spec = DesignSpec(None, "random", seed, "ignore", conditions)
    cells = Counter()
    for _ in range(n):
        cell = choose_assignment(cells, n_lists, spec)
        assert choose_assignment(dict(cells), n_lists, spec) == cell  # same counts, same answer
        cells[cell] += 1
        every = [cells[(i, c)] for i in range(n_lists) for c in conditions]
        per_list = [sum(cells[(i, c)] for c in conditions) for i in range(n_lists)]
        per_condition = [sum(cells[(i, c)] for i in range(n_lists)) for c in conditions]
        assert max(every) - min(every) <= 1
        assert max(per_list) - min(per_list) <= 1
        assert max(per_condition) - min(per_condition) <= 1
    assert sum(cells.values()) == n


@SETTINGS
@given(
    n_lists=st.integers(1, 12),
    conditions=st.sampled_from([("none",), ("true", "swapped"), ("none", "true", "swapped")]),
    moves=st.lists(st.tuples(st.booleans(), st.integers(0, 10_000)), min_size=1, max_size=120),
    seed=st.integers(0, 2**31),
)
def test_dropouts_are_refilled_so_cells_end_within_one(n_lists, conditions, moves, seed):
    """Each move enrols one participant; some of them drop out later, and each dropout is
    followed by one more enrolment (a replacement): the cells end within 1 whatever the order."""
    spec = DesignSpec(None, "random", seed, "ignore", conditions)
    cells = Counter()
    owed = 0
    for drop, which in moves:
        if drop and sum(cells.values()):
            filled = sorted(cell for cell, k in cells.items() if k)
            cells[filled[which % len(filled)]] -= 1
            owed += 1
        else:
            cells[choose_assignment(cells, n_lists, spec)] += 1
    for _ in range(owed):
        cells[choose_assignment(cells, n_lists, spec)] += 1
    every = [cells[(i, c)] for i in range(n_lists) for c in conditions]
    assert max(every) - min(every) <= 1


@SETTINGS
@given(designs(modes=["both"], orderings=["random", "blocked_by_source"]))
def test_pair_order_balanced_across_participants_of_a_list(design):
    """Participants numbered within their list alternate which member of each pair comes first."""
    spec, clips = design
    assume(not expected_infeasible(spec, clips))
    lists = build_lists(spec, clips)
    partner = partners(clips)
    humans = [i for i in lists[0] if i in partner and i.endswith("h")]
    assume(humans)
    first = Counter()
    for ordinal in range(7):
        seq = sequence_for(spec, clips, 0, ordinal)
        for h in humans:
            first[h] += seq.index(h) < seq.index(partner[h])
    for h in humans:
        assert first[h] in (3, 4)


# ---------------------------------------------------------------- unit tests


def test_one_per_participant_full_pool_gives_two_mirror_lists():
    clips = make_pool(4, 0, 0)
    lists = build_lists(DesignSpec(None, "random", 7, "one_per_participant"), clips)
    assert len(lists) == 2
    assert set(lists[0]).isdisjoint(lists[1])
    assert set(lists[0]) | set(lists[1]) == {c.id for c in clips}
    for ids in lists:
        assert sum(i.endswith("h") for i in ids) == 2


def test_subset_lists_rotate_every_clip_equally():
    clips = make_pool(0, 6, 6)
    lists = build_lists(DesignSpec(4, "random", 3, "ignore"), clips)
    assert len(lists) == 3  # 12 clips in windows of 4 partition the pool
    assert sorted(i for ids in lists for i in ids) == sorted(c.id for c in clips)
    assert [sum(i.startswith("sh") for i in ids) for ids in lists] == [2, 2, 2]
    lists = build_lists(DesignSpec(5, "random", 3, "ignore"), clips)
    assert len(lists) == 12  # 12 / gcd(12, 5) windows walk the circle 5 times
    assert set(Counter(i for ids in lists for i in ids).values()) == {5}


def test_williams_square_for_four_clips_is_carryover_balanced():
    clips = make_pool(0, 2, 2)
    rows = build_lists(DesignSpec(None, "latin_square", 1, "ignore"), clips)
    assert len(rows) == 4
    for pos in range(4):
        assert sorted(row[pos] for row in rows) == sorted(c.id for c in clips)
    follows = Counter(p for row in rows for p in zip(row, row[1:]))
    assert len(follows) == 12 and set(follows.values()) == {1}


def test_williams_design_for_odd_n_uses_square_and_mirror():
    rows = build_lists(DesignSpec(None, "latin_square", 1, "ignore"), make_pool(0, 3, 2))
    assert len(rows) == 10
    assert set(Counter(p for row in rows for p in zip(row, row[1:])).values()) == {2}


def test_latin_square_with_pairs_shown_together_keeps_partners_apart():
    clips = make_pool(2, 0, 0)
    rows = build_lists(DesignSpec(None, "latin_square", 5, "both"), clips)
    partner = partners(clips)
    assert len(rows) == 4
    for row in rows:
        assert not adjacent_pairs(row, partner)
    # Partners stand two apart, so each member leads in exactly two of the four rows.
    assert sum(row.index("p0h") < row.index("p0a") for row in rows) == 2


def test_blocked_order_alternates_between_participants():
    clips = make_pool(3, 1, 1)
    spec = DesignSpec(None, "blocked_by_source", 11, "both")
    source = {c.id: c.source for c in clips}
    leads = [source[sequence_for(spec, clips, 0, n)[0]] for n in range(4)]
    assert leads in (["human", "ai"] * 2, ["ai", "human"] * 2)


def test_blocked_boundary_never_joins_partners():
    clips = make_pool(2, 0, 0)
    spec = DesignSpec(None, "blocked_by_source", 0, "both")
    partner = partners(clips)
    for seed in range(40):
        seq = sequence_for(spec, clips, 0, seed)
        assert partner[seq[1]] != seq[2]


def test_smallest_pools_with_a_pair_shown_together():
    # One pair and one other clip: possible in random order (pair at both ends) ...
    clips = make_pool(1, 1, 0)
    seq = sequence_for(DesignSpec(None, "random", 0, "both"), clips, 0, 0)
    assert seq[1] == "sh0"
    # ... but a Latin square must put the other clip in the middle too, so it cannot exist.
    with pytest.raises(DesignError, match="back to back"):
        build_lists(DesignSpec(None, "latin_square", 0, "both"), clips)


def test_single_pair_shown_together_is_refused_with_a_reason():
    with pytest.raises(DesignError, match="back to back"):
        build_lists(DesignSpec(None, "random", 0, "both"), make_pool(1, 0, 0))
    with pytest.raises(DesignError, match="back to back"):
        build_lists(DesignSpec(2, "random", 0, "both"), make_pool(4, 0, 0))


@pytest.mark.parametrize(
    ("spec", "clips", "message"),
    [
        (DesignSpec(9, "random", 0, "ignore"), make_pool(2, 2, 0), "clips_per_participant is 9, but there are only 6"),
        (DesignSpec(5, "random", 0, "one_per_participant"), make_pool(3, 1, 0), "only 4 clips a participant can see"),
        (DesignSpec(3, "random", 0, "both"), make_pool(3, 0, 0), "Possible values: 2, 4, 6"),
        (DesignSpec(0, "random", 0, "ignore"), make_pool(1, 0, 0), "at least 1"),
        (DesignSpec(None, "shuffled", 0, "ignore"), make_pool(1, 0, 0), "ordering is 'shuffled'"),
        (DesignSpec(None, "random", 0, "all"), make_pool(1, 0, 0), "pairs is 'all'"),
        (DesignSpec(None, "random", 0, "ignore", ()), make_pool(1, 0, 0), "label_conditions is empty"),
        (DesignSpec(None, "random", 0, "ignore"), [], "no clips"),
        (DesignSpec(None, "random", 0, "ignore"), [Clip("x", "robot")], "source 'robot'"),
        (DesignSpec(None, "random", 0, "ignore"), [Clip("x", "ai"), Clip("x", "human")], "'x' appears more than once"),
        (
            DesignSpec(None, "random", 0, "both"),
            [Clip("a", "human", "p"), Clip("b", "human", "p")],
            "exactly one human and one AI clip",
        ),
        (
            DesignSpec(None, "random", 0, "one_per_participant"),
            [Clip("a", "human", "p"), Clip("b", "ai", "p"), Clip("c", "ai", "p")],
            "joins: a (human), b (ai), c (ai)",
        ),
    ],
)
def test_impossible_designs_say_why(spec, clips, message):
    with pytest.raises(DesignError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        build_lists(spec, clips)
    assert isinstance(info.value, UserError)


def test_pairs_ignore_accepts_any_pair_ids_and_blank_means_unpaired():
    odd = [Clip("a", "human", "p"), Clip("b", "human", "p"), Clip("c", "ai", "p")]
    assert sorted(build_lists(DesignSpec(None, "random", 0, "ignore"), odd)[0]) == ["a", "b", "c"]
    blank = [Clip("a", "human", ""), Clip("b", "ai", "")]
    assert sequence_for(DesignSpec(None, "random", 0, "both"), blank, 0, 0) in (["a", "b"], ["b", "a"])


def test_list_index_out_of_range():
    with pytest.raises(DesignError, match="lists 0 to 0"):
        sequence_for(DesignSpec(None, "random", 0, "ignore"), make_pool(0, 1, 1), 3, 0)


def test_choose_assignment_fills_the_emptiest_cell_and_ignores_retired_ones():
    spec = DesignSpec(None, "random", 0, "ignore", ("true", "swapped"))
    counts = {(0, "true"): 2, (0, "swapped"): 2, (1, "true"): 2, (1, "swapped"): 1,
              (0, "old"): 0, (5, "true"): 0}  # a retired condition and a list the design lost
    assert choose_assignment(counts, 2, spec) == (1, "swapped")
    with pytest.raises(DesignError, match="no counterbalancing lists"):
        choose_assignment({}, 0, spec)
    with pytest.raises(DesignError, match="cannot be negative"):
        choose_assignment({(0, "true"): -1}, 1, spec)


def test_balance_is_joint_not_per_margin():
    """Margins even but one cell empty (the issue's list with 3 swapped and 0 none): fill it."""
    spec = DesignSpec(None, "random", 0, "ignore", ("none", "swapped"))
    counts = {(0, "none"): 0, (0, "swapped"): 3, (1, "none"): 3, (1, "swapped"): 0}
    assert choose_assignment(counts, 2, spec) in {(0, "none"), (1, "swapped")}


def test_cell_order_differs_between_rounds_and_seeds():
    spec = DesignSpec(None, "random", 0, "ignore", ("none", "true", "swapped"))
    firsts = {choose_assignment({cell: r for cell in itertools.product(range(6), spec.label_conditions)}, 6, spec)
              for r in range(30)}
    assert len({p[0] for p in firsts}) > 1 and len({p[1] for p in firsts}) > 1
    seeds = {choose_assignment({}, 6, DesignSpec(None, "random", s, "ignore", spec.label_conditions))
             for s in range(30)}
    assert len(seeds) > 1


def test_spec_from_a_yaml_list_is_usable():
    spec = DesignSpec(None, "random", 0, "ignore", ["none", "true"])  # type: ignore[arg-type]
    assert spec.label_conditions == ("none", "true")
    assert build_lists(spec, make_pool(0, 1, 1))


def test_describe_design():
    clips = make_pool(4, 1, 1)
    info = describe_design(DesignSpec(6, "random", 2, "both", ("none", "true", "swapped")), clips)
    assert info["lists"] == 2
    assert info["clips_per_list"] == 6
    assert info["human_per_list"] == [3, 3] and info["ai_per_list"] == [3, 3]
    assert info["pairs"] == 4 and info["unpaired_clips"] == 2
    assert info["appearances_per_clip"]["sh0"] == 2 and info["appearances_per_clip"]["p0h"] == 1
    assert info["participants_per_full_cycle"] == 6


def test_orders_are_pinned_so_running_studies_keep_their_assignment():
    """Changing these outputs would reshuffle the lists of studies already collecting data."""
    clips = make_pool(3, 1, 1)
    spec = DesignSpec(None, "random", 42, "both")
    assert sequence_for(spec, clips, 0, 0) == PINNED_RANDOM
    rows = build_lists(DesignSpec(4, "latin_square", 42, "one_per_participant"), clips)
    assert rows[:2] == PINNED_LATIN


PINNED_RANDOM = ['p1a', 'sh0', 'sa0', 'p2h', 'p0h', 'p1h', 'p2a', 'p0a']
PINNED_LATIN = [('sh0', 'p1h', 'sa0', 'p2a'), ('p1h', 'p2a', 'sh0', 'sa0')]


def test_shuffle_apart_terminates_on_many_tight_pools():
    # Many pairs and nothing else is the tightest case for keeping partners apart.
    for n_pairs, seed in itertools.product(range(2, 7), range(30)):
        clips = make_pool(n_pairs, 0, 0)
        seq = sequence_for(DesignSpec(None, "random", seed, "both"), clips, 0, seed)
        assert not adjacent_pairs(seq, partners(clips))
