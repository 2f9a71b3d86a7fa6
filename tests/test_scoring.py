"""analysis.scoring: long table -> trial table, reverse keying, scales, reliability, exclusions."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import scoring as SC
from study.errors import UserError
from study.instruments import codebook

META = codebook(None)


def _long(rows):
    """rows: (participant, clip, source, position, item, value, text)."""
    out = []
    for pid, clip, src, pos, item, value, text in rows:
        out.append({"participant_id": pid, "stimulus_id": clip, "source": src, "pair_id": "pair1",
                    "label_condition": "none", "position": pos, "step": f"trial:{pos}",
                    "instrument_id": "x", "item_id": item, "value": value, "value_text": text,
                    "watched_share": 1.0, "is_pilot": False})
    return pd.DataFrame(out)


def _moved_rows(pid, clip, src, pos, answers, judged="ai", conf=70):
    rows = [(pid, clip, src, pos, f"moved_{i + 1}", v, None) for i, v in enumerate(answers) if v is not None]
    rows += [(pid, clip, src, pos, "valence", 6.0, None), (pid, clip, src, pos, "judged_source", None, judged),
             (pid, clip, src, pos, "confidence", conf, None)]
    return rows


def test_score_items_reverse_keying_and_scales():
    rows = (_moved_rows("p1", "h1", "human", 1, [7, 6, 5, 2]) + _moved_rows("p1", "a1", "ai", 2, [3, None, None, 7])
            + _moved_rows("p2", "h1", "human", 2, [4, 4, None, 1]))
    rows.append(("p1", None, None, None, "mood_valence", 5.0, None))  # session item: not a trial column
    t = SC.score_items(_long(rows), META)
    assert len(t) == 3 and "mood_valence" not in t.columns
    r = t.set_index(["participant_id", "stimulus_id"])
    # raw answers kept unreversed
    assert r.loc[("p1", "h1"), "moved_4"] == 2
    # moved_4 is reverse-keyed on 1-7: 1 + 7 - 2 = 6; (7 + 6 + 5 + 6) / 4 = 6
    assert r.loc[("p1", "h1"), "moved"] == pytest.approx(6.0)
    # two of four answered (half): (3 + (8 - 7)) / 2 = 2
    assert r.loc[("p1", "a1"), "moved"] == pytest.approx(2.0)
    # three of four: (4 + 4 + 7) / 3 = 5
    assert r.loc[("p2", "h1"), "moved"] == pytest.approx(5.0)
    assert r.loc[("p1", "a1"), "judged_source"] == "ai" and r.loc[("p1", "a1"), "confidence"] == 70
    assert r.loc[("p1", "h1"), "valence"] == 6
    for col in ("source", "pair_id", "label_condition", "position", "watched_share", "is_pilot"):
        assert col in t.columns
    assert t["engagement"].isna().all() if "engagement" in t.columns else True


def test_less_than_half_answered_gives_missing():
    rows = _moved_rows("p1", "h1", "human", 1, [7, None, None, None])
    t = SC.score_items(_long(rows), META)
    assert np.isnan(t.loc[0, "moved"])


def test_custom_subscale_becomes_a_scale():
    meta = pd.DataFrame({"name": ["c1", "c2"], "instrument": ["custom", "custom"], "type": ["likert", "likert"],
                         "reverse": [False, True], "subscale": ["warmth", "warmth"], "min": [1, 1], "max": [5, 5]})
    assert SC.default_scales(meta) == {"warmth": ["c1", "c2"]}
    t = SC.score_items(_long([("p1", "h1", "human", 1, "c1", 4, None), ("p1", "h1", "human", 1, "c2", 1, None)]), meta)
    assert t.loc[0, "warmth"] == pytest.approx((4 + 5) / 2)  # c2 reversed: 1 + 5 - 1 = 5


def test_duplicate_answers_are_an_error_not_a_silent_drop():
    rows = _moved_rows("p1", "h1", "human", 1, [7, 6, 5, 2]) + [("p1", "h1", "human", 1, "moved_1", 3, None)]
    with pytest.raises(UserError, match="answered twice") as exc:
        SC.score_items(_long(rows), META)
    assert "moved_1" in str(exc.value)
    with pytest.raises(UserError, match="columns missing"):
        SC.score_items(_long(rows).drop(columns="value_text"), META)


# --------------------------------------------------------------------------------------
# reliability


HAND = pd.DataFrame([(2, 3, 3), (4, 4, 5), (3, 3, 4), (5, 4, 5), (1, 2, 2)], columns=["i1", "i2", "i3"])


def test_alpha_worked_example():
    # Worked by hand in exact fractions: item variances 5/2, 7/10, 17/10 (sum 49/10), variance
    # of the sum score 27/2, alpha = 3/2 * (1 - (49/10) / (27/2)) = 43/45.
    a, lo, hi, n = SC.cronbach_alpha(HAND)
    assert a == pytest.approx(float(Fraction(43, 45)), rel=1e-12) and n == 5
    # pingouin-style covariance form: k/(k-1) * (1 - trace(C) / sum(C))
    C = np.cov(HAND.to_numpy(float), rowvar=False)
    assert a == pytest.approx(3 / 2 * (1 - np.trace(C) / C.sum()), rel=1e-12)
    # Feldt (1965): 1 - (1 - alpha) * F quantiles on (n-1, (n-1)(k-1)) = (4, 8) df
    assert lo == pytest.approx(1 - (2 / 45) * stats.f.ppf(0.975, 4, 8), rel=1e-12)
    assert hi == pytest.approx(1 - (2 / 45) * stats.f.ppf(0.025, 4, 8), rel=1e-12)
    assert lo < a < hi <= 1


def test_alpha_of_parallel_items_and_feldt_coverage():
    # Parallel items with true-score variance 1 and error variance 1, k = 4: population
    # alpha = k * r / (1 + (k - 1) r) with r = 0.5, i.e. 0.8. The 95% Feldt interval should
    # cover it in about 95% of samples.
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(200):
        t = rng.normal(size=(60, 1))
        x = pd.DataFrame(t + rng.normal(size=(60, 4)))
        _, lo, hi, _ = SC.cronbach_alpha(x)
        covered += lo < 0.8 < hi
    assert 0.88 <= covered / 200 <= 0.99


def test_reliability_reverses_items_from_the_codebook():
    rng = np.random.default_rng(2)
    true = rng.normal(4, 1, 300)
    t = pd.DataFrame({f"moved_{i}": np.clip(np.round(true + rng.normal(0, 0.7, 300)), 1, 7) for i in (1, 2, 3)})
    t["moved_4"] = 8 - np.clip(np.round(true + rng.normal(0, 0.7, 300)), 1, 7)  # reverse-keyed item
    t.loc[0, "moved_2"] = np.nan
    out = SC.reliability(t, {"moved": ["moved_1", "moved_2", "moved_3", "moved_4"]}, META).iloc[0]
    assert out["n_items"] == 4 and out["n"] == 299
    assert out["alpha"] > 0.8
    raw = SC.reliability(t, {"moved": ["moved_1", "moved_2", "moved_3", "moved_4"]}).iloc[0]
    assert raw["alpha"] < 0.5  # unreversed, the item works against the others
    assert list(SC.reliability(t, None, META).columns) == SC.RELIABILITY_COLUMNS


# --------------------------------------------------------------------------------------
# exclusions


def _trials():
    rows = []
    for pid in ("p1", "p2", "p3", "p4"):
        for j, clip in enumerate(("h1", "a1", "h2", "a2")):
            rows.append({"participant_id": pid, "stimulus_id": clip, "watched_share": 1.0, "is_pilot": pid == "p4",
                         "valence": 5})
    t = pd.DataFrame(rows)
    t.loc[(t["participant_id"] == "p1") & (t["stimulus_id"] == "a1"), "watched_share"] = 0.5
    t.loc[(t["participant_id"] == "p1") & (t["stimulus_id"] == "h2"), "watched_share"] = np.nan
    t.loc[(t["participant_id"] == "p2") & (t["stimulus_id"] == "h1"), "watched_share"] = 0.2
    return t


def test_apply_exclusions_lists_every_reason():
    trials = _trials()
    participants = pd.DataFrame({"participant_id": ["p1", "p2", "p3", "p4"], "status": "completed",
                                 "is_pilot": [False, False, False, True], "n_planned": [4, 8, 4, 4],
                                 "n_completed": [4, 4, 4, 4], "failed_attention": [0, 2, 0, 0]})
    rules = {"min_watched_share": 0.8, "max_failed_attention_checks": 1, "exclude_pilot": True,
             "min_completion": 1.0}
    kept, excluded = SC.apply_exclusions(trials, participants, rules)
    assert list(excluded.columns) == SC.EXCLUDED_COLUMNS
    part = excluded[excluded["level"] == "participant"].set_index("participant_id")
    assert sorted(part.index) == ["p2", "p4"]
    assert "failed 2 attention checks (at most 1 allowed)" in part.loc["p2", "reason"]
    assert "completed 4 of 8 planned clips (50%" in part.loc["p2", "reason"]
    assert part.loc["p4", "reason"].startswith("pilot participant")
    trial = excluded[excluded["level"] == "trial"]
    # p2's short trial is not listed again: the whole participant is out
    assert trial[["participant_id", "stimulus_id"]].values.tolist() == [["p1", "a1"]]
    assert "watched 50% of the clip (at least 80% required)" == trial.iloc[0]["reason"]
    assert len(kept) == 4 + 4 - 1  # p1 without a1 (missing watched_share kept), p3
    assert set(kept["participant_id"]) == {"p1", "p3"}
    assert len(kept) + 1 + 8 == len(trials)  # nothing lost without a listed reason


def test_apply_exclusions_with_attention_table_and_object_rules():
    from types import SimpleNamespace

    trials = _trials()
    attention = pd.DataFrame({"participant_id": ["p3", "p3", "p1"], "passed": [False, True, True]})
    rules = SimpleNamespace(min_watched_share=None, max_failed_attention_checks=0, exclude_pilot=False,
                            min_completion=None)
    kept, excluded = SC.apply_exclusions(trials, None, rules, attention=attention)
    assert excluded["participant_id"].tolist() == ["p3"]
    assert excluded.iloc[0]["reason"] == "failed 1 attention check (at most 0 allowed)"
    assert len(kept) == 12


def test_add_scale_scores_on_a_trial_table():
    t = pd.DataFrame({"participant_id": ["p1", "p2"], "stimulus_id": ["h1", "h1"],
                      "moved_1": [7, 2], "moved_2": [7, np.nan], "moved_3": [6, np.nan], "moved_4": [1, 6],
                      "ai_qualities": [3.5, 4.0]})  # a score carried by a CSV without its items: kept
    out = SC.add_scale_scores(t)  # study None: every built-in instrument's scales
    assert out["moved"].tolist() == pytest.approx([(7 + 7 + 6 + 7) / 4, (2 + 2) / 2])
    assert out["ai_qualities"].tolist() == [3.5, 4.0]
    assert "engagement" not in out.columns
    assert "moved" not in t.columns  # input left alone


def test_a_share_just_under_the_threshold_is_not_shown_as_the_threshold():
    # 0.797 used to print as "watched 80% (at least 80% required)", which reads as a wrong exclusion.
    trials = pd.DataFrame({"participant_id": ["p1", "p1", "p2"], "stimulus_id": ["h1", "a1", "h1"],
                           "watched_share": [0.797, 0.29, 1.0], "is_pilot": False})
    participants = pd.DataFrame({"participant_id": ["p1", "p2"], "n_planned": [2, 200], "n_completed": [2, 199]})
    rules = {"min_watched_share": 0.8, "max_failed_attention_checks": None, "exclude_pilot": False,
             "min_completion": 1.0}
    kept, excluded = SC.apply_exclusions(trials, participants, rules)
    reasons = excluded.set_index(["participant_id", "stimulus_id"])["reason"]
    assert reasons[("p1", "h1")] == "watched 79% of the clip (at least 80% required)"
    assert reasons[("p1", "a1")].startswith("watched 29% ")
    assert "(99%; at least 100% required)" in excluded.loc[excluded["participant_id"] == "p2", "reason"].iloc[0]
