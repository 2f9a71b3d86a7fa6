"""study.config (environment settings) and study.access (the password and pilot keys)."""

from __future__ import annotations

import pytest

import cli
import server
from study import access, config
from study.errors import UserError


def test_unknown_mode_is_refused_not_read_as_demo(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KULESHOV_MODE", "prod")
    monkeypatch.setenv("KULESHOV_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.delenv("KULESHOV_RESEARCHER_PASSWORD", raising=False)
    with pytest.raises(UserError, match=r"KULESHOV_MODE='prod' is not a known value; use one of: demo, production"):
        config.production()
    assert cli.main(["run", "--port", "1"]) == 2
    out, err = capsys.readouterr()
    assert "KULESHOV_MODE='prod'" in err and "Traceback" not in err
    assert "password" not in out  # no generated password printed, nothing started
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("value, production", [("production", True), (" Production ", True), ("demo", False),
                                               ("", False)])
def test_known_modes(monkeypatch, value, production):
    monkeypatch.setenv("KULESHOV_MODE", value)
    assert config.production() is production


def test_numbers_and_levels_are_checked(monkeypatch):
    monkeypatch.delenv("KULESHOV_TIMEOUT_CHECK_S", raising=False)
    assert config.setting("KULESHOV_TIMEOUT_CHECK_S") == 60.0
    monkeypatch.setenv("KULESHOV_TIMEOUT_CHECK_S", "2.5")
    assert config.setting("KULESHOV_TIMEOUT_CHECK_S") == 2.5
    for bad, words in (("soon", "must be a number"), ("-1", "must be 0 or more")):
        monkeypatch.setenv("KULESHOV_TIMEOUT_CHECK_S", bad)
        with pytest.raises(UserError, match=f"KULESHOV_TIMEOUT_CHECK_S='{bad}' {words}"):
            config.setting("KULESHOV_TIMEOUT_CHECK_S")
    monkeypatch.setenv("KULESHOV_LOG_LEVEL", "loud")
    with pytest.raises(UserError, match="use one of: critical, error, warning, info, debug, trace"):
        config.setting("KULESHOV_LOG_LEVEL")


def test_data_dir_and_database_url(monkeypatch, tmp_path):
    monkeypatch.delenv("KULESHOV_DATABASE_URL", raising=False)
    monkeypatch.setenv("KULESHOV_DATA_DIR", str(tmp_path / "state"))
    assert config.database_url() == f"sqlite:///{tmp_path / 'state' / 'kuleshov.db'}"
    assert (tmp_path / "state").is_dir()
    monkeypatch.setenv("KULESHOV_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert config.database_url() == "postgresql+psycopg://u@h/db"


def test_password_from_environment_then_secrets_file(monkeypatch, tmp_path):
    home, project = tmp_path / "home", tmp_path / "project"
    (home / ".streamlit").mkdir(parents=True)
    (project / ".streamlit").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(project)
    monkeypatch.delenv("KULESHOV_RESEARCHER_PASSWORD", raising=False)
    assert access.researcher_password() is None
    (home / ".streamlit" / "secrets.toml").write_text('researcher_password = "from-home"\n')
    assert access.researcher_password() == "from-home"
    (project / ".streamlit" / "secrets.toml").write_text('researcher_password = "from-project"\n')
    assert access.researcher_password() == "from-project"  # the working directory's file wins, as in Streamlit
    monkeypatch.setenv("KULESHOV_RESEARCHER_PASSWORD", "from-env")
    assert access.researcher_password() == "from-env"
    assert access.is_pilot_key("s1", access.pilot_key("s1", "from-env"))
    assert not access.is_pilot_key("s1", access.pilot_key("s1", "from-project"))
    (project / ".streamlit" / "secrets.toml").write_text("not toml [")
    monkeypatch.delenv("KULESHOV_RESEARCHER_PASSWORD")
    assert access.researcher_password() == "from-home"  # a broken file is skipped, not a traceback


def test_server_and_login_page_use_the_same_lookup():
    from app_pages import auth

    assert server.researcher_password is access.researcher_password
    assert auth.researcher_password is access.researcher_password
