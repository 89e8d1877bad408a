"""Alembic's environment: migrate the connection landfall hands over, never one of its own.

:func:`landfall.results.database.upgrade` holds that connection inside a transaction that
also holds the database's migration lock, so no other process migrates meanwhile.
"""

from __future__ import annotations

from alembic import context

from landfall.results.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the results database is migrated by landfall (landfall.results.database.upgrade), "
        "not by the alembic command"
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite alters a table by copying it; Alembic's batch mode does that for it.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
