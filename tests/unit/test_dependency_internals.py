"""What calsync needs from its dependencies beyond their public API, and that every library it
imports is declared.

Each private internal used (a patched class, an overridden private method, a wrapped method, an
attribute of an internal object) is checked here by shape, so an upgrade that removes or
reshapes one fails this fast test with the library's name and what to do, instead of silently
switching a safeguard off (feeds/sources/deadline.py, for one, does nothing when dateutil's
`_iterinfo` is gone). pyproject.toml bounds each such library to the major version tested.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import tomllib
from collections.abc import Callable
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def upgrade_broke(library: str, what: str, used_in: str) -> str:
    return (f"{library}: {what} is gone or has changed shape, and {used_in} relies on it. Pin "
            f"{library} below this version in pyproject.toml, or rework {used_in} for the new "
            f"version (then update this test).")


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


# --- python-dateutil: the recurrence deadline -------------------------------------------------


def test_dateutil_rebuilds_its_iteration_tables_through_a_module_level_iterinfo() -> None:
    """deadline.py subclasses dateutil.rrule._iterinfo and puts the subclass back in the module:
    rrule._iter must look the name up there at each iteration and call rebuild(year, month) with
    the rule in `self.rrule`."""
    from dateutil import rrule

    why = upgrade_broke("python-dateutil", "rrule._iterinfo (rebuild(year, month), .rrule)",
                        "feeds/sources/deadline.py")
    assert inspect.isclass(vars(rrule).get("_iterinfo")), why
    iterinfo: Any = vars(rrule)["_iterinfo"]
    assert parameters(iterinfo.rebuild) == ["self", "year", "month"], why
    assert "_iterinfo" in rrule.rrule._iter.__code__.co_names, why  # a global, looked up per call
    rule = rrule.rrule(rrule.DAILY, count=1)
    assert iterinfo(rule).rrule is rule, why


def test_the_deadline_really_stops_a_rule_that_no_date_matches() -> None:
    """The shape is not enough: a rule that never matches (30 February) walks to the year 9999
    unless the patched rebuild is reached."""
    from datetime import datetime

    from dateutil import rrule

    from calsync.feeds.sources.deadline import DeadlinePassed, deadline

    never = rrule.rrule(rrule.YEARLY, bymonth=2, bymonthday=30, dtstart=datetime(2026, 1, 1))
    with pytest.raises(DeadlinePassed), deadline(0.05) as d:
        d.interrupt([never])
        list(never)
    assert getattr(rrule._iterinfo, "checks_deadline", False), upgrade_broke(
        "python-dateutil", "rrule._iterinfo", "feeds/sources/deadline.py")


# --- recurring-ical-events: the rules a series expands ----------------------------------------


def test_recurring_ical_events_series_exposes_its_dateutil_rules() -> None:
    """busy_time._expand hands `Series(...).recurrence.rrules` to the deadline; without that
    attribute a pathological series could no longer be interrupted (it reads it with a default,
    so nothing else would notice)."""
    import icalendar
    import recurring_ical_events
    from dateutil import rrule

    why = upgrade_broke("recurring-ical-events", "Series(...).recurrence.rrules",
                        "feeds/sources/busy_time.py (_expand)")
    event = icalendar.Event.from_ical(
        "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20260105T100000Z\r\nDTEND:20260105T110000Z\r\n"
        "RRULE:FREQ=WEEKLY;COUNT=3\r\nEND:VEVENT\r\n"
    )
    series = recurring_ical_events.Series([recurring_ical_events.EventAdapter(event)])
    rules = getattr(series.recurrence, "rrules", None)
    assert rules, why
    assert any(isinstance(rule, rrule.rrule) for rule in rules), why


# --- niquests (urllib3-future underneath): the guarded session --------------------------------


def test_niquests_adapters_build_responses_that_fetch_can_wrap() -> None:
    """GuardedSession replaces each adapter's build_response(request, raw_response) and wraps
    the raw response's read1/read (urllib3-future's HTTPResponse) to count and time the body."""
    import niquests
    from niquests.packages.urllib3.response import HTTPResponse

    why = upgrade_broke("niquests", "HTTPAdapter.build_response(req, resp) and urllib3-future's "
                        "HTTPResponse.read1/read/stream", "feeds/sources/fetch.py (GuardedSession)")
    session = niquests.Session()
    try:
        assert {"http://", "https://"} <= set(session.adapters), why
        for adapter in session.adapters.values():
            build_response = getattr(adapter, "build_response", None)
            assert build_response is not None and parameters(build_response) == ["req", "resp"], why
    finally:
        session.close()
    assert parameters(HTTPResponse.read1)[:3] == ["self", "amt", "decode_content"], why
    assert parameters(HTTPResponse.read)[:3] == ["self", "amt", "decode_content"], why
    assert parameters(HTTPResponse.stream)[:3] == ["self", "amt", "decode_content"], why


def test_niquests_session_takes_a_resolver_and_no_http3() -> None:
    import niquests
    from niquests.packages.urllib3.contrib.resolver.system import SystemResolver

    why = upgrade_broke("niquests", "Session(resolver=, retries=, disable_http3=, "
                        "revocation_configuration=) and contrib.resolver.system.SystemResolver",
                        "feeds/sources/fetch.py (GuardedResolver, GuardedSession)")
    assert {"resolver", "retries", "disable_http3", "revocation_configuration"} <= set(
        parameters(niquests.Session.__init__)), why
    assert isinstance(SystemResolver, type), why


def test_the_client_loggers_that_are_redacted_are_the_ones_niquests_writes_to() -> None:
    """client_logs hides URL paths in the loggers by name; if the HTTP layer under niquests
    logged under other names, secret calendar addresses would reach the logs again."""
    from niquests.packages.urllib3 import connection, connectionpool, poolmanager

    from calsync.feeds.sources.client_logs import _CLIENT_LOGGERS

    names = {module.log.name for module in (connection, connectionpool, poolmanager)}  # type: ignore[attr-defined]
    assert names == set(_CLIENT_LOGGERS), upgrade_broke(
        "niquests", f"the urllib3 logger names {sorted(_CLIENT_LOGGERS)} (now {sorted(names)})",
        "feeds/sources/client_logs.py")


# --- caldav: Basic credentials up front -------------------------------------------------------


def test_caldav_client_negotiates_auth_through_an_overridable_method() -> None:
    """caldav_source._Client overrides DAVClient._should_negotiate_auth(status_code, headers),
    resets .auth/.auth_type, reads the type name of .auth, and swaps .session for the guarded
    one. Constructing a client sends nothing."""
    from caldav.davclient import DAVClient

    why = upgrade_broke("caldav", "DAVClient._should_negotiate_auth(status_code, headers), "
                        ".auth/.auth_type/.session", "feeds/sources/caldav_source.py (_Client, dav_client)")
    assert parameters(DAVClient._should_negotiate_auth) == ["self", "status_code", "headers"], why
    basic = DAVClient("http://127.0.0.1:9/dav/", username="u", password="p", auth_type="basic",
                      enable_rfc6764=False, require_tls=False)
    try:
        assert type(basic.auth).__name__ == "HTTPBasicAuth", why  # _Client.uses_basic
        assert basic.auth_type == "basic", why
        assert hasattr(basic.session, "request") and hasattr(basic.session, "close"), why
    finally:
        basic.session.close()
    hinted = DAVClient("http://127.0.0.1:9/dav/", username="u", password="p", auth_type=None,
                       enable_rfc6764=False, require_tls=False)
    try:
        assert hinted.auth is None, why
        assert hinted._should_negotiate_auth(401, {"WWW-Authenticate": 'Basic realm="x"'}), why
    finally:
        hinted.session.close()


# --- Werkzeug: URL builders compiled through Rule._compile_builder -----------------------------


def test_werkzeug_compiles_each_url_builder_through_rule_compile_builder() -> None:
    """web/routing.py defers `Rule._compile_builder`, which `Rule.compile` calls for the two
    builders of every rule as it is bound to a Map."""
    from werkzeug.routing import Map, Rule

    why = upgrade_broke("werkzeug", "Rule.compile calling Rule._compile_builder(append_unknown)",
                        "web/routing.py (LazyBuilderRule)")
    assert "append_unknown" in inspect.signature(Rule._compile_builder).parameters, why
    called: list[bool] = []

    class Counting(Rule):
        def _compile_builder(self, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
            called.append(append_unknown)
            return super()._compile_builder(append_unknown)

    Map([Counting("/a/<int:x>", endpoint="a")])
    assert sorted(called) == [False, True], why


# --- Flask: the database-unavailable handler in every blueprint's scope -----------------------


def test_flask_keeps_error_handlers_by_scope_code_and_class() -> None:
    """web/errors.py writes into app.error_handler_spec[scope][None][exception class] so that a
    blueprint's catch-all handler does not win over the 503."""
    from flask import Blueprint, Flask

    why = upgrade_broke("flask", "Flask.error_handler_spec[scope][code][class]",
                        "web/errors.py (register_error_handlers)")
    app = Flask(__name__)
    bp = Blueprint("sample", __name__)

    @bp.get("/down")
    def down() -> str:
        raise ConnectionError("the database went away")

    @bp.errorhandler(Exception)
    def catch_all(exc: Exception) -> tuple[str, int]:
        return "blueprint", 500

    app.register_blueprint(bp)
    assert app.error_handler_spec["sample"][None][Exception] is catch_all, why
    for scope in (None, *app.blueprints):  # what register_error_handlers does
        app.error_handler_spec[scope][None][ConnectionError] = lambda exc: ("unavailable", 503)
    response = app.test_client().get("/down")
    assert (response.status_code, response.get_data(as_text=True)) == (503, "unavailable"), why


# --- every import declared --------------------------------------------------------------------

CODE_FOLDERS = ("models", "feeds", "web", "migrations")  # the server; bench/ may use extras too


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalise(re.split(r"[\s\[<>=!~;,]", line, maxsplit=1)[0]) for line in requirements}


def normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()  # PEP 503


def third_party_imports(folder: str) -> dict[str, str]:
    """Top-level import name -> a file importing it, for every import anywhere in the folder."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in {"calsync", "__future__"}:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


DECLARED = requirement_names(PYPROJECT["project"]["dependencies"])
BENCH = DECLARED | requirement_names(PYPROJECT["project"]["optional-dependencies"]["bench"])


@pytest.mark.parametrize(("folder", "declared", "where"), [
    *((folder, DECLARED, "[project] dependencies") for folder in CODE_FOLDERS),
    ("bench", BENCH, "[project] dependencies or the bench extra"),
])
def test_every_third_party_import_is_declared(folder: str, declared: set[str], where: str) -> None:
    """A library that arrives only through another one's requirements (jinja2 through Flask,
    dateutil through icalendar) disappears the day that one stops needing it."""
    providers = packages_distributions()
    imports = third_party_imports(folder)
    assert imports or folder == "models"
    missing = []
    for name, path in sorted(imports.items()):
        distributions = {normalise(d) for d in providers.get(name, [])}
        if not distributions & declared:
            missing.append(f"{name} ({path}; from {sorted(distributions) or 'no installed distribution'})")
    assert not missing, f"imported in {folder}/ but not declared in pyproject.toml's {where}: {missing}"


def test_the_declared_check_sees_lazy_imports_and_tells_test_tools_apart() -> None:
    feeds = third_party_imports("feeds")
    assert "jinja2" in feeds and normalise("Jinja2") in DECLARED  # feeds/mail/mime.py
    assert "dateutil" in feeds and "python-dateutil" in DECLARED  # feeds/sources/deadline.py
    assert "radicale" in third_party_imports("bench")  # imported inside a function
    assert "radicale" not in DECLARED and "radicale" in BENCH
    assert not {normalise(d) for d in packages_distributions()["pytest"]} & BENCH
