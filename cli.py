"""The `kuleshov` command: thin argument parsing over functions in `study/` and `analysis/`.

Each command is dispatched lazily to `module:function(args) -> int`, so that a command
imports only what it needs (`kuleshov validate` never loads pandas' statistics stack).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# command name -> (module, function, help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "validate": ("study.protocol", "cli_validate", "check a study file (and its manifest); list every problem"),
    "stimuli": ("study.stimuli", "cli_stimuli", "probe and check the clips of a manifest"),
    "codebook": ("study.protocol", "cli_codebook", "print the codebook generated from the instruments"),
    "db": ("study.store", "cli_db", "database administration (upgrade, current, backup)"),
    "study": ("study.store", "cli_study", "register a study file in the database; list, open, pause or close studies"),
    "simulate": ("study.simulate", "cli_simulate", "run simulated participants through the real flow"),
    "delete-participant": ("study.store", "cli_delete_participant", "delete one participant's data on request"),
    "analyze": ("analysis.results", "cli_analyze", "write the result tables as CSV"),
    "report": ("analysis.report", "cli_report", "write a self-contained HTML report"),
    "power": ("analysis.power", "cli_power", "simulation-based power for a planned crossed design"),
    "export": ("analysis.export", "cli_export", "write the dataset folder (data, codebook, datapackage.json)"),
    "researcher": ("study.store", "cli_researcher",
                   "researcher accounts: add, list, lock, unlock, delete; grant or revoke access to a study"),
    "run": ("cli", "cli_run", "start the web app (participants and researchers)"),
}


def _csv_options(p: argparse.ArgumentParser) -> None:
    """--columns, --sources, --rows, --pivot, --wide and --clips: a CSV from other software in Kuleshov's shape."""
    p.add_argument("--columns", help="for a CSV from other software: OURS=THEIRS pairs naming its columns, "
                   "e.g. participant_id=subject,stimulus_id=clip,source=clip_source")
    p.add_argument("--sources", help="for a CSV from other software: human=THEIRS and ai=THEIRS pairs recoding "
                   "its source values (any case), e.g. human=real,ai=generated")
    p.add_argument("--rows", help="for a CSV from other software: COLUMN=VALUE pairs (their names) keeping only "
                   "the rows that hold them, e.g. \"Zone Type=response_slider_endValue\" for Gorilla's long data")
    p.add_argument("--wide", help="for a CSV with one row per participant (Qualtrics, oTree): the pattern of its "
                   "rating columns, {clip} for the clip id and {outcome} for the question, e.g. \"{clip}_{outcome}\"; "
                   "with --clips")
    p.add_argument("--clips", help="with --wide: a CSV with each clip's stimulus_id (or id) and source, e.g. the "
                   "study's manifest.csv")
    p.add_argument("--pivot", help="for a CSV with a row per question: NAME=VALUE (their columns); each value of NAME "
                   "becomes an outcome column holding VALUE, one row per participant and clip, e.g. \"Zone Name=Response\"")


def _add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name == "validate":
        p.add_argument("study_file", help="path to the study file (YAML)")
        p.add_argument("--no-check-media", action="store_true",
                       help="skip probing the clip files (codecs, duration), which validate does by default")
        p.add_argument("--check-media", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    elif name == "stimuli":
        p.add_argument("action", choices=["check"], help="what to do")
        p.add_argument("path", help="a manifest CSV, the folder holding manifest.csv, or a study file")
        p.add_argument("--no-hash", action="store_true", help="skip sha256 (faster on large files)")
    elif name == "codebook":
        p.add_argument("study_file", nargs="?", help="study file (default: every built-in instrument)")
        p.add_argument("--out", help="write CSV here instead of printing")
    elif name == "db":
        p.add_argument("action", choices=["upgrade", "current", "backup"], help="what to do")
        p.add_argument("out", nargs="?", help="backup: the file to write (SQLite copy or pg_dump archive)")
        p.add_argument("--url", help="database URL (default: KULESHOV_DATABASE_URL or the SQLite file)")
    elif name == "study":
        p.add_argument("action", choices=["register", "list", "open", "pause", "close"])
        p.add_argument("target", nargs="?", help="study file (register) or study id (open/pause/close)")
        p.add_argument("--url", help="database URL")
    elif name == "simulate":
        p.add_argument("study", help="study file or study id")
        p.add_argument("--participants", "-n", type=int, default=30)
        p.add_argument("--effect", type=float, default=0.0,
                       help="planted human-minus-AI difference in scale points (default 0)")
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--trace-agreement", type=float, default=0.6,
                       help="continuous ratings: share of each trace's variance all raters share, 0-1 (default 0.6)")
        p.add_argument("--plant-linger", type=float, default=0.0, metavar="D",
                       help="follow-ups: planted lingering effect D, human-made against AI-generated clips: the "
                            "recall log odds ratio and the session x source interaction of felt arousal (scale "
                            "points); recognised, vivid and coming back to mind more too; default 0. Needs a "
                            "study with follow_ups (e.g. stimuli/demo/study_followup.yaml)")
        p.add_argument("--no-followups", action="store_true",
                       help="do not run the study's follow-ups (by default each bot that completed session 1 "
                            "takes them, at simulated times on the follow-up clock)")
        p.add_argument("--url", help="database URL")
    elif name == "delete-participant":
        p.add_argument("study", help="study id or study file")
        p.add_argument("participant", help="token, pseudonym or Prolific ID")
        p.add_argument("--url", help="database URL")
    elif name in ("analyze", "report"):
        p.add_argument("study", help="study id or study file (database), a dataset folder, or a CSV")
        p.add_argument("--out", required=True, help="output folder (analyze) or HTML file (report)")
        p.add_argument("--url", help="database URL")
        p.add_argument("--include-pilot", action="store_true", help="keep pilot participants")
        p.add_argument("--version", help="only participants of this study version (database sources)")
        p.add_argument("--outcomes", help="comma-separated outcome columns, the first one primary (default: the "
                       "study's analysis plan, else the built-in outcomes present), e.g. liking,valence")
        _csv_options(p)
        p.add_argument("--bootstrap", type=int, default=None,
                       help="parametric-bootstrap samples for the CI of d of the primary outcome (0: none; "
                       "default 200 up to 20,000 ratings, else 0)")
        p.add_argument("--seed", type=int, default=1, help="seed of the bootstrap")
        if name == "report":
            p.add_argument("--interim", action="store_true", help="mark the report as interim (data still coming in)")
    elif name == "power":
        p.add_argument("--study", help="the pilot's study file: the design (clips, pairs, lists, clips per "
                       "participant, label conditions) and the analysis plan's alpha and primary outcome")
        p.add_argument("--pilot", help="pilot dataset (folder or CSV) to take variance components from")
        _csv_options(p)
        p.add_argument("--participants", default="20,40,60,80,120,160",
                       help="comma-separated numbers of participants for the power curve")
        p.add_argument("--clips-per-source", type=int, default=None,
                       help="without --study: unpaired clips of each source (default 16)")
        p.add_argument("--clips-per-participant", type=int, default=None,
                       help="without --study: clips each participant rates (default: all)")
        p.add_argument("--effect", type=float, default=0.3, help="source effect, human minus AI (Westfall d)")
        p.add_argument("--label-effect", type=float, default=0.3,
                       help="label effect: labelled human-made minus labelled AI-generated (Westfall d); "
                       "used when the design has two or more label conditions")
        p.add_argument("--pair-share", type=float, default=None,
                       help="share of the clip variance shared by the two clips of a pair (0-1; default: "
                       "from the pilot, else 0)")
        p.add_argument("--outcome", default=None, help="pilot outcome (default: the plan's primary outcome, "
                       "else valence)")
        p.add_argument("--var-participant", type=float, default=0.5)
        p.add_argument("--var-slope", type=float, default=0.1)
        p.add_argument("--var-clip", type=float, default=0.2)
        p.add_argument("--var-residual", type=float, default=1.0)
        p.add_argument("--simulations", type=int, default=100,
                       help="simulated datasets per point (simulation standard error at most 0.5/sqrt(n))")
        p.add_argument("--alpha", type=float, default=None, help="default: the study's analysis plan, else 0.05")
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                       help="worker processes (default: 2, or 1 on a one-core machine); the table does not "
                       "depend on it")
        p.add_argument("--out", help="write the curve as CSV (and HTML chart beside it)")
    elif name == "export":
        p.add_argument("study", help="study id or study file")
        p.add_argument("--out", required=True, help="dataset folder to write")
        p.add_argument("--url", help="database URL")
        p.add_argument("--include-pilot", action="store_true")
    elif name == "researcher":
        p.add_argument("action", choices=["add", "list", "lock", "unlock", "delete", "grant", "revoke"])
        p.add_argument("user", nargs="?", help="username (lower-case letters, digits, . _ -)")
        p.add_argument("study", nargs="?", help="grant/revoke: the study id")
        p.add_argument("--role", help="add: owner (everything), editor (register and run studies) or viewer "
                       "(dashboard and export)")
        p.add_argument("--password-stdin", action="store_true",
                       help="add: read the password from the first line of standard input instead of a prompt "
                       "(never give it as an argument: other users see command lines)")
        p.add_argument("--url", help="database URL")
    elif name == "run":
        p.add_argument("--port", type=int, default=8501)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--study", help="study file to register and open before starting")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kuleshov", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_text) in COMMANDS.items():
        _add_arguments(name, sub.add_parser(name, help=help_text, description=help_text))
    return parser


def cli_run(args: argparse.Namespace) -> int:
    from server import serve  # the Starlette/uvicorn app around Streamlit (UI layer)

    return serve(host=args.host, port=args.port, study_file=args.study)


def main(argv: list[str] | None = None) -> int:
    from study.errors import UserError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module_name, func_name, _ = COMMANDS[args.command]
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `kuleshov codebook | head`: the reader left; no traceback, and no second one at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # Disk full, read-only folder, a path pandas refuses...: a sentence, not a traceback.
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
