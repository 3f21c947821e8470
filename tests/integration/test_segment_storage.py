"""Stored segments (feed_segment): written after a response, read by other processes. On
PostgreSQL the body is compressed with lz4 (models/feed.py, migration 0017) and read in binary
form (feeds/publishing/prebuilt.py); either way the bytes read are the bytes written."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from flask import Flask
from sqlalchemy import Engine, text

from calsync.feeds.publishing.cache import FeedCache, store_segment
from calsync.feeds.publishing.prebuilt import Reads
from calsync.migrations import alembic_config, upgrade_database
from calsync.models import make_engine


def _compression(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text(
            "SELECT attcompression FROM pg_attribute "
            "WHERE attrelid = 'feed_segment'::regclass AND attname = 'body'")).scalar_one())


def test_a_stored_segment_reads_back_byte_for_byte(app: Flask, company_id: int) -> None:
    services = app.extensions["calsync"]
    with services.sessions.begin() as session:
        staff_id = session.execute(text(
            "INSERT INTO staff (company_id, name, email, timezone, working_hours, feed_revision, "
            "feed_changed_at, created_at) VALUES (:c, 'Ana', 'ana@example.test', 'UTC', '{}', 1, "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id"), {"c": company_id}).scalar_one()
    # Every byte value, and far past the size at which PostgreSQL compresses (TOAST, ~2 kB).
    body = bytes(range(256)) * 1200 + "Zoë – 会议\r\n".encode() * 500
    with services.sessions.begin() as session:
        store_segment(session, f"{staff_id}:fam:r1", f"{staff_id}:fam", staff_id, body)
    cache = FeedCache(max_bytes=10_000_000)  # empty: the read goes to the database
    with Reads(services.engine, services.sessions) as reads:
        assert cache.stored_segment(reads, f"{staff_id}:fam:r1") == body
        assert cache.stored_segment(reads, f"{staff_id}:fam:r2") is None
    assert cache.memory.get(f"{staff_id}:fam:r1") == body  # kept in memory once read


def test_the_segment_body_is_compressed_with_lz4(postgres: Engine) -> None:
    assert _compression(postgres) == "l"  # the test database: create_all, with the model's DDL


@pytest.fixture
def migrated_postgres(postgres: Engine, empty_database_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_database_url)
    yield engine
    engine.dispose()


def test_migration_0017_sets_lz4_and_steps_back(migrated_postgres: Engine) -> None:
    upgrade_database(migrated_postgres)
    assert _compression(migrated_postgres) == "l"
    command.downgrade(alembic_config(migrated_postgres), "0016")
    assert _compression(migrated_postgres) == "p"
    command.upgrade(alembic_config(migrated_postgres), "0017")
    assert _compression(migrated_postgres) == "l"
