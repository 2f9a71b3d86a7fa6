"""The README's "Deploying for a real study", followed as written.

The commands are read out of the README itself (its "One machine, SQLite" block, the
"One machine, PostgreSQL" paragraph and "Backups and restore") and run in order, in a fresh
folder holding a copy of the demo study as `my_study/`, with only the port, the database URL
and `<study id>` put in. If the README's commands change, this test runs the new ones; if they
stop working, it fails. (The nginx part is tests/test_nginx.py, with deploy/nginx.conf as
shipped.)
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from browser_util import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECTION_START, SECTION_END = "## Deploying for a real study", "\n## Tests"


def section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION_START)
    return text[start:text.index(SECTION_END, start)]


def paragraph(marker: str) -> str:
    text = section()
    start = text.index(marker)
    end = text.find("\n\n**", start + len(marker))
    return text[start:end if end > 0 else len(text)]


def block_commands(marker: str) -> list[str]:
    """The indented command lines right after the paragraph that starts with `marker`."""
    text = section()
    lines = text[text.index(marker):].splitlines()
    out, seen_block = [], False
    for line in lines[1:]:
        if line.startswith("    "):
            out.append(line.strip())
            seen_block = True
        elif seen_block and line.strip():
            break
    return out


def inline_commands(marker: str) -> list[str]:
    """Every `kuleshov ...` / `export ...` / `pg_restore ...` in code spans of that paragraph."""
    spans = re.findall(r"`([^`]+)`", paragraph(marker), flags=re.S)
    spans = [" ".join(s.split()) for s in spans]
    return [s for s in spans if re.match(r"(kuleshov|export|pg_restore) ", s)]


def env_for(tmp: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KULESHOV_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", HOME=str(tmp), KULESHOV_DATA_DIR=str(tmp / "data"),
               KULESHOV_TIMEOUT_CHECK_S="0")
    env.update(extra)
    return env


def sh(command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    out = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"`{command}` exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


def serve(command: str, cwd: Path, env: dict) -> None:
    """Start `kuleshov run ...` as written (its port replaced), check it serves, stop it."""
    port = free_port()
    command = re.sub(r"--port \d+", f"--port {port}", command)
    if "--host" not in command:
        command += " --host 127.0.0.1"
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    assert r.status == 200 and r.read().decode().strip().strip('"') == "ok"
                    break
            except OSError:
                assert proc.poll() is None, f"`{command}` ended: {proc.stdout.read()}"
                assert time.monotonic() < deadline, f"`{command}` never answered /api/health"
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?study=kuleshov-demo", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/clips/kuleshov-demo/practice", timeout=10) as r:
            assert r.status == 200 and r.read(4)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def site(tmp_path) -> Path:
    shutil.copytree(ROOT / "stimuli" / "demo", tmp_path / "my_study")
    return tmp_path


def test_the_readme_names_the_commands_this_test_runs():
    assert block_commands("**One machine, SQLite**") == [
        "kuleshov validate my_study/study.yaml", "kuleshov run --host 127.0.0.1 --port 8501 --study my_study/study.yaml"]
    pg = inline_commands("**One machine, PostgreSQL**")
    assert pg[0].startswith("export KULESHOV_DATABASE_URL=") and pg[-1].startswith("kuleshov run"), pg
    assert any(c.startswith("kuleshov db backup") for c in inline_commands("**Backups and restore**"))


def test_one_machine_with_sqlite_then_a_backup(site):
    env = env_for(site)
    validate, run = block_commands("**One machine, SQLite**")
    sh(validate, site, env)
    serve(run, site, env)
    backup = next(c for c in inline_commands("**Backups and restore**") if c.startswith("kuleshov db backup"))
    sh(backup, site, env)
    copies = list((site / "backups").glob("*.db"))
    assert len(copies) == 1, copies
    with sqlite3.connect(copies[0]) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT id FROM studies").fetchall() == [("kuleshov-demo",)]


@pytest.mark.postgres
def test_one_machine_with_postgresql_then_a_backup_and_restore(site, pg_url):
    import sqlalchemy as sa

    commands = inline_commands("**One machine, PostgreSQL**")
    export, rest = commands[0], commands[1:]
    assert export.startswith("export KULESHOV_DATABASE_URL=")
    env = env_for(site, KULESHOV_DATABASE_URL=pg_url)
    for command in rest:
        command = command.replace("<study id>", "kuleshov-demo")
        if command.startswith("kuleshov run"):
            serve(command, site, env)
        else:
            sh(command, site, env)
    backup = next(c for c in inline_commands("**Backups and restore**") if c.startswith("kuleshov db backup"))
    sh(backup, site, env)
    (dump,) = list((site / "backups").glob("*"))
    restore = next(c for c in inline_commands("**Backups and restore**") if c.startswith("pg_restore"))
    admin = sa.create_engine(pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    newdb = f"kuleshov_restore_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{newdb}"'))
    try:
        target = pg_url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/" + newdb
        sh(restore.replace("postgresql://user@host/newdb", target).replace("FILE", str(dump)), site, env)
        restored = sa.create_engine(target.replace("postgresql://", "postgresql+psycopg://"))
        with restored.connect() as conn:
            assert conn.execute(sa.text("SELECT id, status FROM studies")).all() == [("kuleshov-demo", "open")]
        restored.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{newdb}" WITH (FORCE)'))
        admin.dispose()
