"""The results database: batches, their runs, stage timings and figures (SQLAlchemy Core).

SQLite by default, PostgreSQL by config (``results_db.url``). One engine, opened by
:func:`open_results_db` (which also migrates the schema), serves two sides:

- :class:`RunRecorder` (:mod:`.recorder`) writes what the reporter and the API learn
  about runs, every write idempotent;
- :class:`RunHistory` (:mod:`.history`) reads runs, batches, history pages, the status
  page's figures (:mod:`.metrics`, computed in SQL) and the reporter's gauges.

The tables are declared in :mod:`.schema` and made by the Alembic migrations in
:mod:`.migrations`, applied by :mod:`.database`.
"""

from landfall.results.database import open_results_db
from landfall.results.history import BatchPage, RunHistory
from landfall.results.recorder import RunRecorder
from landfall.results.schema import RUN_STATUSES, RunKey

__all__ = ["RUN_STATUSES", "BatchPage", "RunHistory", "RunKey", "RunRecorder", "open_results_db"]
