"""Opening the results database and bringing its schema to this landfall's (Alembic).

Every process that opens the database upgrades it if it must (``landfall up`` does it
once before starting any service), so migrating must be safe when processes start
together: the upgrade runs inside a transaction that first takes the database's write
lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock). The
second process waits, then finds the schema current and does nothing.

A database made before landfall had migrations (the tables, no ``alembic_version``) is
checked against revision 0001, which is that schema, and stamped at it rather than
created again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any, Self

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from landfall.errors import ConfigError, RetryableError
from landfall.redact import redact

__all__ = [
    "SUPPORTED_DIALECTS",
    "ResultsClient",
    "head_revision",
    "open_results_db",
    "upgrade",
]

MIGRATIONS = "landfall.results:migrations"
# The schema landfall made before it had migrations.
FIRST_REVISION = "0001"
SUPPORTED_DIALECTS = ("sqlite", "postgresql")
# Which advisory lock the PostgreSQL upgrade holds: any constant of our own.
_PG_LOCK_KEY = 0x6C616E64  # "land"
_SQLITE_BUSY_TIMEOUT_S = 30


def open_results_db(url: str) -> Engine:
    """An engine on the results database at ``url``, its schema upgraded to this code's.

    A URL that cannot work is a :class:`ConfigError` naming ``results_db.url``; a
    database that cannot be reached now is a :class:`RetryableError`. Neither message
    holds the URL's password.
    """
    safe = safe_url(url)
    connect_args: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # The reporter and the API write from separate processes: wait for the lock.
        connect_args["timeout"] = _SQLITE_BUSY_TIMEOUT_S
    try:
        engine = create_engine(url, connect_args=connect_args)
    except (SQLAlchemyError, ImportError) as exc:
        # No engine for this URL (an unknown dialect, a driver that does not load):
        # a configuration to fix, not a fault that a retry could heal.
        raise ConfigError(
            f"results database {safe} (results_db.url) cannot be used: "
            f"{redact(f'{type(exc).__name__}: {exc}')}"
        ) from None
    if engine.dialect.name not in SUPPORTED_DIALECTS:
        engine.dispose()
        raise ConfigError(
            f"results database {safe} (results_db.url): dialect {engine.dialect.name!r} is "
            f"not supported (use {' or '.join(SUPPORTED_DIALECTS)})"
        )
    try:
        upgrade(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise RetryableError(f"results database {safe} unusable: {redact(str(exc))}") from exc
    except BaseException:
        engine.dispose()
        raise
    return engine


class ResultsClient:
    """Works on the results database through one engine, its own or a shared one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> Self:
        """On an engine of its own (see :func:`open_results_db`); :meth:`close` it."""
        return cls(open_results_db(url))

    def close(self) -> None:
        """Release the engine's connections (those of every client sharing it)."""
        self.engine.dispose()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision; at most one process at a time does it."""
    head = head_revision()
    with engine.connect() as conn:
        if _current_revision(conn) == head:
            return  # the common case, without taking the write lock
    with _migration_lock(engine) as conn:
        current = _current_revision(conn)  # again: another process may have just done it
        if current == head:
            return
        config = _config(conn)
        if current is None and set(inspect(conn).get_table_names()) & _first_revision_tables():
            _check_premigration_schema(conn, safe_url(str(engine.url)))
            command.stamp(config, FIRST_REVISION)
        elif current is not None and current not in _known_revisions():
            raise ConfigError(
                f"results database {safe_url(str(engine.url))} (results_db.url) is at schema "
                f"revision {current}, which this landfall does not know (newest: {head}); "
                "it was upgraded by a newer landfall: run that one"
            )
        command.upgrade(config, "head")


@cache
def head_revision() -> str:
    """The newest schema revision this landfall ships."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the results database migrations have no head"
    return head


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return redact(url)


def _config(conn: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    if conn is not None:
        config.attributes["connection"] = conn  # env.py migrates this one
    return config


@cache
def _known_revisions() -> frozenset[str]:
    return frozenset(s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions())


def _current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the lock every migrating process takes."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
            yield conn
        return
    # pysqlite begins a transaction only before a write, not before CREATE TABLE: two
    # processes would both find no table, and the second CREATE fail ("already
    # exists"). So here the driver begins nothing and the transaction starts with
    # BEGIN IMMEDIATE, which takes the write lock at once (or waits for it).
    locking = create_engine(
        engine.url, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S}, poolclass=NullPool
    )

    @event.listens_for(locking, "connect")
    def _no_implicit_transactions(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(locking, "begin")
    def _begin_immediate(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with locking.begin() as conn:
            yield conn
    finally:
        locking.dispose()


def _check_premigration_schema(conn: Connection, safe: str) -> None:
    """Refuse to stamp a database whose tables are not those of revision 0001."""
    expected = _first_revision_columns()
    found = inspect(conn)
    present = set(found.get_table_names())
    missing: list[str] = []
    for table, columns in sorted(expected.items()):
        if table not in present:
            missing.append(table)
            continue
        have = {c["name"] for c in found.get_columns(table)}
        missing += [f"{table}.{column}" for column in sorted(columns - have)]
    if missing:
        raise ConfigError(
            f"results database {safe} (results_db.url) was made by an older landfall "
            f"whose schema this one cannot migrate (missing: {', '.join(missing)}); "
            "move it aside and a new one is created"
        )


def _first_revision_tables() -> set[str]:
    return set(_first_revision_columns())


@cache
def _first_revision_columns() -> dict[str, frozenset[str]]:
    """Each table's columns as revision 0001 makes them, made in a scratch database."""
    scratch = create_engine("sqlite://")
    try:
        with scratch.begin() as conn:
            command.upgrade(_config(conn), FIRST_REVISION)
            found = inspect(conn)
            return {
                table: frozenset(c["name"] for c in found.get_columns(table))
                for table in found.get_table_names()
                if table != "alembic_version"
            }
    finally:
        scratch.dispose()
