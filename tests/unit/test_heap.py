"""Serving processes freeze the heap their app built (web/heap.py): garbage is collected first,
and what stays is out of the collector's walks. Run in a child process each, so this test
run's own heap is left alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_garbage_is_collected_and_the_rest_frozen() -> None:
    out = _run("""
        import gc, weakref
        from calsync.web.heap import freeze_heap
        class Node: pass
        cycle = Node(); cycle.me = cycle; gone = weakref.ref(cycle); del cycle  # garbage
        kept = [Node() for _ in range(3)]
        assert gc.get_freeze_count() == 0
        frozen = freeze_heap()
        print(gone() is None, frozen == gc.get_freeze_count(), frozen > 1000)
    """)
    assert out == "True True True"


def test_gunicorns_master_freezes_the_preloaded_app_before_forking() -> None:
    out = _run("""
        import gc, importlib.util, types
        spec = importlib.util.spec_from_file_location("conf", "deploy/gunicorn.conf.py")
        conf = importlib.util.module_from_spec(spec); spec.loader.exec_module(conf)
        before = gc.get_freeze_count()
        conf.when_ready(types.SimpleNamespace(app=types.SimpleNamespace(callable=None)))
        print(before, gc.get_freeze_count() > 0)
    """)
    assert out == "0 True"
