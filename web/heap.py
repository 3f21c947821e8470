"""The web process's heap once the app is built: kept out of the cyclic garbage collector.

A serving process holds a large heap that lives as long as it does: modules, the Flask app,
SQLAlchemy's mappers and compiled statements, the feed caches' indexes. Python's full (oldest
generation) collection walks all of it, and it runs inside whichever request happened to
allocate past the threshold: under gunicorn on PostgreSQL, about once in 190 feed requests of
the issue-17 benchmark, each time a ~110 ms stall of that request (measured with gc.callbacks
in the worker; docs/scale.md, fifth round). Frozen once the app is built (gc.freeze), those
objects are not walked again: the same collection took ~1.5 ms. Done before gunicorn forks its
workers, it also keeps the collector from writing to the pages they share with the master
(the copy-on-write the gc.freeze documentation describes).

Only for processes that serve (`calsync serve`, deploy/gunicorn.conf.py): not in create_app,
whose callers (tests, commands) build and drop apps whose objects must stay collectable.
"""

from __future__ import annotations

import gc


def freeze_heap() -> int:
    """Collect what is garbage now, then freeze the rest; the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
