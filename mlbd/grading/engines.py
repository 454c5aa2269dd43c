"""One SQLAlchemy engine per gradebook URL for a whole grading run.

nbgrader opens a new ``Gradebook`` (hence a new engine) in every preprocessor of every notebook,
and SQLAlchemy caches compiled SQL per engine: without sharing, the scorer recompiles the same
queries for every submission (about a quarter of its time). ``Gradebook.close`` still disposes
the engine's connection pool after each use, so nothing stays open between steps.
"""
from __future__ import annotations

import contextlib

import nbgrader.api


@contextlib.contextmanager
def shared_engines():
    original = nbgrader.api.create_engine
    engines: dict = {}

    def create_engine(url, *args, **kwargs):
        key = (str(url), repr(sorted(kwargs.items())))
        if key not in engines:
            engines[key] = original(url, *args, **kwargs)
        return engines[key]

    nbgrader.api.create_engine = create_engine
    try:
        yield
    finally:
        nbgrader.api.create_engine = original
        for engine in engines.values():
            engine.dispose()
