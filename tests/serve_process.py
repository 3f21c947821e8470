"""`calsync serve` in a subprocess on a test's database, for the tests that need a real server
(load, slow servers): started with only the settings it needs, waited for, and stopped."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from calsync.feeds.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    base: str
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def calsync_serve(settings: Settings, log: Path, **extra_env: str) -> Iterator[ServeProcess]:
    """Run `calsync serve` until the block ends. Only calsync's own variables are passed on:
    the CLI refuses unknown CALSYNC_ variables, and the test run has knobs of its own."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALSYNC_")}
    env.update(
        CALSYNC_DATA_DIR=str(settings.data_dir),
        CALSYNC_DATABASE_URL=settings.database_url or "",
        CALSYNC_SECRET_KEY=settings.secret_key or "",
        CALSYNC_BASE_URL=f"http://127.0.0.1:{port}",
        **extra_env,
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "from calsync.web.cli import main; main()", "serve",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_answering(process, base, log)
        yield ServeProcess(process, base, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_answering(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError(f"calsync serve exited: {log.read_text()}")
        try:
            if requests.get(base + "/api/v1/openapi.json", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # a slow first answer: ask again
            time.sleep(0.1)
    raise AssertionError(f"calsync serve did not answer: {log.read_text()}")
