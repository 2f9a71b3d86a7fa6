"""analysis.power: designs from a study file, simulated data, the three tests, the CLI."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import cli
from analysis import power as P
from analysis import stats as S
from study.errors import UserError
from conftest import DEMO_STUDY, REFERENCE

V = dict(var_participant=0.5, var_slope=0.1, var_clip=0.2, var_residual=1.0)


def cli_args(**kw):
    base = dict(study=None, pilot=None, participants="10,14", clips_per_source=4, clips_per_participant=None,
                effect=0.5, label_effect=0.3, pair_share=None, outcome=None, simulations=1, alpha=None, seed=1,
                jobs=1, out=None, **V)
    base.update(kw)
    return SimpleNamespace(**base)


def test_design_from_the_demo_study_file():
    d = P.design_from_study(DEMO_STUDY)
    # stimuli/demo: 3 pairs (6 main clips; the practice clip is not in the design), all clips per
    # participant, label conditions none/true/swapped
    assert len(d.clips) == 6 and d.n_pairs == 3 and "practice" not in {c.id for c in d.clips}
    assert d.label_conditions == ("none", "true", "swapped") and d.terms() == ["source", "label", "pairs"]
    assert d.plan == {"alpha": 0.05, "primary_outcome": "valence"}
    rows = d.rows(9)
    assert len(rows["x"]) == 54  # 9 participants x 6 clips
    per = pd.Series(rows["condition"]).groupby(rows["participant"]).first()
    assert per.value_counts().to_dict() == {"none": 3, "true": 3, "swapped": 3}  # cells filled in turn
    # label code: +-x under 'true', -x under 'swapped', 0 without a label
    cond, x, lab = rows["condition"], rows["x"], rows["label"]
    assert (lab[cond == "true"] == x[cond == "true"]).all() and (lab[cond == "swapped"] == -x[cond == "swapped"]).all()
    assert (lab[cond == "none"] == 0).all()
    assert "3 matched pairs" in d.describe() and "none, true, swapped" in d.describe()


def test_subset_design_from_counts_is_balanced():
    d = P.design_from_counts(6, 4)
    rows = d.rows(12)
    counts = pd.crosstab(rows["participant"], rows["clip"])
    assert (counts.sum(axis=1) == 4).all()  # 4 clips each ...
    assert (pd.crosstab(rows["participant"], rows["x"]).to_numpy() == 2).all()  # ... 2 per source
    assert counts.sum(axis=0).nunique() == 1  # every clip rated equally often (12 * 4 / 12 = 4)
    assert d.terms() == ["source"]


def test_simulated_data_have_the_planned_variances_and_effects():
    d = P.design_from_counts(40)
    rows = d.rows(400)
    y = P.simulate_dataset(np.random.default_rng(4), rows, d, 0.5, 0.0, 0.6, 0.0, 0.0, 1.0)
    x, part = rows["x"], rows["participant"]
    assert y[x > 0].mean() - y[x < 0].mean() == pytest.approx(0.5, abs=0.06)
    assert pd.Series(y).groupby(part).mean().var() == pytest.approx(0.6 + 1 / 80, rel=0.2)
    # pair share: the two clips of a pair share that part of the clip variance
    demo = P.design_from_study(DEMO_STUDY)
    r = demo.rows(3)
    effects = []
    for s in range(400):
        yy = P.simulate_dataset(np.random.default_rng(s), r, demo, 0.0, 0.0, 0.0, 0.0, 1.0, 1e-9, pair_share=0.7)
        effects.append(pd.Series(yy).groupby(r["clip"]).mean().to_numpy())
    e = np.array(effects)
    pairs = [[i for i, c in enumerate(demo.clips) if c.pair_id == p] for p in sorted({c.pair_id for c in demo.clips})]
    assert np.corrcoef(e[:, pairs[0][0]], e[:, pairs[0][1]])[0, 1] == pytest.approx(0.7, abs=0.1)
    assert np.corrcoef(e[:, pairs[0][0]], e[:, pairs[1][0]])[0, 1] == pytest.approx(0.0, abs=0.15)


def test_effect_is_westfall_d_with_the_weighted_slope():
    d = P.design_from_counts(4)
    row = P.simulate_power(d, [10], 0.5, n_sims=1, **V).iloc[0]
    # 0.5 * sqrt(0.5 + 0.25 * 0.1 + 0.2 + 1.0)
    assert row["effect_raw"] == pytest.approx(0.5 * np.sqrt(1.725), rel=1e-12)


def test_power_near_alpha_for_a_zero_effect_and_near_one_for_a_large_one():
    d = P.design_from_counts(4)
    null = P.simulate_power(d, [12], 0.0, n_sims=40, seed=3, **V).iloc[0]
    assert null["effect_raw"] == 0 and null["n_failed"] == 0
    assert null["power"] <= 0.15  # 40 draws at a true rate near .05: P(>= 7 hits) < .01
    big = P.simulate_power(d, [12], 1.5, n_sims=10, seed=3, **V).iloc[0]
    assert big["power"] >= 0.9 and big["ci_low"] <= big["power"] <= big["ci_high"]


def test_label_and_pair_tests_follow_their_effects():
    d = P.design_from_study(DEMO_STUDY)
    # a large label effect and no source effect: the label test finds it, the source test
    # stays near alpha; the pairs test (human minus AI within pairs) stays near alpha
    out = P.simulate_power(d, [60], 0.0, label_d=1.0, n_sims=12, seed=2, **V).set_index("term")
    assert out.loc["label", "power"] >= 0.9
    assert out.loc["source", "power"] <= 0.25 and out.loc["pairs", "power"] <= 0.25
    assert out.loc["label", "effect_d"] == 1.0 and out.loc["source", "effect_d"] == 0.0
    # a huge source effect with clips that differ little: the pooled pair test sees it
    pairs = P.simulate_power(d, [40], 3.0, var_participant=0.5, var_slope=0.0, var_clip=0.01, var_residual=1.0,
                             n_sims=6, seed=2, terms=["pairs"]).iloc[0]
    assert pairs["term"] == "pairs" and pairs["power"] >= 0.8


def test_vectorised_pair_test_matches_stats_pair_differences():
    d = P.design_from_study(DEMO_STUDY)
    rows = d.rows(12)
    an = P._Analyses(d, rows, ["pairs"], V)
    y = P.simulate_dataset(np.random.default_rng(5), rows, d, 0.4, 0.0, **V)
    frame = pd.DataFrame({"participant_id": rows["participant"],
                          "stimulus_id": [d.clips[c].id for c in rows["clip"]],
                          "source": np.where(rows["x"] > 0, "human", "ai"),
                          "pair_id": [d.clips[c].pair_id for c in rows["clip"]], "y": y})
    pooled = S.pair_differences(frame, "y").set_index("pair_id").loc["pooled"]
    t = pooled["diff"] / pooled["se"]
    from scipy import stats as sps

    assert an._pairs_p(y) == pytest.approx(2 * sps.t.sf(abs(t), pooled["n"] - 1), rel=1e-9)


def test_label_test_matches_stats_label_effect():
    d = P.design_from_study(DEMO_STUDY)
    rows = d.rows(30)
    an = P._Analyses(d, rows, ["label"], V)
    y = P.simulate_dataset(np.random.default_rng(6), rows, d, 0.3, 0.5, **V)
    frame = pd.DataFrame({"participant_id": rows["participant"], "stimulus_id": rows["clip"],
                          "source": np.where(rows["x"] > 0, "human", "ai"), "label_condition": rows["condition"],
                          "y": y})
    lab = S.label_effect(frame, "y").set_index("contrast").loc["believed_human_vs_ai"]
    p = an.p_values(y)["label"]
    assert p == pytest.approx(lab["p"], rel=1e-4)
    y2 = P.simulate_dataset(np.random.default_rng(7), rows, d, 0.3, 0.5, **V)  # the reused set-up
    lab2 = S.label_effect(frame.assign(y=y2), "y").set_index("contrast").loc["believed_human_vs_ai"]
    assert an.p_values(y2)["label"] == pytest.approx(lab2["p"], rel=1e-4)


def test_power_is_seeded_the_same_with_two_jobs_and_reports_progress():
    d = P.design_from_counts(4)
    seen = []
    a = P.simulate_power(d, [10, 12], 0.8, n_sims=2, seed=9, **V,
                         progress=lambda done, total, n: seen.append((done, total, n)))
    b = P.simulate_power(d, [10, 12], 0.8, n_sims=2, seed=9, jobs=2, **V)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == P.POWER_COLUMNS and a["n_participants"].tolist() == [10, 12]
    assert seen == [(1, 4, 10), (2, 4, 10), (3, 4, 12), (4, 4, 12)]


def test_bad_settings_are_listed():
    d = P.design_from_counts(4)
    with pytest.raises(UserError) as exc:
        P.simulate_power(d, [1], 0.3, var_participant=-1, var_slope=0.1, var_clip=0.2, var_residual=0, n_sims=0,
                         pair_share=1.5)
    text = str(exc.value)
    for where in ("participants", "var_participant", "var_residual", "simulations", "pair_share"):
        assert where in text
    with pytest.raises(UserError) as exc:
        P.design_from_counts(1, 3)
    assert "clips_per_source" in str(exc.value)
    with pytest.raises(UserError, match="more than the 8 clips"):
        P.design_from_counts(4, 20)
    with pytest.raises(UserError, match="two or more label conditions"):
        P.simulate_power(d, [10], 0.3, n_sims=1, terms=["label"], **V)
    # effects that are no number, or so large that the simulated ratings overflow
    for effect, label in ((float("nan"), 0.0), (1e308, 0.0), (0.3, float("inf")), ("big", 0.0)):
        with pytest.raises(UserError, match="must be a number between -10 and 10"):
            P.simulate_power(d, [10], effect, label_d=label, n_sims=1, **V)
    assert len(P.simulate_power(d, [10], np.int64(-1), n_sims=1, **V)) == len(d.terms())


def test_variance_from_pilot_matches_lme4():
    # crossed_small, correlated-slope model; lme4 1.1-31 variance components from
    # reference_lme4.json (participant 0.81009, slope 0.16679; the lmm tolerances apply)
    pilot = pd.read_csv(REFERENCE / "crossed_small.csv")
    out = P.variance_from_pilot(pilot.drop(columns="pair_id"), "valence")
    assert out["model_used"] == "correlated_slope"
    assert out["var_participant"] == pytest.approx(0.810091656832115, rel=1e-2)
    assert out["var_slope"] == pytest.approx(0.166794519301516, rel=5e-2)
    assert out["var_clip"] > 0.1 and out["var_residual"] > 1.0
    assert (out["n_participants"], out["n_stimuli"]) == (60, 24)
    assert out["pair_share"] == 0.0  # no pair_id column
    # with its pairs: the clip variance split into a pair part and the rest
    assert 0.0 < P.variance_from_pilot(pilot, "valence")["pair_share"] < 1.0


def test_cli_power_writes_csv_and_progress(tmp_path, capsys):
    out = tmp_path / "curve.csv"
    assert P.cli_power(cli_args(out=str(out))) == 0
    table = pd.read_csv(out)
    assert table["n_participants"].tolist() == [10, 14] and table["n_sims"].tolist() == [1, 1]
    captured = capsys.readouterr()
    assert "n_participants" in captured.out and "given on the command line" in captured.out
    assert "simulation standard error at most 0.500" in captured.out
    # not a terminal: whole lines, no carriage returns
    assert "\r" not in captured.err and "power 100% (2/2 datasets, N = 14)" in captured.err
    assert (tmp_path / "curve.html").stat().st_size > 100_000  # chart with plotly.js inlined
    with pytest.raises(UserError, match="comma-separated"):
        P.cli_power(cli_args(participants="ten"))
    with pytest.raises(UserError, match="--jobs must be at least 1"):
        P.cli_power(cli_args(jobs=0))


def test_cli_power_reads_the_design_from_the_study_file(capsys):
    args = cli_args(study=str(DEMO_STUDY), clips_per_source=None, participants="12")
    assert P.cli_power(args) == 0
    printed = capsys.readouterr().out
    assert "6 clips (3 human-made, 3 AI-generated)" in printed and "3 matched pairs" in printed
    assert "tests: source, label, pairs; alpha 0.05" in printed
    rows = [line.split() for line in printed.splitlines() if line.split()[:1] in (["source"], ["label"], ["pairs"])]
    assert [(r[0], r[1]) for r in rows] == [("source", "12"), ("label", "12"), ("pairs", "12")]
    with pytest.raises(UserError, match="with --study the design comes from the study file"):
        P.cli_power(cli_args(study=str(DEMO_STUDY), clips_per_source=8))
    with pytest.raises(UserError, match="not a file"):
        P.cli_power(cli_args(study="no/such/study.yaml", clips_per_source=None))


def test_cli_power_takes_variances_from_a_pilot_csv(capsys):
    args = cli_args(participants="10", pilot=str(REFERENCE / "crossed_small.csv"), outcome="valence",
                    var_participant=9, var_slope=9, var_clip=9, var_residual=9)
    assert P.cli_power(args) == 0
    printed = capsys.readouterr().out
    assert "from the pilot" in printed and "60 participants x 24 clips" in printed
    assert "participant 0.81" in printed


def test_progress_lines_on_a_log_file_and_bar_on_a_terminal():
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


def test_power_chart_has_one_curve_per_test():
    from analysis.charts import power_curve

    d = P.design_from_study(DEMO_STUDY)
    table = P.simulate_power(d, [6, 9], 0.3, label_d=0.3, n_sims=1, **V)
    fig = power_curve(table)
    assert [t.name for t in fig.data] == ["source", "label", "pairs"] and fig.layout.showlegend
    assert list(fig.data[1].x) == [6, 9]


def test_cli_power_takes_a_pilot_csv_from_other_software(tmp_path, capsys):
    """A jsPsych pilot with its own column names and source words: --columns and --sources
    work for power as for report and analyze."""
    data = pd.read_csv(Path(__file__).parent / "data" / "jspsych_video_slider.csv")
    data["clip_source"] = data["clip_source"].map({"human": "film", "ai": "generated"})
    path = tmp_path / "pilot.csv"
    data.to_csv(path, index=False)
    argv = ["power", "--pilot", str(path), "--outcome", "response", "--participants", "10", "--simulations", "2",
            "--jobs", "1", "--columns", "participant_id=subject,stimulus_id=clip,source=clip_source"]
    assert cli.main(argv) == 2
    assert "recoded with --sources" in capsys.readouterr().err
    assert cli.main([*argv, "--sources", "human=film,ai=generated"]) == 0
    printed = capsys.readouterr().out
    assert f"from the pilot {path} (response, 20 participants x 12 clips" in printed
