"""analysis.power: simulated designs, the power curve, pilot variance components, the CLI."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis import power as P
from study.errors import UserError
from conftest import REFERENCE



def test_subset_design_is_balanced():
    p, c, x = P._design(12, 6, 4)
    counts = pd.crosstab(p, c)
    assert (counts.sum(axis=1) == 4).all()  # 4 clips each ...
    assert (pd.crosstab(p, x).to_numpy() == 2).all()  # ... 2 per source
    assert counts.sum(axis=0).nunique() == 1  # every clip rated equally often (12 * 4 / 12 = 4)
    p, c, x = P._design(3, 5, None)
    assert len(p) == 30 and (x == 0.5).sum() == 15


def test_simulated_data_have_the_planned_variances():
    rng = np.random.default_rng(4)
    d = P.simulate_dataset(rng, 400, 40, None, effect_raw=0.5, var_participant=0.6, var_slope=0.0,
                           var_clip=0.0, var_residual=1.0)
    assert d.groupby("source")["y"].mean().pipe(lambda m: m["human"] - m["ai"]) == pytest.approx(0.5, abs=0.06)
    assert d.groupby("participant_id")["y"].mean().var() == pytest.approx(0.6 + 1 / 80, rel=0.2)


def test_power_near_alpha_under_the_null_and_high_for_a_big_effect():
    null = P.simulate_power([16], 6, None, 0.0, 0.5, 0.1, 0.2, 1.0, n_sims=16, seed=3).iloc[0]
    assert null["effect_raw"] == 0 and null["n_failed"] == 0
    assert null["power"] <= 0.25  # 16 draws at a true rate near .05: P(>= 4 hits) < .01
    big = P.simulate_power([16], 6, 6, 1.2, 0.5, 0.1, 0.2, 1.0, n_sims=8, seed=3).iloc[0]
    assert big["effect_raw"] == pytest.approx(1.2 * np.sqrt(1.8))
    assert big["power"] >= 0.75
    assert big["ci_low"] <= big["power"] <= big["ci_high"]


def test_power_is_seeded_and_reports_progress():
    seen = []
    a = P.simulate_power([10, 12], 4, None, 0.8, 0.5, 0.1, 0.2, 1.0, n_sims=1, seed=9,
                         progress=lambda done, total, n: seen.append((done, total, n)))
    b = P.simulate_power([10, 12], 4, None, 0.8, 0.5, 0.1, 0.2, 1.0, n_sims=1, seed=9)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == P.POWER_COLUMNS and a["n_participants"].tolist() == [10, 12]
    assert seen == [(1, 2, 10), (2, 2, 12)]


def test_bad_settings_are_listed():
    with pytest.raises(UserError) as exc:
        P.simulate_power([1], 1, 3, 0.3, -1, 0.1, 0.2, 0, n_sims=0)
    text = str(exc.value)
    for where in ("participants", "clips_per_source", "clips_per_participant", "var_participant",
                  "var_residual", "simulations"):
        assert where in text


def test_more_clips_per_participant_than_clips_is_refused():
    with pytest.raises(UserError, match="more than the 8 clips"):
        P.simulate_power([10], 4, 20, 0.3, 0.5, 0.1, 0.2, 1.0, n_sims=1)


def test_variance_from_pilot_matches_lme4():
    # crossed_small, correlated-slope model; lme4 1.1-31 variance components from
    # reference_lme4.json (participant 0.81009, slope 0.16679; the lmm tolerances apply)
    out = P.variance_from_pilot(pd.read_csv(REFERENCE / "crossed_small.csv"), "valence")
    assert out["model_used"] == "correlated_slope"
    assert out["var_participant"] == pytest.approx(0.810091656832115, rel=1e-2)
    assert out["var_slope"] == pytest.approx(0.166794519301516, rel=5e-2)
    assert out["var_clip"] > 0.1 and out["var_residual"] > 1.0
    assert (out["n_participants"], out["n_stimuli"]) == (60, 24)


def test_cli_power_writes_csv_and_progress(tmp_path, capsys):
    out = tmp_path / "curve.csv"
    args = SimpleNamespace(participants="10,14", clips_per_source=4, clips_per_participant=None, effect=0.5,
                           pilot=None, outcome="valence", var_participant=0.5, var_slope=0.1, var_clip=0.2,
                           var_residual=1.0, simulations=1, alpha=0.05, seed=1, out=str(out))
    assert P.cli_power(args) == 0
    table = pd.read_csv(out)
    assert table["n_participants"].tolist() == [10, 14] and table["n_sims"].tolist() == [1, 1]
    captured = capsys.readouterr()
    assert "n_participants" in captured.out and "given on the command line" in captured.out
    # not a terminal: whole lines, no carriage returns
    assert "\r" not in captured.err and "power 100% (2/2 datasets" in captured.err
    assert (tmp_path / "curve.html").stat().st_size > 100_000  # chart with plotly.js inlined
    with pytest.raises(UserError, match="comma-separated"):
        P.cli_power(SimpleNamespace(**{**vars(args), "participants": "ten"}))


def test_cli_power_takes_variances_from_a_pilot_csv(tmp_path, capsys):
    args = SimpleNamespace(participants="10", clips_per_source=4, clips_per_participant=None, effect=0.3,
                           pilot=str(REFERENCE / "crossed_small.csv"), outcome="valence", var_participant=9,
                           var_slope=9, var_clip=9, var_residual=9, simulations=1, alpha=0.05, seed=1, out=None)
    assert P.cli_power(args) == 0
    printed = capsys.readouterr().out
    assert "from the pilot" in printed and "60 participants x 24 clips" in printed
    assert "participant 0.81" in printed


def test_progress_lines_on_a_log_file_and_bar_on_a_terminal():
    import io

    log = io.StringIO()
    bar = P._Bar(log)
    for done in range(1, 201):
        bar(done, 200, 10)
    assert len(log.getvalue().splitlines()) == 11 and "\r" not in log.getvalue()  # 0%..100% by tenths

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    P._Bar(tty)(1, 2, 10)
    assert tty.getvalue().startswith("\rpower [")
