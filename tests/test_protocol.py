"""The study file schema: defaults, every kind of broken input, manifest cross-checks, CLI, docs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import cli
from study import protocol
from study.errors import Problem, UserError
from study.protocol import Study, load_study, settings_reference, validate_study_file

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
DOCS = ROOT / "docs" / "study_file.md"

MINIMAL = "title: A test study\nconsent:\n  text: You may take part.\n"


def clip(cid: str, source: str, pair_id: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(id=cid, source=source, pair_id=pair_id, file=f"{cid}.mp4", url=None)


PAIRED = [clip("practice", "human"),
          clip("h1", "human", "p1"), clip("a1", "ai", "p1"),
          clip("h2", "human", "p2"), clip("a2", "ai", "p2"),
          clip("h3", "human", "p3"), clip("a3", "ai", "p3")]
UNPAIRED = [clip("h1", "human"), clip("a1", "ai"), clip("h2", "human"), clip("a2", "ai"), clip("h3", "human")]


def write_study(tmp_path: Path, text: str | bytes, manifest: bool = True) -> Path:
    path = tmp_path / "study.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    if manifest:
        (tmp_path / "manifest.csv").write_text("id,file,source\n", encoding="utf-8")
    return path


def check(tmp_path: Path, text: str | bytes, stimuli=PAIRED, manifest: bool = True) -> list[Problem]:
    path = write_study(tmp_path, text, manifest)
    return validate_study_file(path, manifest_loader=lambda _p: (list(stimuli), []))


# (name, study file text, stub manifest, where the problem is, words the message must contain)
BROKEN = [
    ("bad YAML syntax", "title: [unclosed\nconsent: {text: x}\n", PAIRED, "line 2, column 8",
     "YAML syntax error: expected ',' or ']', but got ':' (while parsing a flow sequence)"),
    ("empty file", "", PAIRED, "study.yaml", "empty"),
    ("only comments", "# nothing here\n", PAIRED, "study.yaml", "only comments"),
    ("not a mapping", "- title\n- consent\n", PAIRED, "study.yaml", "must be a mapping"),
    ("repeated key", MINIMAL + "title: again\n", PAIRED, "line 4, column 1", "appears twice"),
    ("unknown top-level key", MINIMAL + "desing: {}\n", PAIRED, "study.yaml: desing", "did you mean 'design'"),
    ("unknown nested key", MINIMAL + "design: {orderng: random}\n", PAIRED, "design.orderng", "did you mean 'ordering'"),
    ("missing title", "consent: {text: x}\n", PAIRED, "study.yaml: title", "required"),
    ("missing consent", "title: T\n", PAIRED, "study.yaml: consent", "required"),
    ("unknown instrument", MINIMAL + "measures: {per_clip: [sam, emotions]}\n", PAIRED,
     "measures.per_clip[1]", "unknown instrument 'emotions' (did you mean 'discrete_emotions'?); known instruments: sam"),
    ("session instrument per clip", MINIMAL + "measures: {per_clip: [sam, mood]}\n", PAIRED,
     "measures.per_clip[1]", "once per session"),
    ("per-clip instrument at session start", MINIMAL + "measures: {session_start: [sam]}\n", PAIRED,
     "measures.session_start[0]", "after each clip"),
    ("unknown demographic item", MINIMAL + "demographics: [age, shoe_size]\n", PAIRED,
     "demographics[1]", "unknown demographic item 'shoe_size'"),
    ("text where a number belongs", MINIMAL + "design: {clips_per_participant: four}\n", PAIRED,
     "design.clips_per_participant", "must be a whole number (got 'four')"),
    ("text where true/false belongs", MINIMAL + "playback: {controls: maybe}\n", PAIRED,
     "playback.controls", "must be true or false"),
    ("mapping where a list belongs", MINIMAL + "measures: {per_clip: {sam: 1}}\n", PAIRED,
     "measures.per_clip", "must be a list"),
    ("section that is not a mapping", MINIMAL + "design: random\n", PAIRED, "study.yaml: design", "must be a mapping"),
    ("alpha above 1", MINIMAL + "analysis: {alpha: 1.5}\n", PAIRED, "analysis.alpha", "must be less than 1"),
    ("alpha zero", MINIMAL + "analysis: {alpha: 0}\n", PAIRED, "analysis.alpha", "must be greater than 0"),
    ("negative sesoi", MINIMAL + "analysis: {sesoi: -0.1}\n", PAIRED, "analysis.sesoi", "must be greater than 0"),
    ("bad hypothesis", MINIMAL + "analysis: {hypothesis: bigger}\n", PAIRED, "analysis.hypothesis",
     "must be one of 'human_greater', 'ai_greater' or 'two_sided' (got 'bigger')"),
    ("bad ordering", MINIMAL + "design: {ordering: randm}\n", PAIRED, "design.ordering",
     "must be one of 'random', 'blocked_by_source' or 'latin_square'"),
    ("bad pairs value", MINIMAL + "design: {pairs: all}\n", PAIRED, "design.pairs", "must be one of"),
    ("empty label_conditions", MINIMAL + "design: {label_conditions: []}\n", PAIRED,
     "design.label_conditions", "at least 1 entry"),
    ("unknown label condition", MINIMAL + "design: {label_conditions: [none, hidden]}\n", PAIRED,
     "design.label_conditions[1]", "must be one of 'none', 'true' or 'swapped'"),
    ("repeated label condition", MINIMAL + "design: {label_conditions: [none, none]}\n", PAIRED,
     "design.label_conditions", "only once"),
    ("share above 1", MINIMAL + "playback: {min_watched_share: 90}\n", PAIRED,
     "playback.min_watched_share", "must be at most 1"),
    ("clips_per_participant below 1", MINIMAL + "design: {clips_per_participant: 0}\n", PAIRED,
     "design.clips_per_participant", "must be at least 1"),
    ("negative timeout", MINIMAL + "timeout_minutes: -5\n", PAIRED, "timeout_minutes", "must be at least 1"),
    ("attention answer not an option",
     MINIMAL + "attention_checks:\n  - {id: a1, after_clip: 1, text: Pick B, options: [A, B], correct: C}\n",
     PAIRED, "attention_checks[0]", "correct answer 'C' is not one of the options"),
    ("attention check with one option",
     MINIMAL + "attention_checks:\n  - {id: a1, after_clip: 1, text: Pick A, options: [A], correct: A}\n",
     PAIRED, "attention_checks[0].options", "at least 2 entries"),
    ("duplicate attention ids",
     MINIMAL + "attention_checks:\n  - {id: a1, after_clip: 1, text: t, options: [A, B], correct: A}\n"
               "  - {id: a1, after_clip: 2, text: t, options: [A, B], correct: B}\n",
     PAIRED, "attention_checks[1].id", "used twice"),
    ("attention check after the last clip",
     MINIMAL + "design: {clips_per_participant: 2, pairs: ignore}\n"
               "attention_checks:\n  - {id: a1, after_clip: 5, text: t, options: [A, B], correct: A}\n",
     PAIRED, "attention_checks[0].after_clip", "sees only 2 clips"),
    ("duplicate custom item ids",
     MINIMAL + "measures:\n  custom_items:\n"
               "    - {id: share, text: I would share it., type: likert, min: 1, max: 7, description: d}\n"
               "    - {id: share, text: Again., type: likert, min: 1, max: 7, description: d}\n",
     PAIRED, "measures.custom_items[1].id", "used twice"),
    ("custom item clashes with a built-in id",
     MINIMAL + "measures:\n  custom_items:\n"
               "    - {id: valence, text: Nice, type: likert, min: 1, max: 7, description: d}\n",
     PAIRED, "measures.custom_items[0].id", "already taken"),
    ("custom choice item without options",
     MINIMAL + "measures:\n  custom_items:\n    - {id: fav, text: Which one, type: choice, description: d}\n",
     PAIRED, "measures.custom_items[0]", "needs at least 2 options"),
    ("custom item with a bad id",
     MINIMAL + "measures:\n  custom_items:\n    - {id: My Item, text: Q, type: text, description: d}\n",
     PAIRED, "measures.custom_items[0].id", "must start with a lowercase letter"),
    ("primary outcome not measured", MINIMAL + "analysis: {primary_outcome: valance}\n", PAIRED,
     "analysis.primary_outcome", "'valance' is not measured after each clip (did you mean 'valence'?)"),
    ("primary outcome from an instrument not asked", MINIMAL + "analysis: {primary_outcome: engagement}\n", PAIRED,
     "analysis.primary_outcome", "not measured after each clip"),
    ("primary outcome not numeric", MINIMAL + "analysis: {primary_outcome: judged_source}\n", PAIRED,
     "analysis.primary_outcome", "is a choice item, not a number"),
    ("secondary outcome not measured", MINIMAL + "analysis: {secondary_outcomes: [arousal, mood_valence]}\n", PAIRED,
     "analysis.secondary_outcomes[1]", "not measured after each clip"),
    ("redirect URL not https", MINIMAL + "completion: {redirect_url: 'http://app.prolific.com/x?cc=1'}\n", PAIRED,
     "completion.redirect_url", "must be a full https:// address"),
    ("base URL not a URL", MINIMAL + "stimuli: {base_url: cdn.example.org/clips}\n", PAIRED,
     "stimuli.base_url", "https://"),
    ("study id not a slug", MINIMAL + "id: My Study!\n", PAIRED, "study.yaml: id", "lowercase letters"),
    ("continuous rating range reversed", MINIMAL + "playback:\n  continuous_rating: {item: How do you feel, min: 9, max: 1}\n",
     PAIRED, "playback.continuous_rating", "min (9) must be smaller than max (1)"),
    # cross-checks against the manifest
    ("practice clip not in the manifest", MINIMAL + "stimuli: {practice: warmup}\n", PAIRED,
     "stimuli.practice", "'warmup' is not in the manifest"),
    ("more clips per participant than clips", MINIMAL + "design: {clips_per_participant: 9}\n", PAIRED,
     "design.clips_per_participant", "only 7 main clips"),
    ("one per participant exceeds the pairs", MINIMAL + "stimuli: {practice: practice}\n"
     "design: {clips_per_participant: 4, pairs: one_per_participant}\n", PAIRED,
     "design.clips_per_participant", "only 3 main clips are available (one clip per pair)"),
    ("pairs requested but none in the manifest", MINIMAL + "design: {pairs: both}\n", UNPAIRED,
     "design.pairs", "no clip in the manifest has a pair_id"),
    ("blocked design with an odd number of clips", MINIMAL + "design: {ordering: blocked_by_source, pairs: ignore, "
     "clips_per_participant: 3}\n", UNPAIRED, "design.clips_per_participant", "an odd number"),
    ("whole pairs cannot make an odd list", MINIMAL + "stimuli: {practice: practice}\n"
     "design: {clips_per_participant: 3, pairs: both}\n", PAIRED, "design.clips_per_participant", "whole pairs"),
]


@pytest.mark.parametrize("name,text,stimuli,where,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_study_gives_a_clear_problem(tmp_path, name, text, stimuli, where, words):
    problems = check(tmp_path, text, stimuli)
    errors = [p for p in problems if p.severity == "error"]
    hits = [p for p in errors if p.where.endswith(where) and words in p.message]
    assert hits, f"{name}: expected {where!r} / {words!r}, got:\n" + "\n".join(map(str, problems))
    for p in errors:  # plain sentences, not pydantic's wording or a traceback
        assert "Traceback" not in p.message and "Input should" not in p.message and "errors.pydantic" not in p.message


def test_at_least_fifteen_kinds_of_broken_input():
    assert len({b[3].split(".")[0] + b[4] for b in BROKEN}) >= 15


def test_every_problem_is_reported_at_once(tmp_path):
    text = MINIMAL + (
        "desing: {}\n"
        "design: {ordering: randm, label_conditions: []}\n"
        "analysis: {alpha: 2, primary_outcome: valance}\n"
        "measures: {per_clip: [sam, emotions]}\n"
        "completion: {redirect_url: 'http://x.org'}\n"
        "attention_checks:\n  - {id: a1, after_clip: 1, text: t, options: [A, B], correct: C}\n"
    )
    wheres = {p.where.split(": ", 1)[1] for p in check(tmp_path, text)}
    assert {"desing", "design.ordering", "design.label_conditions", "analysis.alpha",
            "measures.per_clip[1]", "completion.redirect_url", "attention_checks[0]"} <= wheres


def test_cross_checks_still_run_when_another_section_has_a_type_error(tmp_path):
    text = MINIMAL + "design: {seed: abc}\nanalysis: {primary_outcome: valance}\n"
    wheres = {p.where.split(": ", 1)[1] for p in check(tmp_path, text)}
    assert wheres == {"design.seed", "analysis.primary_outcome"}


def test_missing_study_file_and_missing_manifest(tmp_path):
    gone = validate_study_file(tmp_path / "nope.yaml")
    assert len(gone) == 1 and gone[0].message == "file not found"
    path = write_study(tmp_path, MINIMAL + "stimuli: {manifest: clips/list.csv}\n", manifest=False)
    problems = validate_study_file(path, manifest_loader=lambda _p: pytest.fail("loader must not run"))
    assert [p.where for p in problems] == ["study.yaml: stimuli.manifest"]
    assert "manifest file not found" in problems[0].message and "clips/list.csv" in problems[0].message


def test_file_that_is_not_utf8(tmp_path):
    problems = check(tmp_path, b"title: caf\xe9\nconsent: {text: x}\n")
    assert problems[0].message.startswith("is not UTF-8 text")


def test_manifest_problems_are_passed_through_and_stop_design_checks(tmp_path):
    path = write_study(tmp_path, MINIMAL + "design: {clips_per_participant: 99}\n")
    bad = Problem("manifest.csv line 3, column source", "must be human or ai")
    problems = validate_study_file(path, manifest_loader=lambda _p: (PAIRED, [bad]))
    assert problems == [bad]


def test_minimal_study_gets_every_default(tmp_path):
    path = write_study(tmp_path, MINIMAL)
    study = load_study(path, manifest_loader=lambda _p: (PAIRED, []))
    assert study.id == "a-test-study"
    assert study.demographics == ["age", "gender", "film_watching_frequency"]
    assert study.stimuli.manifest == "manifest.csv" and study.stimuli.practice is None
    assert study.measures.session_start == ["mood"] and study.measures.session_end == ["mood"]
    assert study.measures.per_clip == ["sam", "discrete_emotions", "moved", "attribution"]
    assert (study.design.ordering, study.design.pairs, study.design.label_conditions) == ("random", "both", ["none"])
    assert study.design.clips_per_participant is None
    assert (study.playback.controls, study.playback.allow_seek, study.playback.min_watched_share) == (False, False, 0.9)
    assert study.playback.allow_skip_on_error is True and study.playback.continuous_rating is None
    assert (study.exclusions.min_watched_share, study.exclusions.max_failed_attention_checks) == (0.8, 0)
    assert study.exclusions.exclude_pilot is True and study.exclusions.min_completion == 1.0
    assert (study.analysis.primary_outcome, study.analysis.alpha, study.analysis.sesoi) == ("valence", 0.05, 0.2)
    assert study.timeout_minutes == 120
    assert study.manifest_path == (tmp_path / "manifest.csv").resolve()
    assert study.spec_hash() == hashlib.sha256(path.read_bytes()).hexdigest() == protocol.study_hash(path)
    assert study.source_text == path.read_text()


def test_yaml_conveniences(tmp_path):
    text = MINIMAL + "version: 2\ndesign: {label_conditions: [none, true, swapped]}\ncompletion: {code: 4711}\n"
    study = load_study(write_study(tmp_path, text), manifest_loader=lambda _p: (PAIRED, []))
    assert study.version == "2" and study.completion.code == "4711"
    assert study.design.label_conditions == ["none", "true", "swapped"]


def test_load_study_raises_user_error_with_every_problem(tmp_path):
    path = write_study(tmp_path, MINIMAL + "design: {ordering: randm}\nanalysis: {alpha: 3}\n")
    with pytest.raises(UserError) as err:
        load_study(path, manifest_loader=lambda _p: (PAIRED, []))
    assert {p.where for p in err.value.problems} == {"study.yaml: design.ordering", "study.yaml: analysis.alpha"}
    assert "design.ordering" in str(err.value)


def test_default_pairs_setting_accepts_a_manifest_without_pairs(tmp_path):
    assert check(tmp_path, MINIMAL, UNPAIRED) == []


def test_warnings_do_not_block_loading(tmp_path):
    path = write_study(tmp_path, MINIMAL + "design: {pairs: ignore}\n")
    only_human = [clip("h1", "human"), clip("h2", "human")]
    problems = validate_study_file(path, manifest_loader=lambda _p: (only_human, []))
    assert [p.severity for p in problems] == ["warning"] and "both sources" in problems[0].message
    assert load_study(path, manifest_loader=lambda _p: (only_human, [])).title == "A test study"


def test_study_built_in_code_runs_the_cross_checks():
    with pytest.raises(ValueError, match="analysis.primary_outcome"):
        Study.model_validate({"title": "T", "consent": {"text": "x"}, "analysis": {"primary_outcome": "nope"}})
    ok = Study.model_validate({"title": "T", "consent": {"text": "x"},
                               "measures": {"per_clip": ["engagement"]}, "analysis": {"primary_outcome": "engagement"}})
    assert ok.analysis.primary_outcome == "engagement" and len(ok.spec_hash()) == 64


def test_custom_item_can_be_the_primary_outcome(tmp_path):
    text = MINIMAL + ("measures:\n  custom_items:\n"
                      "    - {id: would_share, text: I would share it., type: likert, min: 1, max: 7, description: d}\n"
                      "analysis: {primary_outcome: would_share}\n")
    assert check(tmp_path, text) == []


def test_demo_study_is_valid_with_the_real_manifest():
    problems = validate_study_file(DEMO)
    assert [p for p in problems if p.severity == "error"] == [], problems
    study = load_study(DEMO)
    assert study.design.pairs == "both" and study.design.label_conditions == ["none", "true", "swapped"]
    assert study.stimuli.practice == "practice" and study.playback.min_watched_share == 0.9
    assert len(study.attention_checks) == 1 and study.completion.code
    assert "demonstration" in study.consent.text


def test_cli_validate_ok_and_failure(tmp_path, capsys):
    assert cli.main(["validate", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("OK: Kuleshov demo") and "6 clips, 3 pairs, 1 practice" in out
    bad = write_study(tmp_path, MINIMAL + "design: {ordering: randm}\nanalysis: {alpha: 3}\n")
    assert cli.main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "design.ordering" in out and "analysis.alpha" in out and "2 problems found" in out


ASKS_AI = "measures: {per_clip: [sam, attribution]}\n"


@pytest.mark.parametrize("conditions, measures, warned", [
    ('[none, "true"]', ASKS_AI, True),
    ('["true"]', ASKS_AI, True),
    ("[none, swapped]", ASKS_AI, False),
    ('[none, "true"]', "measures: {per_clip: [sam]}\n", False),
])
def test_warns_when_the_true_label_condition_is_asked_who_made_the_clip(tmp_path, conditions, measures, warned):
    problems = check(tmp_path, MINIMAL + measures + f"design: {{label_conditions: {conditions}}}\n")
    found = [p for p in problems if "design.label_conditions" in p.where]
    assert [p.severity for p in found] == (["warning"] if warned else []), problems
    if warned:
        assert "were told the answer" in found[0].message
    assert [p for p in problems if p.severity == "error"] == []


def _unplayable_copy_of_demo(tmp_path):
    """The demo study and manifest beside clip files that no player can decode."""
    shutil.copy(DEMO, tmp_path / "study.yaml")
    shutil.copy(DEMO.parent / "manifest.csv", tmp_path / "manifest.csv")
    for clip_file in DEMO.parent.glob("*.mp4"):
        (tmp_path / clip_file.name).write_bytes(b"not a video " * 200)
    for captions in DEMO.parent.glob("*.vtt"):
        shutil.copy(captions, tmp_path / captions.name)
    return tmp_path / "study.yaml"


def test_validate_probes_media_by_default(tmp_path, capsys):
    study = _unplayable_copy_of_demo(tmp_path)
    assert cli.main(["validate", str(study)]) == 1
    out = capsys.readouterr().out
    assert "human_01.mp4: not a readable video file" in out and "7 problems found" in out
    assert cli.main(["validate", str(study), "--check-media"]) == 1  # the old flag still works
    capsys.readouterr()
    # Skipping the probe is possible, and said.
    assert cli.main(["validate", str(study), "--no-check-media"]) == 0
    out = capsys.readouterr().out
    assert "warning: study.yaml: stimuli.manifest: media not probed (--no-check-media)" in out
    assert "not a readable video file" not in out and "OK: Kuleshov demo" in out


def test_kuleshov_validate_command_exits_nonzero_without_traceback(tmp_path):
    bad = write_study(tmp_path, "title: [unclosed\n")
    exe = Path(sys.executable).with_name("kuleshov")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cli"]
    for target in (bad, tmp_path / "missing.yaml"):
        run = subprocess.run([*cmd, "validate", str(target)], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
        assert run.returncode != 0
        assert "Traceback" not in run.stdout + run.stderr
        assert "problem found" in run.stdout


def test_every_setting_has_help_and_a_documented_default():
    rows = settings_reference()
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths))
    assert {"design.ordering", "design.label_conditions", "playback.continuous_rating.item",
            "attention_checks[].correct", "measures.custom_items[].scope", "analysis.sesoi",
            "completion.redirect_url", "timeout_minutes"} <= set(paths)
    for r in rows:
        assert r["help"].strip(), f"{r['path']} has no help text"
    by_path = {r["path"]: r for r in rows}
    assert by_path["design.ordering"]["default"] == "random"
    assert by_path["analysis.alpha"]["default"] == "0.05"
    assert by_path["title"]["default"] == "required"


def test_docs_list_every_setting_and_are_up_to_date():
    doc = DOCS.read_text(encoding="utf-8")
    missing = [r["path"] for r in settings_reference() if f"`{r['path']}`" not in doc]
    assert not missing, f"docs/study_file.md lacks: {missing}"
    region = doc.split(protocol.DOC_START, 1)[1].split(protocol.DOC_END, 1)[0]
    assert region.strip() == protocol.settings_markdown().strip(), (
        "docs/study_file.md is out of date: run python -m study.protocol docs/study_file.md")
