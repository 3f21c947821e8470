"""URL rules whose URL builders are compiled when first used.

Werkzeug compiles two URL builders (Python source, then `compile`) for every rule as it is added:
about 45 ms for calsync's ~190 rules, paid by every process and by every app a test makes
(~2,000 per suite run), while a process builds URLs for a few endpoints only. A rule of this
class compiles each builder on its first `url_for` instead; what it builds is Werkzeug's own
(tests/unit/test_routing.py compares every endpoint's URL with the eager rule's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from werkzeug.routing import Rule


class LazyBuilderRule(Rule):
    def _compile_builder(self, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        compile_builder = super()._compile_builder
        compiled: list[Callable[..., tuple[str, str]]] = []

        def build(rule: Rule, *args: Any, **kwargs: Any) -> tuple[str, str]:
            if not compiled:  # two threads may both compile: the same function, no harm
                compiled.append(compile_builder(append_unknown).__get__(rule, None))
            return compiled[0](*args, **kwargs)

        return build
