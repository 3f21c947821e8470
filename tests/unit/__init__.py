"""Fast tests: no servers, no database files; `pytest tests/unit` runs in under a minute."""
