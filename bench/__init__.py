"""Benchmarks of calsync, run by `calsync bench ...`; each compares against a baseline from the same run."""
