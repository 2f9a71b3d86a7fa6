"""analysis.results and the report's wording: the decision, exact counts and messages, and a
CSV exported from other software (tests/data/jspsych_video_slider.csv, the README's example).

The synthetic trial tables are made here with numpy: a crossed design with a planted effect.
"""

from __future__ import annotations

import html
import json
import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cli
from analysis import report, results, stats
from study.errors import UserError
from conftest import REFERENCE

ROOT = Path(__file__).resolve().parent.parent
JSPSYCH = ROOT / "tests" / "data" / "jspsych_video_slider.csv"


def crossed(effect: float, *, n_participants: int = 40, n_clips: int = 40, clip_sd: float = 0.05,
            noise: float = 1.0, seed: int = 1) -> pd.DataFrame:
    """Every participant rates every clip; half the clips human-made; `effect` = human - AI."""
    rng = np.random.default_rng(seed)
    clip_effect = rng.normal(0, clip_sd, n_clips)
    rows = []
    for p in range(n_participants):
        p_int = rng.normal(0, 0.5)
        for c in range(n_clips):
            x = 0.5 if c % 2 == 0 else -0.5
            rows.append({"participant_id": f"p{p:03d}", "stimulus_id": f"c{c:03d}",
                         "source": "human" if x > 0 else "ai",
                         "valence": 5 + p_int + effect * x + clip_effect[c] + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def summary_of(page: str) -> str:
    return re.search(r'<section id="summary".*?</section>', page, re.S).group(0)


def first_sentence(page: str) -> str:
    text = html.unescape(re.sub(r"<[^>]+>", "", summary_of(page).split("</h2>", 1)[1]))
    return text.strip().split(". ")[0]


def test_an_equivalent_effect_is_called_equivalent_in_the_first_sentence():
    trials = crossed(0.0)
    res = results.analyze(trials, outcomes=["valence"])
    row = res["primary"].iloc[0]
    assert bool(row["equivalent"]) and row["p"] >= 0.05 and row["decision"] == "equivalence"
    first = first_sentence(report.build_report(trials, results=res))
    assert first.startswith("valence (primary outcome): equivalent — the difference lies within the smallest "
                            "effect of interest (d = ±0.2; TOST p ")


def test_a_significant_but_tiny_effect_is_not_reported_as_plain_higher():
    # The issue: "human-made higher" in the summary while the table marked the effect equivalent.
    trials = crossed(0.12, n_participants=120, noise=0.6, seed=4)
    res = results.analyze(trials, outcomes=["valence"])
    row = res["primary"].iloc[0]
    assert row["p"] < 0.05 and bool(row["equivalent"]), row[["p", "tost_p", "d"]]
    assert row["decision"] == "negligible_difference"
    first = first_sentence(report.build_report(trials, results=res))
    assert first.startswith("valence (primary outcome): a difference too small to matter — human-made clips "
                            "were rated higher")
    assert "but by less than the smallest effect of interest (d = ±0.2; TOST p" in first


def test_a_clear_difference_and_an_inconclusive_result():
    big = crossed(1.0, clip_sd=0.2, seed=2)
    res = results.analyze(big, outcomes=["valence"])
    assert res["primary"]["decision"].iloc[0] == "difference"
    first = first_sentence(report.build_report(big, results=res))
    assert first.startswith("valence (primary outcome): a difference — human-made clips were rated higher than "
                            "AI-generated clips, human − AI = ")
    small = crossed(0.3, n_participants=6, n_clips=8, clip_sd=0.8, seed=3)
    res = results.analyze(small, outcomes=["valence"])
    assert res["primary"]["decision"].iloc[0] == "inconclusive"
    assert first_sentence(report.build_report(small, results=res)).startswith(
        "valence (primary outcome): inconclusive — neither a difference (p = ")


def test_a_secondary_outcome_is_decided_by_its_adjusted_p():
    trials = crossed(1.0, clip_sd=0.2, seed=2)
    trials["arousal"] = trials["valence"] + np.random.default_rng(9).normal(0, 3, len(trials))
    plan = {"primary_outcome": "valence", "secondary_outcomes": ["arousal"], "correction": "holm"}
    prim = results.analyze(trials, plan=plan)["primary"].set_index("outcome")
    for outcome in ("valence", "arousal"):
        r = prim.loc[outcome]
        p_used = r["p"] if outcome == "valence" else r["p_holm"]
        significant = p_used < 0.05
        expected = ("negligible_difference" if significant and r["equivalent"] else "difference" if significant
                    else "equivalence" if r["equivalent"] else "inconclusive")
        assert r["decision"] == expected


def test_rows_dropped_for_missing_values_are_counted_against_the_whole_table():
    # The issue: "2 of 356 rows dropped" when 6 of 360 were (4 had no outcome, 2 no participant).
    trials = crossed(0.5, n_participants=9, n_clips=40).head(360).copy()
    trials.loc[[1, 5, 9, 13], "valence"] = np.nan
    trials.loc[[20, 30], "participant_id"] = np.nan
    row = stats.primary_test(trials, ["valence"]).iloc[0]
    assert "6 of 360 rows dropped for missing values (valence missing in 4, participant_id or stimulus_id " \
           "missing in 2)" in row["messages"]
    assert "of 356" not in row["messages"] and row["nobs"] == 354
    page = report.build_report(trials, results=results.analyze(trials, outcomes=["valence"]))
    methods = re.search(r'<section id="methods".*?</section>', page, re.S).group(0)
    assert ("; 6 of 360 rows dropped for missing values (valence missing in 4, participant_id or stimulus_id "
            "missing in 2)</li>") in methods


@pytest.mark.parametrize("value,what", [("five", "'five' (participant p000, clip c003) is not a number (2 values like it)"),
                                        (np.inf, "inf (participant p000, clip c003) is not a finite number"),
                                        (-1e300, "-1e+300 (participant p000, clip c003) is too large to be a rating")])
def test_an_outcome_value_that_is_no_rating_is_named_not_analysed(value, what):
    trials = crossed(0.5, n_participants=4, n_clips=6)
    trials["valence"] = trials["valence"].astype(object)
    trials.loc[3, "valence"] = value
    if isinstance(value, str):
        trials.loc[7, "valence"] = "n/a"
    for outcomes in (["valence"], None):  # named, and found as the known outcome it is
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(UserError, match="outcome values that cannot be analysed") as exc:
                results.analyze(trials, outcomes=outcomes)
        assert f"outcome valence: {what}" in str(exc.value)
    # numbers written as text (a CSV read with the column as strings) are numbers
    trials.loc[3, "valence"] = " 4.5"
    trials.loc[7, "valence"] = None
    res = results.analyze(trials, outcomes=["valence"])
    assert res["descriptives"].query("outcome == 'valence'")["n"].sum() == len(trials) - 1
    # a known outcome's name on a column of words (a study's choice item called "moved") is no outcome
    res = results.analyze(trials.assign(moved=np.where(np.arange(len(trials)) % 2, "yes", "no")))
    assert res["outcomes"]["outcome"].tolist() == ["valence"]


def test_a_constant_outcome_gives_a_message_and_no_scipy_warning():
    trials = crossed(0.0, n_participants=8, n_clips=10).assign(valence=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning from scipy fails the test
        res = results.analyze(trials, outcomes=["valence"])
        page = report.build_report(trials, results=res)
    skipped = dict(zip(res["skipped"]["section"], res["skipped"]["reason"]))
    assert skipped["naive"] == "outcome valence has the same value in every rating; nothing to test"
    assert res["primary"]["decision"].iloc[0] == "not_estimated"
    assert first_sentence(page).startswith("valence (primary outcome): not estimated (outcome valence has the "
                                           "same value in every rating; nothing to test)")


def test_an_outcome_with_no_value_says_so_not_that_it_is_constant():
    """Every cell empty (the wrong rows of a long export): not 'the same value in every rating'."""
    trials = crossed(0.0, n_participants=8, n_clips=10).assign(valence=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = results.analyze(trials, outcomes=["valence"])
        page = report.build_report(trials, results=res)
    said = (f"outcome valence has no ratings to analyse: none of the {len(trials)} rows holds a value of valence "
            "with its source, participant and clip")
    skipped = dict(zip(res["skipped"]["section"], res["skipped"]["reason"]))
    assert skipped["naive"] == said
    assert res["primary"]["messages"].iloc[0] == said
    assert first_sentence(page).startswith(f"valence (primary outcome): not estimated ({said})")


def test_clips_rated_under_both_sources_are_counted_as_such():
    trials = crossed(0.5, n_participants=6, n_clips=8)
    trials.loc[(trials["stimulus_id"] == "c000") & (trials["participant_id"] < "p003"), "source"] = "ai"
    n = results.counts(trials)
    assert (n["clips"], n["human"], n["ai"], n["both"]) == (8, 3, 4, 1)
    assert results.clips_phrase(n) == "8 clips (3 human-made, 4 AI-generated, 1 under both sources)"
    welch = stats.naive_tests(trials, "valence").set_index("test").loc["welch_t_stimulus_means"]
    assert welch["n"] == 8  # not 9: the clip under both sources is one clip


def _readme_command() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    line = next(ln.strip() for ln in readme.splitlines() if ln.strip().startswith("kuleshov report tests/data/"))
    return shlex.split(line)[1:]


def test_the_readme_example_analyses_a_jspsych_export(tmp_path, capsys):
    args = _readme_command()
    assert args[0] == "report"
    args[1] = str(ROOT / args[1])  # the README runs from the repository's root
    args[args.index("--out") + 1] = str(tmp_path / "report.html")
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert f"note: 20 of 260 rows of {args[1]} have no stimulus_id" in err  # the instruction screens
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "20 participants, 12 clips (6 human-made, 6 AI-generated), 240 ratings after exclusions" in summary_of(page)
    # the same numbers as the table renamed by hand
    raw = pd.read_csv(JSPSYCH)
    mine = raw[raw["clip"].notna()].rename(columns={"subject": "participant_id", "clip": "stimulus_id",
                                                    "clip_source": "source"})
    direct = stats.primary_test(mine, ["response"]).iloc[0]
    tables = tmp_path / "tables"
    analyze = ["analyze", *args[1:]]
    analyze[analyze.index("--out") + 1] = str(tables)
    assert cli.main(analyze) == 0
    prim = pd.read_csv(tables / "primary.csv").iloc[0]
    assert (prim["nobs"], prim["n_participants"], prim["n_stimuli"]) == (240, 20, 12)
    assert prim["estimate"] == pytest.approx(direct["estimate"], rel=1e-9)
    assert prim["p"] == pytest.approx(direct["p"], rel=1e-9)
    # lme4 1.1-31 / lmerTest 3.1-3 (R 4.2.2) on the same file, rows with a clip, x = +-0.5:
    #   lmer(response ~ x + (1 + x | subject) + (1 | clip))  -> singular, so simplified (as here) to
    #   lmer(response ~ x + (1 | subject) + (1 | clip))      -> x: 5.116666667, SE 3.841308803,
    #   df 9.999875252, p 0.2124171461
    assert prim["model_used"] == "intercepts"
    assert prim["estimate"] == pytest.approx(5.116666667, rel=1e-6)
    assert prim["se"] == pytest.approx(3.841308803, rel=2e-4)
    assert prim["df"] == pytest.approx(9.999875252, abs=0.05)
    assert prim["p"] == pytest.approx(0.2124171461, rel=1e-3)


def test_column_options_that_do_not_fit_say_why(tmp_path, capsys):
    base = ["analyze", str(JSPSYCH), "--outcomes", "response", "--out", str(tmp_path / "t")]
    assert cli.main([*base, "--columns", "participant_id=subjct,stimulus_id=clip,source=clip_source"]) == 2
    assert "has no column 'subjct' (is 'subject' a typo for it?)" in capsys.readouterr().err
    assert cli.main([*base, "--columns", "participant_id"]) == 2
    assert "--columns takes OURS=THEIRS pairs" in capsys.readouterr().err
    assert cli.main([*base, "--columns", "participant_id=subject,stimulus_id=clip,source=trial_type"]) == 2
    assert "source must be 'human' or 'ai'" in capsys.readouterr().err
    with pytest.raises(UserError, match="renames the columns of a CSV file"):
        from analysis import load

        load.load_trials(tmp_path, columns={"participant_id": "subject"})
    # a column named for two of ours, one of ours named twice, an outcome named twice
    assert cli.main([*base, "--columns", "participant_id=subject,stimulus_id=subject,source=clip_source"]) == 2
    assert "column 'subject' is named for participant_id and stimulus_id" in capsys.readouterr().err
    assert cli.main([*base, "--columns", "participant_id=subject,participant_id=clip"]) == 2
    assert "--columns names participant_id twice" in capsys.readouterr().err
    twice = ["analyze", str(JSPSYCH), "--outcomes", "response,response", "--out", str(tmp_path / "t"),
             "--columns", "participant_id=subject,stimulus_id=clip,source=clip_source"]
    assert cli.main(twice) == 2
    assert "--outcomes names response more than once" in capsys.readouterr().err
    with pytest.raises(UserError, match="outcomes named more than once: valence"):
        results.analyze(pd.read_csv(REFERENCE / "crossed_small.csv"), outcomes=["valence", "valence"])


def test_column_options_may_swap_two_columns(tmp_path):
    """Their `source` holds the clip ids and `kind` the source: stimulus_id=source,source=kind
    renames both at once (it was refused: 'already has a column source')."""
    data = pd.read_csv(JSPSYCH)
    swapped = data.rename(columns={"clip": "source", "clip_source": "kind"})
    path = tmp_path / "swapped.csv"
    swapped.to_csv(path, index=False)
    out = tmp_path / "t"
    assert cli.main(["analyze", str(path), "--outcomes", "response", "--out", str(out),
                     "--columns", "participant_id=subject,stimulus_id=source,source=kind"]) == 0
    prim = pd.read_csv(out / "primary.csv").iloc[0]
    assert (prim["nobs"], prim["n_participants"], prim["n_stimuli"]) == (240, 20, 12)
    assert prim["estimate"] == pytest.approx(5.116666667, rel=1e-6)  # lme4's, as in the README example's test


def test_source_values_of_other_software_are_recoded_by_the_sources_option(tmp_path, capsys):
    """Their source column says Real / AI-made: refused with the values found and the option
    to recode them; --sources human=real,ai=ai-made gives the same numbers as the file
    with human / ai (lme4's, as in the README example's test)."""
    data = pd.read_csv(JSPSYCH)
    data["clip_source"] = data["clip_source"].map({"human": "Real", "ai": "AI-made"})
    path = tmp_path / "other_words.csv"
    data.to_csv(path, index=False)
    base = ["analyze", str(path), "--outcomes", "response", "--out", str(tmp_path / "t"),
            "--columns", "participant_id=subject,stimulus_id=clip,source=clip_source"]
    assert cli.main(base) == 2
    err = capsys.readouterr().err
    assert "values that are neither human nor ai: 'real' (120 rows), 'ai-made' (120 rows)" in err
    assert "recoded with --sources" in err
    assert cli.main([*base, "--sources", "human=real,ai=AI-Made"]) == 0
    assert "source values recoded by --sources: real as human (120 rows), ai-made as ai (120 rows)" in \
        capsys.readouterr().err
    prim = pd.read_csv(tmp_path / "t" / "primary.csv").iloc[0]
    assert (prim["nobs"], prim["n_participants"], prim["n_stimuli"]) == (240, 20, 12)
    assert prim["estimate"] == pytest.approx(5.116666667, rel=1e-6)
    for bad, says in (("human=rael,ai=ai-made", "no row of"), ("humans=real", "--sources takes human=THEIRS"),
                      ("human=real,ai=real", "recodes 'real' both as human and as ai")):
        assert cli.main([*base, "--sources", bad]) == 2
        assert says in capsys.readouterr().err
    assert cli.main(["analyze", str(tmp_path), "--out", str(tmp_path / "u"), "--sources", "human=real"]) == 2
    assert "--sources recodes the source values of a CSV file" in capsys.readouterr().err


def test_ids_with_spaces_around_them_are_one_participant_and_one_clip(tmp_path, capsys):
    """' s01 ' and 's01' (a hand-edited CSV) are one participant: the spaces are removed, with
    a note, and the numbers are those of the clean file (lme4's, as in the README example's test)."""
    data = pd.read_csv(JSPSYCH)
    data.loc[::3, "subject"] = " " + data.loc[::3, "subject"] + " "
    data.loc[1::4, "clip"] = data.loc[1::4, "clip"] + "  "
    path = tmp_path / "spaces.csv"
    data.to_csv(path, index=False)
    assert cli.main(["analyze", str(path), "--outcomes", "response", "--out", str(tmp_path / "t"),
                     "--columns", "participant_id=subject,stimulus_id=clip,source=clip_source"]) == 0
    err = capsys.readouterr().err
    assert f"{len(data.loc[::3])} values of participant_id in {path} had spaces around them" in err
    assert "values of stimulus_id in" in err
    prim = pd.read_csv(tmp_path / "t" / "primary.csv").iloc[0]
    assert (prim["nobs"], prim["n_participants"], prim["n_stimuli"]) == (240, 20, 12)
    assert prim["estimate"] == pytest.approx(5.116666667, rel=1e-6)


def _gorilla_long(jspsych: pd.DataFrame) -> pd.DataFrame:
    """The jsPsych example as Gorilla's long data would hold it: per clip screen a row for the
    video starting, one for the slider's end value and one for the Continue button (all with
    the spreadsheet's clip and source), and an instructions row without a clip."""
    rows = []
    for r in jspsych.itertuples():
        base = {"Participant Private ID": r.subject, "Trial Number": r.trial_index}
        if pd.isna(r.clip):
            rows.append({**base, "Screen Name": "instructions", "Zone Type": "continue_button", "Response": ""})
            continue
        clip = {"Spreadsheet: clip": r.clip, "Spreadsheet: source": r.clip_source, "Screen Name": "clip"}
        rows += [{**base, **clip, "Zone Type": "video", "Response": "VIDEO STARTED"},
                 {**base, **clip, "Zone Type": "response_slider_endValue", "Response": r.response},
                 {**base, **clip, "Zone Type": "continue_button", "Response": ""}]
    return pd.DataFrame(rows)


def test_rows_option_reads_gorilla_long_data(tmp_path, capsys):
    """Gorilla's long data have a row per video event beside the rating's: without --rows their
    'VIDEO STARTED' is refused as an outcome value; with --rows "Zone Type=response_slider_endValue"
    the numbers are the jsPsych file's (lme4's, as in the README example's test)."""
    path = tmp_path / "gorilla.csv"
    _gorilla_long(pd.read_csv(JSPSYCH)).to_csv(path, index=False)
    base = ["analyze", str(path), "--outcomes", "Response", "--out", str(tmp_path / "t"), "--columns",
            "participant_id=Participant Private ID,stimulus_id=Spreadsheet: clip,source=Spreadsheet: source"]
    assert cli.main(base) == 2
    assert "'VIDEO STARTED'" in capsys.readouterr().err
    assert cli.main([*base, "--rows", "Zone Type=response_slider_endValue"]) == 0
    assert (f"--rows kept 240 of 740 rows of {path} (Zone Type is response_slider_endValue)"
            in capsys.readouterr().err)
    prim = pd.read_csv(tmp_path / "t" / "primary.csv").iloc[0]
    assert (prim["nobs"], prim["n_participants"], prim["n_stimuli"]) == (240, 20, 12)
    assert prim["estimate"] == pytest.approx(5.116666667, rel=1e-6)
    assert prim["p"] == pytest.approx(0.2124171461, rel=1e-3)
    for bad, says in (("Zone Typ=response_slider_endValue", "has no column 'Zone Typ' (is 'Zone Type' a typo"),
                      ("Zone Type=response_slider", "no row of"), ("Zone Type", "--rows takes COLUMN=VALUE")):
        assert cli.main([*base, "--rows", bad]) == 2
        assert says in capsys.readouterr().err
    # two values of one column: either is kept (here the slider rows and the video rows)
    assert cli.main([*base, "--rows", "Zone Type=response_slider_endValue,Zone Type=video"]) == 2
    assert "'VIDEO STARTED'" in capsys.readouterr().err


def test_json_responses_of_jspsych_survey_plugins_are_outcome_columns(tmp_path, capsys):
    """jsPsych's survey plugins write the answers of one page as a JSON object in `response`:
    each key becomes a column response.<key>, so --outcomes can name it; the numbers are those
    of the plain file (lme4's, as in the README example's test)."""
    data = pd.read_csv(JSPSYCH)
    clip = data["clip"].notna()
    data["response"] = data["response"].astype(object)
    data.loc[clip, "response"] = [json.dumps({"valence": int(v), "comment": "ok"}) for v in data.loc[clip, "response"]]
    data.loc[~clip, "response"] = ""
    path = tmp_path / "survey.csv"
    data.to_csv(path, index=False)
    base = ["analyze", str(path), "--out", str(tmp_path / "t"),
            "--columns", "participant_id=subject,stimulus_id=clip,source=clip_source"]
    assert cli.main([*base, "--outcomes", "response.valence"]) == 0
    assert (f"the JSON objects in column response of {path} were read as the columns response.valence, "
            "response.comment") in capsys.readouterr().err
    prim = pd.read_csv(tmp_path / "t" / "primary.csv").iloc[0]
    assert (prim["nobs"], prim["n_participants"], prim["n_stimuli"]) == (240, 20, 12)
    assert prim["estimate"] == pytest.approx(5.116666667, rel=1e-6)
    assert cli.main([*base, "--outcomes", "response.comment"]) == 2
    assert "'ok' (participant s01" in capsys.readouterr().err
    # not JSON objects throughout: left as it is (here refused as an outcome, as before)
    data.loc[data.index[clip][0], "response"] = "{not json"
    data.to_csv(path, index=False)
    assert cli.main([*base, "--outcomes", "response.valence"]) == 2
    assert "outcome response.valence: no such column" in capsys.readouterr().err


def test_pivot_option_reads_several_sliders_per_screen(tmp_path, capsys):
    """Gorilla's long data with two sliders per clip screen (Zone Name valence and arousal): --rows
    keeps the end values, --pivot "Zone Name=Response" makes one rating row with both outcomes;
    valence is the jsPsych file's response, so its numbers are lme4's (README example's test)."""
    long = _gorilla_long(pd.read_csv(JSPSYCH))
    slider = long["Zone Type"] == "response_slider_endValue"
    long["Zone Name"] = np.where(slider, "valence", "")
    arousal = long[slider].assign(**{"Zone Name": "arousal"})
    arousal["Response"] = (arousal["Response"].astype(float) * 0.5 + 3).astype(object)
    both = pd.concat([long, arousal]).sort_index(kind="stable").reset_index(drop=True)
    path = tmp_path / "two_sliders.csv"
    both.to_csv(path, index=False)
    base = ["analyze", str(path), "--outcomes", "valence,arousal", "--out", str(tmp_path / "t"), "--bootstrap", "0",
            "--rows", "Zone Type=response_slider_endValue", "--columns",
            "participant_id=Participant Private ID,stimulus_id=Spreadsheet: clip,source=Spreadsheet: source"]
    assert cli.main([*base, "--pivot", "Zone Name=Response"]) == 0
    assert (f"--pivot made 240 ratings from 480 rows of {path}, one outcome column per Zone Name: arousal, "
            "valence (values from Response)") in capsys.readouterr().err
    prim = pd.read_csv(tmp_path / "t" / "primary.csv").set_index("outcome")
    assert (prim.loc["valence", "nobs"], prim.loc["valence", "n_participants"]) == (240, 20)
    assert prim.loc["valence", "estimate"] == pytest.approx(5.116666667, rel=1e-6)
    assert prim.loc["arousal", "estimate"] == pytest.approx(0.5 * 5.116666667, rel=1e-6)  # a linear rescaling
    # without --rows the video and button rows (no Zone Name) are left out, which the note says
    assert cli.main([*base[:8], "--columns", base[-1], "--pivot", "Zone Name=Response"]) == 0
    assert "one outcome column per Zone Name: arousal, valence (values from Response); 480 rows without a Zone " \
        "Name left out" in capsys.readouterr().err
    # a rating given twice, a column that is not there, a bad option
    twice = pd.concat([both, both[both["Zone Name"] == "valence"].head(1)])
    twice.to_csv(path, index=False)
    assert cli.main([*base, "--pivot", "Zone Name=Response"]) == 2
    assert "more than one row for one rating" in capsys.readouterr().err
    for bad, says in (("Zone Nam=Response", "has no column 'Zone Nam' (is 'Zone Name' a typo"),
                      ("Zone Name", "--pivot takes one NAME=VALUE pair")):
        assert cli.main([*base, "--pivot", bad]) == 2
        assert says in capsys.readouterr().err


def test_wide_option_reads_a_row_per_participant_as_qualtrics_writes_it(tmp_path, capsys):
    """The jsPsych example as a Qualtrics export: a row per participant, a column <clip>_valence
    per clip, the two header rows Qualtrics adds, sources in a clips file (the manifest's id and
    source columns): --wide "{clip}_{outcome}" --clips gives the long file's numbers (lme4's)."""
    data = pd.read_csv(JSPSYCH)
    rated = data[data["clip"].notna()].assign(clip=lambda d: d["clip"].str.extract(r"([ha]\d+)", expand=False))
    wide = rated.pivot(index="subject", columns="clip", values="response")
    wide.columns = [f"{c}_valence" for c in wide.columns]
    wide = wide.reset_index().rename(columns={"subject": "ResponseId"}).assign(Finished=1)
    head = pd.DataFrame([{c: f"How did clip {c} make you feel?" for c in wide.columns},
                         {c: json.dumps({"ImportId": f"QID{i}"}) for i, c in enumerate(wide.columns)}])
    path, clips = tmp_path / "qualtrics.csv", tmp_path / "manifest.csv"
    pd.concat([head, wide.astype(object)]).to_csv(path, index=False)
    rated[["clip", "clip_source"]].drop_duplicates().rename(columns={"clip": "id", "clip_source": "source"}) \
        .assign(file="x.mp4").to_csv(clips, index=False)
    base = ["analyze", str(path), "--outcomes", "valence", "--out", str(tmp_path / "t"), "--bootstrap", "0",
            "--columns", "participant_id=ResponseId"]
    assert cli.main([*base, "--wide", "{clip}_{outcome}", "--clips", str(clips)]) == 0
    err = capsys.readouterr().err
    assert f"the two rows under the header of {path} (question texts and ImportIds" in err
    assert f"--wide read 12 columns of {path} as 240 rows (participant x clip), outcomes valence" in err
    prim = pd.read_csv(tmp_path / "t" / "primary.csv").iloc[0]
    assert (prim["nobs"], prim["n_participants"], prim["n_stimuli"]) == (240, 20, 12)
    assert prim["estimate"] == pytest.approx(5.116666667, rel=1e-6)
    assert prim["p"] == pytest.approx(0.2124171461, rel=1e-3)
    # lists: a clip a participant was not shown has an empty cell, which is no rating (not a missing one)
    unseen = pd.concat([head, wide.astype(object)]).reset_index(drop=True)
    unseen.loc[2, [c for c in wide.columns if c.startswith("h")][:3]] = ""
    unseen.to_csv(path, index=False)
    assert cli.main([*base, "--wide", "{clip}_{outcome}", "--clips", str(clips)]) == 0
    assert ("as 237 rows (participant x clip), outcomes valence; 3 participant-clip cells with nothing in them "
            "(clips not shown) left out") in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "t" / "primary.csv")["nobs"].iloc[0] == 237
    # a clip of the clips file with no column is said; a question name that is a column of ours is refused
    more = tmp_path / "more_clips.csv"
    pd.concat([pd.read_csv(clips), pd.DataFrame([{"id": "h99", "source": "human", "file": "x.mp4"}])]).to_csv(
        more, index=False)
    assert cli.main([*base, "--wide", "{clip}_{outcome}", "--clips", str(more)]) == 0
    assert f"; 1 clip of {more} with no column: h99" in capsys.readouterr().err
    clash = tmp_path / "clash.csv"
    wide.assign(h01_source="human").to_csv(clash, index=False)
    assert cli.main(["analyze", str(clash), *base[2:], "--wide", "{clip}_{outcome}", "--clips", str(clips)]) == 2
    assert "the question name 'source' (from the column names) is also a column of ours" in capsys.readouterr().err
    for extra, says in ((["--wide", "{clip}_{outcome}"], "--wide and --clips go together"),
                        (["--wide", "{outcome}", "--clips", str(clips)], "the pattern needs {clip} once"),
                        (["--wide", "{clip}_{outcome}_{outcome}", "--clips", str(clips)], "{outcome} at most once"),
                        (["--wide", "clip_{clip}", "--clips", str(clips)], "no column of"),
                        (["--wide", "{clip}_{outcome}", "--clips", str(tmp_path / "none.csv")], "no such file")):
        assert cli.main([*base, *extra]) == 2
        assert says in capsys.readouterr().err
    pd.concat([unseen, unseen.tail(1)]).to_csv(path, index=False)  # a participant's row twice
    assert cli.main([*base, "--wide", "{clip}_{outcome}", "--clips", str(clips)]) == 2
    assert f"participant 's20' has more than one row in {path}" in capsys.readouterr().err
    assert cli.main(["analyze", str(path), "--outcomes", "valence", "--out", str(tmp_path / "u"), "--wide",
                     "{clip}_{outcome}", "--clips", str(clips)]) == 2
    assert "has no participant_id column; name it with --columns" in capsys.readouterr().err
