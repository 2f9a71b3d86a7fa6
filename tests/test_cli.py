"""cli.py: dispatch, and errors that never reach the researcher as tracebacks."""

from __future__ import annotations

import pytest

import cli
from study.config import check_writable
from study.errors import UserError

UNWRITABLE = "/proc/kuleshov-test/out.csv"  # /proc refuses new files even for root


def test_check_writable_names_the_path(tmp_path):
    assert check_writable(tmp_path / "new" / "x.csv") == tmp_path / "new" / "x.csv"
    assert not (tmp_path / "new").exists()  # nothing left behind if the command fails later
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="a file is in the way"):
        check_writable(tmp_path / "file" / "x.csv")
    with pytest.raises(UserError, match="cannot write the report to /proc/kuleshov-test/out.csv"):
        check_writable(UNWRITABLE, "report")


@pytest.mark.parametrize("argv", [
    ["power", "--participants", "4", "--clips-per-source", "2", "--simulations", "1", "--out", UNWRITABLE],
    ["codebook", "--out", UNWRITABLE],
    ["report", "no-such-study", "--out", UNWRITABLE],  # checked before any data are loaded
    ["analyze", "no-such-study", "--out", "/proc/kuleshov-test/results"],
])
def test_unwritable_out_is_a_clear_error(argv, capsys):
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "cannot write" in err and "/proc/kuleshov-test" in err


def test_other_os_errors_are_reported_not_raised(monkeypatch, capsys):
    def boom(args):
        raise OSError("Cannot save file into a non-existent directory: '/x'")

    monkeypatch.setitem(cli.COMMANDS, "power", ("tests.test_cli", "_unused", ""))
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: type("M", (), {"_unused": staticmethod(boom)}))
    assert cli.main(["power"]) == 2
    assert "error: Cannot save file" in capsys.readouterr().err


def test_unwritable_export_names_the_folder_asked_for(tmp_path, capsys, monkeypatch):
    from analysis.export import _prepare

    with pytest.raises(UserError) as exc:
        _prepare(__import__("pathlib").Path("/proc/kuleshov-test/ds"))
    assert "cannot write the dataset to /proc/kuleshov-test/ds" in str(exc.value)
    assert ".ds-" not in str(exc.value)


def test_out_in_folders_that_do_not_exist_yet(tmp_path, capsys):
    cb = tmp_path / "a" / "b" / "codebook.csv"
    curve = tmp_path / "c" / "power.csv"
    assert cli.main(["codebook", "--out", str(cb)]) == 0 and cb.stat().st_size > 1000
    assert cli.main(["power", "--participants", "4", "--clips-per-source", "2", "--simulations", "1",
                     "--out", str(curve)]) == 0
    assert curve.is_file()


def test_output_piped_into_head_ends_quietly():
    import subprocess
    import sys

    # A command printing far more than a pipe holds, read by `head -1`, as with a long codebook.
    script = ("import sys, cli, types; m = types.ModuleType('big'); "
              "m.run = lambda args: [print('row', i) for i in range(200000)] and 0; sys.modules['big'] = m; "
              "cli.COMMANDS['codebook'] = ('big', 'run', ''); sys.exit(cli.main(['codebook']))")
    proc = subprocess.run(f"{sys.executable} -c \"{script}\" | head -1", shell=True, capture_output=True,
                          text=True, cwd=cli.__file__.rsplit("/", 1)[0], timeout=60)
    assert proc.stdout == "row 0\n"
    assert "Traceback" not in proc.stderr and "pipe" not in proc.stderr.lower(), proc.stderr
