"""The HTML report and the result tables: every section and chart present, self-contained.

Renders the report for the reference CSV (valence only, via the CLI) and for a synthetic full
trial table made here with numpy (every outcome, attribution, pairs, three label conditions),
then parses the HTML and checks it.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

import cli
from analysis import formatting, report
from analysis import methods as M
from analysis import results as R
from study.errors import UserError
from conftest import REFERENCE


EMOTIONS = ("amusement", "sadness", "fear", "anger", "disgust", "tenderness", "awe", "surprise", "unease")
SECTION_IDS = [sid for sid, _ in report.SECTIONS]
PLOTLY_SIGNATURE = "* plotly.js v"  # first line of the bundle's licence header


def full_trials(seed: int = 7, n_participants: int = 36, n_pairs: int = 8) -> pd.DataFrame:
    """Every participant rates every clip; pairs of a human and an AI clip; 3 label conditions."""
    rng = np.random.default_rng(seed)
    clips = pd.DataFrame({
        "stimulus_id": [f"c{i:02d}" for i in range(2 * n_pairs)],
        "source": ["human", "ai"] * n_pairs,
        "pair_id": [f"pair{i // 2:02d}" for i in range(2 * n_pairs)],
        "clip_effect": rng.normal(0, 0.5, 2 * n_pairs),
    })
    rows = []
    for p in range(n_participants):
        order = rng.permutation(len(clips))
        p_int, p_slope = rng.normal(0, 0.7), rng.normal(0, 0.2)
        for pos, ci in enumerate(order, start=1):
            c = clips.iloc[ci]
            x = 0.5 if c["source"] == "human" else -0.5
            rows.append({"participant_id": f"p{p:03d}", "stimulus_id": c["stimulus_id"], "source": c["source"],
                         "pair_id": c["pair_id"], "label_condition": ("none", "true", "swapped")[p % 3],
                         "position": pos, "watched_share": 1.0, "is_pilot": False,
                         "latent": p_int + (0.4 + p_slope) * x + c["clip_effect"]})
    t = pd.DataFrame(rows)
    n = len(t)

    def scale(lo, hi, centre, spread=1.2):
        return np.clip(np.rint(centre + rng.normal(0, spread, n)), lo, hi)

    t["valence"] = scale(1, 9, 5 + t["latent"])
    t["arousal"] = scale(1, 9, 5 + 0.5 * t["latent"])
    t["dominance"] = scale(1, 9, 5.0)
    for i, e in enumerate(EMOTIONS):
        t[f"emo_{e}"] = scale(0, 8, 2 + 0.3 * i + 0.5 * t["latent"])
    for k in range(1, 4):
        t[f"moved_{k}"] = scale(1, 7, 4 + t["latent"], 0.8)
    t["moved_4"] = scale(1, 7, 4 - t["latent"], 0.8)  # reverse-keyed in the built-in instrument
    t["moved"] = (t["moved_1"] + t["moved_2"] + t["moved_3"] + (8 - t["moved_4"])) / 4
    # People tell AI from human a little better than chance.
    correct = rng.random(n) < 0.62
    flip = {"human": "ai", "ai": "human"}
    t["judged_source"] = np.where(correct, t["source"], t["source"].map(flip))
    t["confidence"] = rng.integers(50, 101, n)
    return t.drop(columns="latent")


class _Page(HTMLParser):
    """Collects section ids, chart divs, script srcs, link hrefs and the inline scripts."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, str] = {}
        self.charts: list[str] = []
        self.external: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "id" in a:
            self.sections[a["id"]] = a.get("data-status", "")
        if tag == "div" and "plotly-graph-div" in (a.get("class") or ""):
            self.charts.append(a["id"])
        for key in ("src", "href"):
            if tag in ("script", "link", "img", "iframe") and key in a and re.match(r"(https?:)?//", a[key] or ""):
                self.external.append(f"{tag} {key}={a[key]}")
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def chart_data(page: str, div_id: str) -> list:
    """The data array passed to Plotly.newPlot for one div."""
    m = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', page)
    assert m, f"no Plotly.newPlot call for {div_id}"
    data, _ = json.JSONDecoder().raw_decode(page, m.end())
    return data


def _points(trace: dict) -> int:
    for key in ("x", "y"):
        v = trace.get(key)
        if isinstance(v, list):
            return sum(1 for e in v if e is not None)
        if isinstance(v, dict):  # plotly 6+ may ship numeric arrays as base64 {"dtype", "bdata"}
            return int(v.get("shape", "0").split(",")[0]) if "shape" in v else len(v.get("bdata", "")) > 0
    return 0


def check_self_contained(page: str) -> _Page:
    doc = parse(page)
    assert page.count(PLOTLY_SIGNATURE) == 1, "plotly.js must be inlined exactly once"
    assert doc.external == [], f"external resources: {doc.external}"
    assert not re.search(r"<link\b", page[: page.index("<body")]), "no stylesheets may be linked"
    assert "@import" not in page and "url(http" not in page
    # the bundle sits in <head>, before every chart script that needs it
    head = page[: page.index("</head>")]
    assert PLOTLY_SIGNATURE in head
    return doc


def check_charts(page: str, doc: _Page, expected: list[str]) -> None:
    for div_id in expected:
        assert div_id in doc.charts, f"chart {div_id} missing; charts: {doc.charts}"
    for div_id in doc.charts:
        data = chart_data(page, div_id)
        assert data, f"chart {div_id} has no traces"
        assert sum(_points(t) for t in data) > 0, f"chart {div_id} has traces without points"


@pytest.fixture(scope="module")
def subset_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("subset") / "r.html"
    rc = cli.main(["report", str(REFERENCE / "crossed_subset.csv"), "--out", str(out)])
    assert rc == 0
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def full():
    trials = full_trials()
    results = R.analyze(trials, excluded=pd.DataFrame([
                                 {"level": "participant", "participant_id": "p900", "stimulus_id": None,
                                  "reason": "failed 2 attention checks (at most 1 allowed)"},
                                 {"level": "participant", "participant_id": "p901", "stimulus_id": None,
                                  "reason": "failed 3 attention checks (at most 1 allowed)"},
                                 {"level": "trial", "participant_id": "p001", "stimulus_id": "c03",
                                  "reason": "watched 41% of the clip (at least 80% required)"},
                             ]))
    page = report.build_report(trials, results=results, title="Synthetic full study", interim=True)
    return trials, results, page


def test_subset_report_has_every_section_and_skips_with_a_note(subset_report):
    page = subset_report
    doc = check_self_contained(page)
    assert list(doc.sections) == SECTION_IDS
    shown = {s for s, status in doc.sections.items() if status == "shown"}
    # crossed_subset.csv: valence only, pairs, three label conditions, no attribution/emotions
    assert shown == {"summary", "methods", "exclusions", "descriptives", "primary", "forest", "distributions",
                     "pairs", "label", "order", "software"}
    for sid in ("attribution", "valence-arousal", "emotions", "reliability"):
        m = re.search(rf'<section id="{sid}"[^>]*>.*?</section>', page, re.S)
        assert "Not shown:" in m.group(0), sid
    check_charts(page, doc, ["chart-forest-d", "chart-forest-raw", "chart-distributions-valence",
                             "chart-pairs-valence", "chart-label-valence", "chart-order-valence"])
    assert "interim-banner" not in page


def test_subset_methods_name_n_and_model(subset_report):
    methods = re.search(r'<section id="methods".*?</section>', subset_report, re.S).group(0)
    # crossed_subset.csv: 150 participants x 16 of 40 clips (tests/reference/README.md)
    assert "150 participants and 40 clips (20 human-made, 20 AI-generated), 2400 ratings" in methods
    assert "<code>valence ~ x + (1 + x | participant_id) + (1 | stimulus_id)</code>" in methods
    assert "REML" in methods and "Satterthwaite" in methods and "+0.5" in methods
    assert "Westfall" in methods and "TOST" in methods and "&alpha; = 0.05" in methods
    # no is_pilot column in that CSV: the methods must not claim anything about pilots
    assert "ilot" not in methods


def test_full_report_sections_and_charts(full):
    trials, results, page = full
    doc = check_self_contained(page)
    assert list(doc.sections) == SECTION_IDS
    assert all(status == "shown" for status in doc.sections.values()), doc.sections
    main = ["valence", "arousal", "dominance", "moved"]
    expected = ["chart-forest-d", "chart-forest-raw", "chart-dprime", "chart-accuracy", "chart-confidence",
                "chart-valence-arousal", "chart-emotions"]
    for o in main:
        expected += [f"chart-distributions-{o}", f"chart-pairs-{o}", f"chart-label-{o}", f"chart-order-{o}"]
    check_charts(page, doc, expected)
    assert "interim-banner" in page
    # one clip point per clip in the valence-arousal plane, one participant point per participant
    va = chart_data(page, "chart-valence-arousal")
    assert sum(len(t["text"]) for t in va) == trials["stimulus_id"].nunique()
    dp = chart_data(page, "chart-dprime")
    participants = [t for t in dp if t.get("name") == "each participant"][0]
    assert len(participants["text"]) == trials["participant_id"].nunique()


def test_full_methods_text(full):
    trials, results, page = full
    methods = re.search(r'<section id="methods".*?</section>', page, re.S).group(0)
    assert "36 participants and 16 clips (8 human-made, 8 AI-generated), 576 ratings" in methods
    assert ("Excluded before analysis: 2 participants (failed more than 1 attention checks: 2) and "
            "1 trial (watched less than 80% of the clip: 1).") in methods
    outcomes = list(results["primary"]["outcome"])
    assert outcomes[:4] == ["valence", "arousal", "dominance", "moved"] and len(outcomes) == 13
    for r in results["primary"].itertuples():
        assert f"<b>{r.outcome}</b>: <code>{r.formula}</code>" in methods
        if r.model_used != "correlated_slope":
            assert f"model used: {r.model_used}" in methods
    assert "The primary outcome (valence) was tested at &alpha;" in methods
    assert "Holm's step-down method across all 13 outcomes" in methods
    summary = re.search(r'<section id="summary".*?</section>', page, re.S).group(0)
    assert re.search(r'<section id="summary"[^>]*><h2>Summary</h2>\s*<p class="decision" id="decision">'
                     r"<b>valence</b> \(primary outcome\): ", summary)
    assert "signal detection" in methods


def test_tables_are_formatted(full):
    _, results, page = full
    table = re.search(r'<table[^>]*id="primary-table".*?</table>', page, re.S).group(0)
    header = re.findall(r"<th[^>]*>(.*?)</th>", table)
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", table)[1:]]
    assert len(rows) == len(results["primary"]) and all(len(r) == len(header) for r in rows)
    cells = [c for r in rows for c in r]
    assert not any(re.fullmatch(r"-?\d+\.\d{4,}", c) for c in cells), "raw floats in the table"
    for col in ("p", "p_holm", "p_bh", "tost_p"):
        i = header.index(col)
        assert all(re.fullmatch(r"&lt; \.001|\.\d{3}|1\.000", r[i]) for r in rows), [r[i] for r in rows]
    i = header.index("estimate")
    assert rows[0][i] == f"{results['primary']['estimate'].iloc[0]:.3f}"
    assert {r[header.index("decision")] for r in rows} <= {"difference", "difference within SESOI", "equivalent",
                                                            "inconclusive", "not estimated"}
    # the model's details sit in their own table, so the first one fits the page
    details = re.search(r'<table[^>]*id="primary-details".*?</table>', page, re.S).group(0)
    header = re.findall(r"<th[^>]*>(.*?)</th>", details)
    first = re.findall(r"<td[^>]*>(.*?)</td>", re.findall(r"<tr>(.*?)</tr>", details)[1])
    assert first[header.index("df")] == f"{results['primary']['df'].iloc[0]:.1f}"
    assert len(re.findall(r"<th\b(?!ead)", table)) == len(report.PRIMARY_MAIN) == 12


def test_analyze_tables_and_csv(full, tmp_path):
    trials, results, _ = full
    for key in ("primary", "descriptives", "naive", "pairs", "label", "sdt", "dprime", "accuracy_by_clip",
                "confidence_accuracy", "judged_ai", "clip_means", "position_means", "reliability",
                "exclusions", "skipped", "outcomes"):
        assert key in results, key
    assert results["skipped"].empty, results["skipped"]
    # moved_4 is reverse-keyed in the built-in codebook: alpha is high only if it was reversed
    rel = results["reliability"].set_index("scale")
    assert list(rel.index) == ["moved"] and rel.loc["moved", "n_items"] == 4
    assert rel.loc["moved", "alpha"] > 0.6
    assert len(results["sdt"]) == trials["participant_id"].nunique()
    assert len(results["exclusions"]) == 3
    assert results["exclusion_counts"].to_dict("records") == [
        {"level": "participant", "reason": "failed more than 1 attention checks", "count": 2},
        {"level": "trial", "reason": "watched less than 80% of the clip", "count": 1}]
    paths = R.write_tables(results, tmp_path / "tables")
    assert {p.stem for p in paths} == {k for k, v in results.items() if isinstance(v, pd.DataFrame)}
    back = pd.read_csv(tmp_path / "tables" / "primary.csv")
    assert np.allclose(back["estimate"], results["primary"]["estimate"])


def test_cli_analyze_subset(tmp_path, reference_dir):
    rc = cli.main(["analyze", str(reference_dir / "crossed_subset.csv"), "--out", str(tmp_path / "out")])
    assert rc == 0
    prim = pd.read_csv(tmp_path / "out" / "primary.csv")
    assert list(prim["outcome"]) == ["valence"]
    # lme4 1.1-31 / lmerTest 3.1-3 on crossed_subset.csv, correlated-slope model
    # (tests/reference/reference_lme4.json): the CSV path must reach the same numbers.
    ref = json.loads((reference_dir / "reference_lme4.json").read_text())
    ds = next(d for d in ref["datasets"] if d["dataset"] == "crossed_subset.csv")
    model = next(m for m in ds["models"] if m["model"] == prim["model_used"].iloc[0])
    x = next(f for f in model["fixed"] if f["term"] == "x")
    assert prim["estimate"].iloc[0] == pytest.approx(x["estimate"], rel=1e-5)
    assert prim["se"].iloc[0] == pytest.approx(x["se"], rel=2e-4)
    assert prim["df"].iloc[0] == pytest.approx(x["df"], abs=0.05)
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert {"attribution", "emotions", "valence-arousal"} <= set(skipped["section"])


def test_bad_inputs_give_user_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("participant_id,clip,valence\np1,c1,3\n")
    assert cli.main(["report", str(bad), "--out", str(tmp_path / "r.html")]) == 2
    wrong_source = tmp_path / "src.csv"
    wrong_source.write_text("participant_id,stimulus_id,source,valence\np1,c1,robot,3\n")
    assert cli.main(["analyze", str(wrong_source), "--out", str(tmp_path / "t")]) == 2
    with pytest.raises(UserError, match="source must be 'human' or 'ai'"):
        R.analyze(pd.read_csv(wrong_source))
    with pytest.raises(UserError, match="not in the trial table"):
        R.analyze(full_trials(n_participants=3, n_pairs=2), outcomes=["liking"])
    with pytest.raises(UserError, match="analysis plan"):
        R.analyze(full_trials(n_participants=3, n_pairs=2), plan={"primary_outcome": "liking"})
    assert not (tmp_path / "r.html").exists()


def test_exclusion_counts_split_joined_reasons():
    ex = pd.DataFrame({
        "level": ["participant", "participant", "trial", "trial"],
        "participant_id": ["a", "b", "c", "d"], "stimulus_id": [None, None, "x", "y"],
        "reason": ["failed 1 attention check (at most 0 allowed); completed 3 of 6 planned clips "
                   "(50%; at least 100% required)", "pilot participant (the study excludes pilot runs)",
                   "watched 58% of the clip (at least 80% required)", "watched 79% of the clip (at least 80% required)"],
    })
    counts = R.exclusion_counts(ex)
    assert counts.to_dict("records") == [
        {"level": "participant", "reason": "completed less than 100% of the planned clips", "count": 1},
        {"level": "participant", "reason": "failed an attention check (none allowed)", "count": 1},
        {"level": "participant", "reason": "pilot participant", "count": 1},
        {"level": "trial", "reason": "watched less than 80% of the clip", "count": 2}]
    assert M.exclusion_sentence(ex).startswith("Excluded before analysis: 2 participants (")


def test_format_p():
    assert formatting.format_p(0.0004) == "< .001"
    assert formatting.format_p(0.0123) == ".012"
    assert formatting.format_p(1.0) == "1.000"
    assert formatting.format_p(float("nan")) == ""


def test_p_in_running_text_never_reads_p_equals_less_than():
    assert formatting.p_equals(0.0004) == "p < .001"
    assert formatting.p_equals(0.046) == "p = .046"
    assert formatting.p_equals(0.0004, "adjusted p") == "adjusted p < .001"


def test_summary_says_p_less_than_and_short_sessions_in_seconds():
    trials = pd.DataFrame({"participant_id": ["P1", "P1"], "stimulus_id": ["h", "a"],
                           "source": ["human", "ai"]})
    prim = pd.DataFrame({"outcome": ["valence"], "estimate": [1.0], "ci_low": [0.5], "ci_high": [1.5],
                         "d": [0.8], "p": [0.00001], "p_holm": [0.00001], "p_bh": [0.00001],
                         "equivalent": [False]})
    roles = pd.DataFrame({"outcome": ["valence"], "role": ["primary"]})
    dp = pd.DataFrame({"mean_dprime": [0.8], "ci_low": [0.5], "ci_high": [1.1], "p": [0.00001]})
    participants = pd.DataFrame({"status": ["completed", "completed"], "duration_s": [20.0, 40.0]})
    html_text = report._summary_html(trials, {"primary": prim, "outcomes": roles, "dprime": dp},
                                     R.Plan.from_any(None, None), participants)
    assert "p = &lt;" not in html_text and "p = <" not in html_text and "p <" not in html_text
    assert html_text.count("p &lt; .001") == 2
    assert "median time to complete 30 s" in html_text


def test_demo_study_report_after_simulated_participants(sqlite_url, tmp_path):
    """End to end: bots through the real flow into SQLite, then `kuleshov report` on the study file."""
    from study import simulate, store

    demo = Path(__file__).resolve().parent.parent / "stimuli" / "demo" / "study.yaml"
    engine = store.make_engine(sqlite_url)
    try:
        store.upgrade(engine)
        simulate.simulate(engine, str(demo), 24, effect=0.5, seed=2)
    finally:
        engine.dispose()
    out = tmp_path / "demo.html"
    assert cli.main(["report", str(demo), "--out", str(out), "--url", sqlite_url]) == 0
    page = out.read_text(encoding="utf-8")
    doc = check_self_contained(page)
    assert list(doc.sections) == SECTION_IDS
    # the demo study measures everything the report can show
    assert all(status == "shown" for status in doc.sections.values()), doc.sections
    check_charts(page, doc, ["chart-forest-d", "chart-distributions-valence", "chart-pairs-valence",
                             "chart-dprime", "chart-accuracy", "chart-valence-arousal", "chart-emotions",
                             "chart-order-valence"])
    methods = re.search(r'<section id="methods".*?</section>', page, re.S).group(0)
    n = re.search(r"The analysis used (\d+) participants and 6 clips \(3 human-made, 3 AI-generated\)", methods)
    assert n and 15 <= int(n.group(1)) <= 24
    assert "Pilot participants were left out." in methods
    assert "<code>valence ~ x + " in methods
    summary = re.search(r'<section id="summary".*?</section>', page, re.S).group(0)
    assert re.search(r"24 people started the study \(completed \d+", summary)
    assert cli.main(["analyze", str(demo), "--out", str(tmp_path / "tables"), "--url", sqlite_url]) == 0
    assert (tmp_path / "tables" / "primary.csv").is_file()


def test_everyone_excluded_says_which_rules_left_nothing():
    trials = pd.DataFrame(columns=["participant_id", "stimulus_id", "source", "valence"])
    excluded = pd.DataFrame({"level": ["participant", "participant", "trial"],
                             "participant_id": ["P1", "P2", "P3"], "stimulus_id": [None, None, "h1"],
                             "reason": ["failed 1 attention check (at most 0 allowed)",
                                        "pilot participant (the study excludes pilot runs)",
                                        "watched 50% of the clip (at least 80% required)"]})
    for call in (lambda: R.analyze(trials, excluded=excluded),
                 lambda: report.build_report(trials, excluded=excluded)):
        with pytest.raises(UserError) as exc:
            call()
        text = str(exc.value)
        assert text.startswith("nothing left to analyse: the exclusion rules removed every rating "
                               "(2 participants and 1 trial excluded")
        assert "failed an attention check (none allowed): 1" in text and "--include-pilot" in text


def test_no_ratings_yet_is_not_called_an_exclusion():
    trials = pd.DataFrame(columns=["participant_id", "stimulus_id", "source"])
    participants = pd.DataFrame({"status": ["in_progress", "declined"], "duration_s": [None, None]})
    with pytest.raises(UserError, match=r"nothing to analyse yet: no participant has rated a main clip "
                                        r"\(2 people started the study \(in progress 1, declined 1\)\)"):
        report.build_report(trials, participants=participants)


def test_a_single_swapped_label_condition_is_stated_not_just_skipped():
    # Everyone told the opposite source: the "human - AI" difference is not a plain source effect.
    trials = pd.read_csv(REFERENCE / "crossed_small.csv").assign(label_condition="swapped")
    results = R.analyze(trials, outcomes=["valence"])
    skipped = dict(zip(results["skipped"]["section"], results["skipped"]["reason"]))
    assert skipped["label"] == "one label condition only (swapped)"
    methods = M.methods_html(trials, results, R.Plan.from_any(None, None))
    summary = report._summary_html(trials, results, R.Plan.from_any(None, None))
    for text in (methods, summary):
        assert "labelled with the opposite of its true source" in text
    plain = trials.assign(label_condition="none")
    assert M.single_label_note(plain) == ""
    assert "true source label" in M.single_label_note(trials.assign(label_condition="true"))


def test_cli_outcomes_option_analyses_a_custom_column(tmp_path, capsys):
    # A CSV with only a study-specific outcome: no built-in outcome, so --outcomes is the way in.
    data = pd.read_csv(REFERENCE / "crossed_small.csv").rename(columns={"valence": "liking"})
    data["note"] = "a, b"
    data.loc[::9, "liking"] = np.nan
    path = tmp_path / "liking.csv"
    data.to_csv(path, index=False)
    assert cli.main(["analyze", str(path), "--out", str(tmp_path / "a")]) == 2
    assert "choose them with --outcomes" in capsys.readouterr().err
    assert cli.main(["analyze", str(path), "--out", str(tmp_path / "b"), "--outcomes", "liking"]) == 0
    prim = pd.read_csv(tmp_path / "b" / "primary.csv")
    assert prim["outcome"].tolist() == ["liking"] and prim["nobs"].iloc[0] == data["liking"].notna().sum()
    assert cli.main(["analyze", str(path), "--out", str(tmp_path / "c"), "--outcomes", "liking,lking"]) == 2
    assert "outcome lking: no such column (is 'liking' a typo for it?)" in capsys.readouterr().err


def test_methods_say_when_source_varies_within_clips(tmp_path):
    """A CSV where 20 of 30 clips were rated under both sources (tests/reference/lme4_cases):
    the summary counts them, and the methods say why the model has a by-clip source slope."""
    data = pd.read_csv(REFERENCE / "lme4_cases" / "within_clip.csv")
    path = tmp_path / "within.csv"
    data.to_csv(path, index=False)
    out = tmp_path / "r.html"
    assert cli.main(["report", str(path), "--outcomes", "valence", "--out", str(out)]) == 0
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", out.read_text()))
    assert "30 clips (5 human-made, 5 AI-generated, 20 under both sources)" in text
    assert ("Source varied within clips: 20 of 30 clips were rated as human-made by some participants and as "
            "AI-generated by others, so the model adds a by-clip source slope, (1 + source | clip)") in text
    assert "valence ~ x + (1 + x | participant_id) + (1 + x | stimulus_id)" in text


def test_methods_give_the_design_as_the_reason_for_no_participant_slope():
    """Each participant rated one source only: the model has no participant slope because the
    design allows none, which the methods say, not that a fit was singular."""
    trials = pd.read_csv(REFERENCE / "crossed_small.csv")
    first = trials.groupby("participant_id")["source"].transform("first")
    between = trials[trials["source"] == first].reset_index(drop=True)
    assert between.groupby("participant_id")["source"].nunique().max() == 1
    assert set(between["source"]) == {"human", "ai"}
    results = R.analyze(between, outcomes=["valence"])
    assert results["primary"]["model_used"].iloc[0] == "intercepts"
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", M.methods_html(between, results, R.Plan.from_any(None, None))))
    assert ("valence ~ x + (1 | participant_id) + (1 | stimulus_id) (no participant rated both sources, so the "
            "model has no source slope by participant; model used: intercepts)") in text
    assert "simplified from the planned model" not in text
    assert "a slope the model left out counts as zero" in text


def test_report_methods_name_repeated_pairs_and_how_the_csv_was_read(tmp_path):
    """A CSV from Excel on Windows (cp1252) with three rows pasted twice: the report's methods
    count the repeats, name the first, and say how the file was read."""
    data = pd.read_csv(REFERENCE / "crossed_small.csv")
    data["note"] = "café"
    copied = pd.concat([data, data.iloc[[4, 9, 10]]], ignore_index=True)
    path = tmp_path / "excel.csv"
    path.write_bytes(copied.to_csv(index=False).encode("cp1252"))
    out = tmp_path / "r.html"
    assert cli.main(["report", str(path), "--outcomes", "valence", "--bootstrap", "0", "--out", str(out)]) == 0
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", out.read_text())))
    first = data.iloc[4]
    assert (f"3 ratings repeat a participant–clip pair already rated (the first: participant "
            f"{first['participant_id']}, clip {first['stimulus_id']}); each enters the models as a rating of its "
            "own.") in text
    assert f"Reading the data: {path} is not UTF-8 and was read as cp1252." in text
    assert M.repeated_pairs_sentence(data) == ""
