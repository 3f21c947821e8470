"""Lazily compiled URL builders (web/routing.py) build exactly what Werkzeug's eager ones do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from werkzeug.routing import Map, Rule

from calsync.feeds.settings import Settings
from calsync.web import create_app
from calsync.web.routing import LazyBuilderRule


def _arguments(rule: Rule) -> dict[str, object]:
    return {name: (7 if type(rule._converters[name]).__name__ == "IntegerConverter" else "x y/ü")
            for name in rule.arguments}


def test_every_endpoint_builds_the_url_werkzeug_builds(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), migrate=False)
    rules = list(app.url_map.iter_rules())
    # Flask adds its static route before calsync can choose the rule class.
    assert len(rules) > 90 and all(isinstance(rule, LazyBuilderRule) for rule in rules
                                   if rule.endpoint != "static")
    eager = Map([Rule(rule.rule, endpoint=rule.endpoint, methods=rule.methods, defaults=rule.defaults)
                 for rule in rules], converters=app.url_map.converters)
    lazy, plain = app.url_map.bind("cal.example.test"), eager.bind("cal.example.test")
    for rule in rules:
        values = {**_arguments(rule), "extra": "a&b"}  # an unknown value goes to the query
        assert lazy.build(rule.endpoint, values) == plain.build(rule.endpoint, values), rule.rule


def test_a_builder_is_compiled_on_its_first_use_only(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[bool] = []
    real = Rule._compile_builder

    def counting(rule: Rule, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        compiled.append(append_unknown)
        return real(rule, append_unknown)

    monkeypatch.setattr(Rule, "_compile_builder", counting)
    urls = Map([LazyBuilderRule(f"/r{i}/<int:a>", endpoint=f"e{i}") for i in range(50)]).bind("h")
    assert compiled == []  # adding 50 rules compiled nothing
    assert urls.build("e3", {"a": 5}) == "/r3/5"
    assert urls.build("e3", {"a": 6}) == "/r3/6"
    assert urls.build("e3", {"a": 6, "q": "1"}) == "/r3/6?q=1"
    assert compiled == [True]  # once, for the one builder of the one rule that was used
