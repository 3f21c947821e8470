"""Whole-system tests: subprocess servers, browsers, load, fuzzing, faults and the worker fleet."""
