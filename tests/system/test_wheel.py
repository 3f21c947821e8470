"""The wheel that `pip install .` installs: one top-level import package, `calsync`, with real
copies of the linked folders, its templates and migrations, and the `calsync` command.

The wheel is built from a copy of the sources (the build writes build/ and *.egg-info next to
pyproject.toml), installed without its dependencies into a folder of its own, and run from
there with this interpreter's site-packages providing the dependencies; the checkout is not on
the path, so whatever the installed copy lacks fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a wheel build and an install: about 10 s

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "calsync", "models", "feeds", "web", "templates",
           "migrations", "bench")
TEMPLATE_KINDS = {"html", "txt", "css", "js", "svg"}


def _isolation() -> list[str]:
    """Build with this environment's setuptools when it is new enough for pyproject.toml's
    [build-system] (no index needed); otherwise pip fetches the build requirements."""
    try:
        major = int(version("setuptools").split(".")[0])
        version("wheel")
    except (PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation"] if major >= 69 else []


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            # The links of calsync/ stay links, as in the checkout: the build must follow them.
            shutil.copytree(path, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *_isolation(), "-w", str(out),
         str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("calsync-*.whl")
    return built


@pytest.fixture(scope="module")
def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
         "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def test_the_wheel_holds_one_import_package(names: list[str]) -> None:
    tops = {name.split("/")[0] for name in names}
    dist_info = {top for top in tops if top.endswith(".dist-info")}
    assert len(dist_info) == 1 and tops - dist_info == {"calsync"}, sorted(tops)
    assert not any(name.startswith(("tests/", "calsync/tests/")) for name in names)
    # Real copies of every linked folder, not links.
    for folder in ("models", "feeds", "web", "migrations", "bench", "templates"):
        assert any(name.startswith(f"calsync/{folder}/") for name in names), folder


def test_the_wheel_carries_the_templates_and_the_migrations(names: list[str]) -> None:
    for path in (ROOT / "templates").rglob("*"):
        if path.is_file() and path.suffix.lstrip(".") in TEMPLATE_KINDS:
            assert f"calsync/templates/{path.relative_to(ROOT / 'templates').as_posix()}" in names, path
    assert {n.rsplit(".", 1)[-1] for n in names if n.startswith("calsync/templates/")} >= TEMPLATE_KINDS
    assert "calsync/migrations/script.py.mako" in names
    assert "calsync/migrations/env.py" in names
    versions = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))
    assert len(versions) >= 7
    for script in versions:
        assert f"calsync/migrations/versions/{script}" in names, script


def test_the_console_script_is_calsync_cli_main(wheel: Path, names: list[str]) -> None:
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(entry_points).decode()
    assert "[console_scripts]" in text
    assert "calsync = calsync.web.cli:main" in text.splitlines()


INSTALLED_CHECK = textwrap.dedent(
    """
    import json, sys
    from importlib import resources

    import calsync
    from calsync.feeds.mail.mime import render
    from calsync.migrations import alembic_config
    from calsync.models import make_engine
    from calsync.web import create_app
    from alembic.script import ScriptDirectory

    engine = make_engine("sqlite://")
    scripts = ScriptDirectory.from_config(alembic_config(engine))
    app = create_app()  # migrates the SQLite file in CALSYNC_DATA_DIR with the installed scripts
    client = app.test_client()
    login = client.get("/login")
    css = client.get("/static/calsync.css")
    email = render("alert.txt", message="Work did not sync.", company="Salon Ana", staff="Ana",
                   calendar="Work", since="today", for_staff=False, admin_url=None)
    print(json.dumps({
        "calsync": calsync.__file__,
        "templates": str(resources.files("calsync") / "templates"),
        "revisions": [rev.revision for rev in scripts.walk_revisions()],
        "login": [login.status_code, "csrf_token" in login.get_data(as_text=True)],
        "css": [css.status_code, len(css.data)],
        "email": email,
    }))
    """
)


def _env(installed: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALSYNC_")}
    env.update(PYTHONPATH=str(installed), CALSYNC_DATA_DIR=str(tmp_path / "data"))
    return env


def test_the_installed_copy_finds_its_templates_and_migrations(installed: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", INSTALLED_CHECK], cwd=tmp_path, env=_env(installed, tmp_path),
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # The installed copy, not the checkout (an editable install would point there).
    assert Path(report["calsync"]).is_relative_to(installed), report["calsync"]
    assert Path(report["templates"]).is_relative_to(installed), report["templates"]
    assert len(report["revisions"]) == len(list((ROOT / "migrations" / "versions").glob("0*.py")))
    assert report["login"] == [200, True]
    assert report["css"][0] == 200 and report["css"][1] > 100
    assert "Calendar:     Work" in report["email"] and "Salon Ana (calsync)" in report["email"]


def test_the_installed_command_reaches_the_benchmarks(installed: Path, tmp_path: Path) -> None:
    script = installed / "bin" / "calsync"
    assert script.exists(), sorted(p.name for p in installed.iterdir())
    out = {}
    for args in (("--help",), ("bench", "--help"), ("bench", "twoway", "--help")):
        proc = subprocess.run(
            [sys.executable, str(script), *args], cwd=tmp_path, env=_env(installed, tmp_path),
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 0, (args, proc.stderr)
        assert "Usage: calsync" in proc.stdout
        out[args] = proc.stdout
    assert "serve" in out[("--help",)] and "bench" in out[("--help",)]
    for command in ("feeds", "sync", "twoway", "scale"):
        assert command in out[("bench", "--help")], out[("bench", "--help")]
    assert "--server" in out[("bench", "twoway", "--help")]
