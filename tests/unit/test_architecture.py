"""The layering of docs/architecture.md, enforced: one import namespace (`calsync`), models <-
feeds <- web <- wsgi.py, the directions between feeds/ subpackages, nothing at import time, and
feeds/ modules of a readable size."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("models", "feeds", "web")
PACKAGE = "calsync"  # the one import namespace; calsync/<folder> links to the folder
FOLDERS = ("models", "feeds", "web", "migrations", "bench", "templates")
MAX_FEEDS_MODULE_LINES = 400  # docs/architecture.md: "under about 400 lines each"


@dataclass(frozen=True)
class Import:
    module: str  # the imported module, absolute ("sqlalchemy.orm", "calsync.feeds.errors")
    line: int

    @property
    def ours(self) -> bool:
        return self.module == PACKAGE or self.module.startswith(PACKAGE + ".")

    @property
    def top(self) -> str:
        """The first name after calsync for our modules ("feeds", "web"), else the top-level
        package ("sqlalchemy")."""
        parts = self.module.split(".")
        return parts[1] if self.ours and len(parts) > 1 else parts[0]


def module_name(path: Path, root: Path = ROOT) -> str:
    """The import name of a file in a top-level folder: feeds/mail/mime.py is
    calsync.feeds.mail.mime (wsgi.py and the tests are not in the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts and parts[0] in FOLDERS:
        parts.insert(0, PACKAGE)
    return ".".join(parts)


def python_files(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


def imports_of(path: Path, root: Path = ROOT) -> list[Import]:
    """Every import in the file, wherever it is (top level, functions, TYPE_CHECKING blocks):
    a layer may not depend on another even lazily."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.append(Import(prefix, node.lineno))
            # `from package import submodule` imports the submodule too.
            found += [Import(f"{prefix}.{alias.name}", node.lineno) for alias in node.names]
    return found


ALL_FILES = [path for layer in LAYERS for path in python_files(layer)]


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_layers_exist() -> None:
    for layer in LAYERS:
        assert (ROOT / layer).is_dir(), layer
    assert len(python_files("models")) >= 3
    assert len(python_files("feeds")) >= 3
    assert len(python_files("web")) >= 3


@pytest.mark.parametrize("path", python_files("models"), ids=_id)
def test_models_import_only_stdlib_sqlalchemy_and_models(path: Path) -> None:
    bad = [
        f"line {imp.line}: {imp.module}"
        for imp in imports_of(path)
        if not (imp.ours and imp.top == "models")
        and imp.top not in sys.stdlib_module_names
        and imp.top not in {"sqlalchemy", "__future__"}
    ]
    assert not bad, f"{_id(path)} may import only the standard library, SQLAlchemy and models: {bad}"


FRAMEWORKS = ("flask", "werkzeug", "flask_login", "flask_wtf", "wtforms", "jinja2", "itsdangerous")
# Emails are rendered from templates/email/ by the core (issue 4: jinja2 used directly, not
# through Flask), in this one module; nowhere else in feeds/ may use the template engine.
JINJA_ALLOWED = {"feeds/mail/mime.py"}


@pytest.mark.parametrize("path", python_files("feeds"), ids=_id)
def test_feeds_never_import_the_web_framework_or_web(path: Path) -> None:
    bad = [
        f"line {imp.line}: {imp.module}"
        for imp in imports_of(path)
        if (not imp.ours and (imp.top in FRAMEWORKS or imp.top.startswith("flask_")))
        or (imp.ours and imp.top == "web") or imp.top == "wsgi"
        if not (imp.top == "jinja2" and _id(path) in JINJA_ALLOWED)
    ]
    assert not bad, f"{_id(path)} is part of the calendar core and must not import {bad}"


@pytest.mark.parametrize("path", python_files("models") + python_files("feeds"), ids=_id)
def test_models_and_feeds_never_import_web(path: Path) -> None:
    bad = [
        f"line {imp.line}: {imp.module}"
        for imp in imports_of(path)
        if (imp.ours and imp.top == "web") or imp.top == "wsgi"
    ]
    assert not bad, f"{_id(path)} imports the web layer: {bad}"


@pytest.mark.parametrize("path", python_files("web"), ids=_id)
def test_web_never_imports_wsgi_or_the_tests(path: Path) -> None:
    bad = [
        f"line {imp.line}: {imp.module}"
        for imp in imports_of(path)
        if imp.top in {"wsgi", "tests"}
    ]
    assert not bad, f"{_id(path)} imports {bad}; wsgi.py sits on top of web, not below it"


def test_wsgi_only_builds_the_app() -> None:
    tree = ast.parse((ROOT / "wsgi.py").read_text(encoding="utf-8"))
    statements = [node for node in tree.body if not isinstance(node, ast.Expr)]  # skip docstring
    assert [ast.unparse(node) for node in statements] == [
        "from calsync.web import create_app",
        "app = create_app()",
    ]


def test_the_import_checker_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    """The checks above are only as good as imports_of: prove it on a sample module."""
    sample = tmp_path / "feeds" / "mail" / "sample.py"
    sample.parent.mkdir(parents=True)
    sample.write_text(
        "from . import mime\n"
        "from ..errors import ConfigurationError\n"
        "def f():\n"
        "    from flask import request\n"
        "    import calsync.web.app\n"
    )
    imports = imports_of(sample, root=tmp_path)
    modules = {imp.module for imp in imports}
    assert {"calsync.feeds.mail.mime", "calsync.feeds.errors.ConfigurationError", "flask",
            "calsync.web.app"} <= modules
    assert {imp.top for imp in imports if imp.ours} == {"feeds", "web"}


def test_the_import_time_check_sees_decorators_defaults_and_class_bodies() -> None:
    tree = ast.parse(
        "import os\n"
        "def f(x=os.getenv('A')):\n"
        "    return os.environ['B']\n"
        "class C:\n"
        "    url = os.environ.get('C')\n"
        "    def m(self):\n"
        "        return create_engine('sqlite://')\n"
    )
    names = [n.attr for n in _import_time_nodes(tree) if isinstance(n, ast.Attribute)]
    assert sorted(names) == ["environ", "get", "getenv"]


# --- web/ -----------------------------------------------------------------------------------

# Neither browser blueprint imports the other: what both use lives in web/views_common.py,
# web/calendar_forms.py and web/formatting.py, and create_app registers both.
WEB_APART = {"calsync.web.self_service": "calsync.web.admin", "calsync.web.admin": "calsync.web.self_service"}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("path", python_files("web"), ids=_id)
def test_admin_and_self_service_do_not_import_each_other(path: Path) -> None:
    me = module_name(path)
    for mine, other in WEB_APART.items():
        if _within(me, mine):
            bad = [f"line {imp.line}: {imp.module}" for imp in imports_of(path) if _within(imp.module, other)]
            assert not bad, f"{_id(path)} imports {other}: {bad}; move what both need to web/views_common.py"


# App-wide wiring (error handlers of the app, CSRF set-up and exemptions) is done in these two
# files only: a blueprint module that reaches into the app changes every other blueprint too.
APP_WIRING_FILES = {"web/app.py", "web/errors.py"}
APP_WIDE_CALLS = {"app_errorhandler", "register_error_handler", "error_handler_spec", "exempt", "CSRFProtect"}


def app_wide_wiring(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in APP_WIDE_CALLS:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in APP_WIDE_CALLS:
            found.append(f"line {node.lineno}: {node.id}")
        elif (isinstance(node, ast.Attribute) and node.attr == "errorhandler"
              and isinstance(node.value, ast.Name) and node.value.id in {"app", "current_app"}):
            found.append(f"line {node.lineno}: {node.value.id}.errorhandler")
    return found


@pytest.mark.parametrize("path", python_files("web"), ids=_id)
def test_only_the_app_factory_registers_app_wide_handlers(path: Path) -> None:
    if _id(path) in APP_WIRING_FILES:
        return
    bad = app_wide_wiring(ast.parse(path.read_text(encoding="utf-8")))
    assert not bad, f"{_id(path)} wires the whole app ({bad}); do that in web/app.py or web/errors.py"


def test_the_wiring_check_sees_handlers_and_exemptions() -> None:
    sample = ast.parse(
        "@bp.errorhandler(ValueError)\n"  # a blueprint's own handler is fine
        "def f(e): ...\n"
        "@app.errorhandler(404)\n"
        "def g(e): ...\n"
        "@bp.app_errorhandler(405)\n"
        "def h(e): ...\n"
        "csrf = CSRFProtect()\n"
        "csrf.exempt(api.bp)\n"
    )
    assert [hit.split(": ")[1] for hit in app_wide_wiring(sample)] == [
        "app.errorhandler", ".app_errorhandler", "CSRFProtect", ".exempt"]
    assert app_wide_wiring(ast.parse((ROOT / "web" / "app.py").read_text(encoding="utf-8")))


# --- the repository stands alone ------------------------------------------------------------

CITED_DOC = re.compile(r"(?<![\w/.])(?:docs/)?[\w-]+\.md\b")
DOC_SOURCES = sorted(
    path for folder in (*FOLDERS, "tests", "docs") for path in (ROOT / folder).rglob("*")
    if path.suffix in {".py", ".md", ".html", ".txt"} and not {"corpus", "node_modules"} & set(path.parts)
) + [ROOT / "README.md"]


@pytest.mark.parametrize("path", DOC_SOURCES, ids=_id)
def test_every_cited_document_is_in_the_repository(path: Path) -> None:
    """Comments cite docs/protocol.md and docs/architecture.md; a citation of a file outside the
    repository (the specification's shared folder) leaves the reader with nothing to open."""
    text = path.read_text(encoding="utf-8", errors="replace")
    assert "../" + "shared" not in text, f"{_id(path)} points outside the repository"
    here = path.parent
    missing = sorted({
        cited for cited in CITED_DOC.findall(text)
        if not any((base / cited).exists() for base in (ROOT, here, ROOT / "docs"))
    })
    assert not missing, f"{_id(path)} cites {missing}; cite docs/protocol.md or docs/architecture.md"


# --- feeds/ subpackages -----------------------------------------------------------------------

# What each part of feeds/ may import from the others (docs/architecture.md draws it). A part is
# a subpackage (mail/) or a module at the top of feeds/ (errors.py). Lower parts never import
# higher ones: calendars (sync, push, two-way) sit on scheduling, which sits on mail.
FEEDS_DEPENDS: dict[str, set[str]] = {
    "errors": set(),
    "lookup": {"errors"},  # get_owned: the one company-scoped "row by id or 404"
    "ical": {"errors"},
    "company_settings": {"errors"},
    "mail": {"errors", "lookup", "ical"},
    "sources": {"errors"},
    "private_files": set(),
    "settings": {"errors", "mail", "private_files"},
    "accounts": {"errors", "lookup", "settings", "private_files"},
    "scheduling": {"errors", "lookup", "company_settings", "mail"},
    "publishing": {"errors", "lookup", "company_settings", "accounts", "ical"},
    "onboarding": {"errors", "lookup", "company_settings", "accounts", "mail", "publishing"},
    # publishing: the feeds' VTIMEZONEs, also written with the copies in staff calendars
    "calendars": {"errors", "lookup", "company_settings", "accounts", "mail", "scheduling",
                  "sources", "ical"},
    "jobs": {"errors", "calendars", "mail", "settings", "private_files"},  # the queue file's mode
    "demo": {"errors", "scheduling"},
}


def feeds_part(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if parts[:2] == [PACKAGE, "feeds"] and len(parts) > 2 else None


def test_every_part_of_feeds_has_a_place_in_the_table() -> None:
    parts = {p.stem if p.is_file() else p.name for p in (ROOT / "feeds").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert parts == set(FEEDS_DEPENDS), "add the new part of feeds/ to FEEDS_DEPENDS and the docs"


def test_the_feeds_table_has_no_cycle() -> None:
    def reach(part: str, seen: frozenset[str] = frozenset()) -> None:
        assert part not in seen, f"cycle through {part}"
        for dep in FEEDS_DEPENDS[part]:
            reach(dep, seen | {part})
    for part in FEEDS_DEPENDS:
        reach(part)


@pytest.mark.parametrize("path", python_files("feeds"), ids=_id)
def test_feeds_parts_import_only_the_parts_below_them(path: Path) -> None:
    me = feeds_part(module_name(path))
    if me is None:
        return  # feeds/__init__.py
    bad = [
        f"line {imp.line}: {imp.module}"
        for imp in imports_of(path)
        if (part := feeds_part(imp.module)) is not None and part != me
        and part not in FEEDS_DEPENDS[me]
    ]
    assert not bad, f"{_id(path)} ({me}) may import only {sorted(FEEDS_DEPENDS[me])} of feeds/: {bad}"


BARE = {"feeds", "web", "models", "migrations", "bench", "templates"}
BARE_IN_STRINGS = re.compile(r"""["'](?:from|import) (?:""" + "|".join(sorted(BARE)) + r")\b")
EVERY_FILE = sorted(
    path for folder in (*FOLDERS, "tests") for path in (ROOT / folder).rglob("*.py")
) + [ROOT / "wsgi.py"]


@pytest.mark.parametrize("path", EVERY_FILE, ids=_id)
def test_everything_is_imported_through_the_calsync_namespace(path: Path) -> None:
    """A bare `import web` would load a second copy of a module (or another project's `web`
    package from site-packages): everything goes through calsync."""
    bad = [f"line {imp.line}: {imp.module}" for imp in imports_of(path)
           if not imp.ours and imp.top in BARE]
    # Code handed to a subprocess (`python -c "from calsync.web.cli import main; ..."`) too.
    bad += [f"a string: {m.group(0)}" for m in BARE_IN_STRINGS.finditer(path.read_text(encoding="utf-8"))]
    assert not bad, f"{_id(path)} imports outside the calsync namespace: {bad}"


def test_the_package_folder_links_to_the_top_level_folders() -> None:
    for folder in FOLDERS:
        link = ROOT / PACKAGE / folder
        assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve(), link


# --- size -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", python_files("feeds"), ids=_id)
def test_feeds_modules_stay_under_400_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_FEEDS_MODULE_LINES, (
        f"{_id(path)} has {lines} lines; docs/architecture.md keeps one concept a module under "
        f"{MAX_FEEDS_MODULE_LINES}: split it"
    )


def test_feeds_sub_packages_say_what_lives_there() -> None:
    inits = list((ROOT / "feeds").rglob("__init__.py"))
    assert len(inits) >= 8
    for init in inits:
        tree = ast.parse(init.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{_id(init)} needs a two-line docstring of what it owns"


# --- nothing at import time -------------------------------------------------------------------

# Static half: no module-level statement mentions the environment or builds an engine or app.
AT_IMPORT_FORBIDDEN = {"environ", "getenv", "create_engine", "make_engine", "create_app", "load_settings"}


def _import_time_nodes(tree: ast.Module) -> list[ast.AST]:
    """Nodes evaluated when the module is imported: everything but function bodies (decorators,
    default values and class bodies do run at import)."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            todo += node.decorator_list + node.args.defaults + [d for d in node.args.kw_defaults if d]
            continue
        if isinstance(node, ast.Lambda):
            continue
        todo += list(ast.iter_child_nodes(node))
    return out


@pytest.mark.parametrize("path", ALL_FILES, ids=_id)
def test_no_environment_or_engine_at_module_level(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = []
    for node in _import_time_nodes(tree):
        name = None
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.Name):
            name = node.id
        if name in AT_IMPORT_FORBIDDEN and not isinstance(getattr(node, "ctx", None), ast.Store):
            bad.append(f"line {node.lineno}: {name}")  # type: ignore[attr-defined]
    assert not bad, f"{_id(path)} runs this at import time: {bad}"


# Dynamic half: import every module in a fresh interpreter whose settings are all wrong, and
# record any read of a CALSYNC_ variable and any engine created while doing so.
IMPORT_PROBE = textwrap.dedent(
    """
    import _collections_abc, collections.abc, importlib, json, os, sys, traceback
    import sqlalchemy, sqlalchemy.engine, sqlalchemy.engine.create

    ours = tuple(os.environ["PROBE_ROOTS"].split(os.pathsep))
    events = []

    skipped = {os.__file__, _collections_abc.__file__, "<string>", "<frozen os>",
               "<frozen _collections_abc>"}

    def called_from_ours():
        # The reader is the innermost frame that is neither this probe nor the os / Mapping
        # code in between (os.getenv, Mapping.get); frozen stdlib modules say "<frozen os>".
        for frame in reversed(traceback.extract_stack()[:-2]):
            if frame.filename not in skipped:
                return frame.filename.startswith(ours)
        return False

    real_create_engine = sqlalchemy.create_engine
    def recording_create_engine(*args, **kwargs):
        events.append(f"create_engine{args!r}")
        return real_create_engine(*args, **kwargs)
    for module in (sqlalchemy, sqlalchemy.engine, sqlalchemy.engine.create):
        module.create_engine = recording_create_engine

    class RecordingEnviron(collections.abc.MutableMapping):
        # A Mapping, not a dict subclass: dict(os.environ) must go through __iter__/__getitem__.
        def __init__(self, real):
            self.real = real
        def _record(self, what):
            if called_from_ours():
                events.append(what)
        def __getitem__(self, key):
            self._record(f"os.environ[{key!r}]")
            return self.real[key]
        def __contains__(self, key):
            self._record(f"{key!r} in os.environ")
            return key in self.real
        def __iter__(self):
            self._record("iter(os.environ)")
            return iter(self.real)
        def __len__(self):
            return len(self.real)
        def __setitem__(self, key, value):
            self.real[key] = value
        def __delitem__(self, key):
            del self.real[key]
        def copy(self):
            self._record("os.environ.copy()")
            return self.real.copy()
    real_environ = os.environ
    os.environ = RecordingEnviron(real_environ)

    failed = {}
    for name in sys.argv[1:]:
        try:
            importlib.import_module(name)
        except Exception as exc:  # report every module, not just the first failure
            failed[name] = f"{type(exc).__name__}: {exc}"
    os.environ = real_environ
    print(json.dumps({"events": events, "failed": failed}))
    """
)


def test_importing_every_module_reads_no_environment_and_creates_no_engine(tmp_path: Path) -> None:
    modules = sorted({module_name(path) for path in ALL_FILES})
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALSYNC_")}
    env.update(
        CALSYNC_DATABASE_URL="this is not a database url",
        CALSYNC_BASE_URL="ftp://invalid",
        CALSYNC_DATA_DIR=str(tmp_path / "must-not-be-created"),
        CALSYNC_BOGUS="1",
    )
    env["PROBE_ROOTS"] = os.pathsep.join(
        [str(ROOT / layer) + os.sep for layer in LAYERS]
        + [str(ROOT / PACKAGE / layer) + os.sep for layer in LAYERS]
    )
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, *modules],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}, report["failed"]
    assert report["events"] == [], report["events"]
    assert not (tmp_path / "must-not-be-created").exists()
    assert len(modules) >= 20  # the probe really walked the packages


def test_the_import_probe_notices_a_module_level_read(tmp_path: Path) -> None:
    """A probe that never fires proves nothing: feed it a module that does what is forbidden."""
    (tmp_path / "probe_sample").mkdir()
    (tmp_path / "probe_sample" / "forbidden.py").write_text(
        "import os\n"
        "from sqlalchemy import create_engine\n"
        "URL = os.getenv('CALSYNC_DATABASE_URL')\n"
        "ALL = dict(os.environ)\n"
        "ENGINE = create_engine('sqlite://')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, "probe_sample.forbidden"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PROBE_ROOTS": str(tmp_path / "probe_sample") + os.sep},
    )
    assert proc.returncode == 0, proc.stderr
    events = json.loads(proc.stdout.strip().splitlines()[-1])["events"]
    assert "os.environ['CALSYNC_DATABASE_URL']" in events
    assert "iter(os.environ)" in events
    assert "create_engine('sqlite://',)" in events
