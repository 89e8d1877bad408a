"""Alembic migrations of the results database (run by :mod:`landfall.results.database`).

A package, so that a wheel ships them. To add one: write ``versions/NNNN_what.py`` with
``revision = "NNNN"`` and ``down_revision`` the previous one, change
:mod:`landfall.results.schema` to match, and run
``tests/integration/test_results_migrations.py``.
"""
