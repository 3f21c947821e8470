"""feeds/settings.py: CALSYNC_* variables, validation with messages naming the variable, the
generated secret key, and that nothing reads the environment at import time."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from argon2 import extract_parameters, profiles
from sqlalchemy.engine import make_url

from calsync.feeds.accounts.admins import password_hasher
from calsync.feeds.errors import ConfigurationError
from calsync.feeds.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def _clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any CALSYNC_ variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALSYNC_")}
    env.update(extra)
    return env


# --- reading the environment ------------------------------------------------------------------


def test_defaults_without_any_variable() -> None:
    settings = load_settings(environ={})
    assert settings.data_dir == Path("./calsync-data")
    assert settings.database_url is None
    assert settings.base_url == "http://127.0.0.1:8000"
    assert settings.secret_key is None  # never a built-in default
    assert settings.feed_cache_bytes > 0
    assert settings.token_touch_seconds >= 0


def test_unrelated_variables_are_ignored() -> None:
    settings = load_settings(environ={"HOME": "/nowhere", "CALSYNCX": "1", "PATH": "/bin"})
    assert settings == load_settings(environ={})


def test_every_documented_variable_is_read(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "CALSYNC_DATA_DIR": str(tmp_path / "d"),
            "CALSYNC_DATABASE_URL": "postgresql+psycopg://cal@db.internal/calsync",
            "CALSYNC_BASE_URL": "https://cal.example.test/",
            "CALSYNC_SECRET_KEY": "k" * 40,
            "CALSYNC_FEED_CACHE_BYTES": "1024",
            "CALSYNC_TOKEN_TOUCH_SECONDS": "60",
        }
    )
    assert settings.data_dir == tmp_path / "d"
    assert settings.database_url == "postgresql+psycopg://cal@db.internal/calsync"
    assert settings.resolved_database_url == "postgresql+psycopg://cal@db.internal/calsync"
    assert settings.base_url == "https://cal.example.test"  # trailing slash dropped for joining
    assert settings.secret_key == "k" * 40
    assert settings.feed_cache_bytes == 1024
    assert settings.token_touch_seconds == 60


def test_each_field_documents_its_variable() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert field.description.startswith(f"CALSYNC_{name.upper()}:"), field.description


def test_reads_os_environ_when_no_mapping_given(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("CALSYNC_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CALSYNC_BASE_URL", "https://from-env.example.test")
    assert load_settings().base_url == "https://from-env.example.test"


def test_overrides_win_over_the_environment() -> None:
    settings = load_settings(
        environ={"CALSYNC_BASE_URL": "https://a.example.test"}, base_url="http://127.0.0.1:9999"
    )
    assert settings.base_url == "http://127.0.0.1:9999"


def test_the_test_suites_knobs_are_outside_the_settings_prefix() -> None:
    load_settings(environ={"TEST_CALSYNC_DATABASE_URL": "postgresql://x/y"})  # not a setting
    with pytest.raises(ConfigurationError, match="CALSYNC_TEST_DATABASE_URL"):
        load_settings(environ={"CALSYNC_TEST_DATABASE_URL": "postgresql://x/y"})


def test_production_settings_hash_passwords_at_production_cost() -> None:
    """The cheap profile is only ever chosen: the default, and so every install that does not
    set CALSYNC_PASSWORD_HASH_PROFILE, hashes with argon2-cffi's RFC 9106 parameters."""
    settings = load_settings(environ={})
    assert settings.password_hash_profile == "production"
    stored = password_hasher(settings.password_hash_profile).hash("correct horse battery")
    params = extract_parameters(stored)
    assert (params.memory_cost, params.time_cost) == (
        profiles.RFC_9106_LOW_MEMORY.memory_cost, profiles.RFC_9106_LOW_MEMORY.time_cost)
    cheap = load_settings(environ={"CALSYNC_PASSWORD_HASH_PROFILE": "fast-for-tests"})
    assert extract_parameters(password_hasher(cheap.password_hash_profile).hash("x")).memory_cost \
        < params.memory_cost


def test_a_login_under_production_settings_rehashes_a_cheap_hash() -> None:
    cheap = password_hasher("fast-for-tests").hash("correct horse battery")
    assert password_hasher("production").check_needs_rehash(cheap)


# --- unknown and invalid values ---------------------------------------------------------------


def test_unknown_variable_fails_naming_it() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(environ={"CALSYNC_FOO": "1"})
    message = str(info.value)
    assert "CALSYNC_FOO" in message
    assert "CALSYNC_BASE_URL" in message  # says what is known, so a typo can be fixed
    assert "TEST_CALSYNC_" not in message  # test plumbing is no setting a user should see


def test_misspelt_variable_fails_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="CALSYNC_DATABASE_URI"):
        load_settings(environ={"CALSYNC_DATABASE_URI": "sqlite://"})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CALSYNC_BASE_URL", "ftp://x"),
        ("CALSYNC_BASE_URL", "cal.example.test"),
        ("CALSYNC_BASE_URL", ""),
        ("CALSYNC_FEED_CACHE_BYTES", "-1"),
        ("CALSYNC_FEED_CACHE_BYTES", "abc"),
        ("CALSYNC_FEED_CACHE_BYTES", "1.5"),
        ("CALSYNC_TOKEN_TOUCH_SECONDS", "-5"),
        ("CALSYNC_DATABASE_URL", "not a url"),
        ("CALSYNC_DATABASE_URL", "nosuchdialect://host/db"),
        ("CALSYNC_FETCH_ALLOWED_PORTS", "https"),
        ("CALSYNC_FETCH_ALLOWED_PORTS", "8443;8080"),
        ("CALSYNC_FETCH_ALLOWED_PORTS", "70000"),
        ("CALSYNC_FETCH_ALLOWED_PORTS", "0"),
    ],
)
def test_invalid_value_fails_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(environ={variable: value})
    message = str(info.value)
    assert variable in message
    assert message.endswith(".")
    assert "Value error," not in message  # pydantic's jargon is not part of the sentence


def test_all_invalid_values_are_reported_at_once() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(environ={"CALSYNC_BASE_URL": "ftp://x", "CALSYNC_FEED_CACHE_BYTES": "abc"})
    assert "CALSYNC_BASE_URL" in str(info.value)
    assert "CALSYNC_FEED_CACHE_BYTES" in str(info.value)


def test_settings_are_frozen_and_reject_unknown_fields() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Settings(data_dir=Path("x"), colour="blue")  # type: ignore[call-arg]
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.base_url = "https://other.example.test"  # type: ignore[misc]


# --- database URL -----------------------------------------------------------------------------


def test_database_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(environ={"CALSYNC_DATA_DIR": str(tmp_path / "data")})
    url = make_url(settings.resolved_database_url)
    assert url.get_backend_name() == "sqlite"
    assert url.database is not None
    assert Path(url.database).parent == (tmp_path / "data").resolve()
    assert Path(url.database).is_absolute()  # a later chdir must not move the database


def test_relative_data_dir_is_resolved_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = make_url(load_settings(environ={}).resolved_database_url)
    assert Path(url.database or "").parent == tmp_path.resolve() / "calsync-data"


def test_empty_database_url_means_the_default(tmp_path: Path) -> None:
    settings = load_settings(environ={"CALSYNC_DATA_DIR": str(tmp_path), "CALSYNC_DATABASE_URL": ""})
    assert make_url(settings.resolved_database_url).get_backend_name() == "sqlite"


# --- secret key -------------------------------------------------------------------------------


def test_secret_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = load_settings(environ={"CALSYNC_DATA_DIR": str(data_dir)})
    assert settings.secret_key is None
    first = settings.with_secret_key()
    assert first.secret_key and len(first.secret_key) >= 32
    key_file = data_dir / "secret_key"
    assert key_file.read_text().strip() == first.secret_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The next start (a new settings object) reuses the key instead of generating another.
    again = load_settings(environ={"CALSYNC_DATA_DIR": str(data_dir)}).with_secret_key()
    assert again.secret_key == first.secret_key
    assert [p.name for p in data_dir.iterdir()] == ["secret_key"]  # no temporary files left


def test_generated_keys_differ_between_installs(tmp_path: Path) -> None:
    one = Settings(data_dir=tmp_path / "one").with_secret_key().secret_key
    two = Settings(data_dir=tmp_path / "two").with_secret_key().secret_key
    assert one != two


def test_explicit_secret_key_writes_no_file(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"CALSYNC_DATA_DIR": str(tmp_path / "data"), "CALSYNC_SECRET_KEY": "s" * 40}
    ).with_secret_key()
    assert settings.secret_key == "s" * 40
    assert not (tmp_path / "data" / "secret_key").exists()


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    """gunicorn workers import wsgi.py at the same moment: all must end up with the same,
    complete key — never one that another worker has not finished writing."""
    data_dir = tmp_path / "data"
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: Settings(data_dir=data_dir).with_secret_key().secret_key, range(32)))
    assert len(keys) == 1
    (key,) = keys
    assert key and len(key) >= 32


def test_empty_key_file_is_refused_not_used(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secret_key").write_text("")
    with pytest.raises(ConfigurationError, match="secret key file"):
        Settings(data_dir=data_dir).with_secret_key()


def test_data_dir_that_is_a_file_fails_naming_the_variable(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ConfigurationError, match="CALSYNC_DATA_DIR"):
        Settings(data_dir=not_a_dir).with_secret_key()


def test_create_app_uses_the_generated_key(tmp_path: Path) -> None:
    from calsync.web import create_app

    settings = Settings(data_dir=tmp_path / "data")
    app = create_app(settings)
    try:
        assert app.config["SECRET_KEY"] == (tmp_path / "data" / "secret_key").read_text().strip()
    finally:
        app.extensions["calsync"].engine.dispose()


# --- nothing at import time -------------------------------------------------------------------


def _run_python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_importing_the_packages_with_a_bogus_variable_does_not_fail(tmp_path: Path) -> None:
    proc = _run_python(
        """
        import calsync.models, calsync.feeds, calsync.web
        import calsync.feeds.settings, calsync.web.app, calsync.web.cli
        from calsync.web import create_app
        from calsync.feeds.errors import ConfigurationError
        try:
            create_app()
        except ConfigurationError as exc:
            print("create_app:", exc)
        else:
            raise SystemExit("create_app accepted CALSYNC_BOGUS")
        """,
        cwd=tmp_path,
        CALSYNC_BOGUS="1",
        CALSYNC_DATABASE_URL="not a url",
    )
    assert proc.returncode == 0, proc.stderr
    assert "create_app:" in proc.stdout
    assert "CALSYNC_BOGUS" in proc.stdout
    assert not (tmp_path / "calsync-data").exists()  # nothing was created by the imports


def test_wsgi_builds_the_app_from_the_environment(tmp_path: Path) -> None:
    proc = _run_python(
        "import wsgi; print(type(wsgi.app).__name__, wsgi.app.config['SECRET_KEY'] is not None)",
        cwd=ROOT,
        CALSYNC_DATA_DIR=str(tmp_path / "data"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["Flask", "True"]
    assert (tmp_path / "data" / "secret_key").exists()


def test_wsgi_fails_on_a_bogus_variable_naming_it(tmp_path: Path) -> None:
    proc = _run_python("import wsgi", cwd=ROOT, CALSYNC_DATA_DIR=str(tmp_path), CALSYNC_BOGUS="1")
    assert proc.returncode != 0
    assert "CALSYNC_BOGUS" in proc.stderr


def test_extra_fetch_ports_are_a_comma_separated_list() -> None:
    assert load_settings(environ={}).fetch_allowed_ports == ()
    ports = load_settings(environ={"CALSYNC_FETCH_ALLOWED_PORTS": "8443, 5232"}).fetch_allowed_ports
    assert ports == (8443, 5232)
