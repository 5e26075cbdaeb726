"""Opening an MLflow store: a new SQLite store's schema built aside and moved into place, one-line errors."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable

from kdtune.errors import KdtuneError
from kdtune.urls import sqlite_path

log = logging.getLogger(__name__)
def new_sqlite_file(uri: str) -> bool:
    """Whether ``uri`` names a SQLite file that does not exist yet (or is empty); if so, it is created
    here, which checks that it can be written (``KdtuneError`` otherwise)."""
    path = sqlite_path(uri)
    if path is None or str(path) in ("", ":memory:") or (path.exists() and path.stat().st_size > 0):
        return False

    def create() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("BEGIN IMMEDIATE")  # takes the write lock: fails at once where the file is read-only
            db.rollback()

    raise_unopenable(uri, create)
    return True


def build_schema_aside(uri: str) -> None:
    """MLflow's schema for a new SQLite store, built in a temporary file beside it and then moved into place:
    a process killed during the migrations (about a second) leaves the store empty, to be built again by
    the next run, never half-migrated (which MLflow cannot open: "table ... already exists"). Under a lock,
    so that of two processes creating the same store only the first moves its file into place."""
    from mlflow.tracking import MlflowClient

    from kdtune.cache import locked

    quiet_migrations()
    path = sqlite_path(uri)
    if path is None:
        raise ValueError(f"build_schema_aside needs a sqlite:/// URI, got {uri}")
    aside = path.with_name(f".{path.name}.{os.getpid()}.schema")
    aside.unlink(missing_ok=True)
    try:
        MlflowClient(tracking_uri=f"sqlite:///{aside}").search_experiments(max_results=1)  # runs the migrations
        with locked(path.with_name(f".{path.name}"), what="the MLflow store"):
            if not path.exists() or path.stat().st_size == 0:
                os.replace(aside, path)
    finally:
        aside.unlink(missing_ok=True)


def quiet_migrations() -> None:
    for noisy in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def raise_unopenable(uri: str, open_store: Callable[[], None]) -> None:
    """Run ``open_store``; any error becomes one ``KdtuneError`` line naming the store and the fix."""
    try:
        open_store()
    except Exception as err:  # noqa: BLE001 - any store problem is the user's to fix
        from kdtune.store import redact

        raise KdtuneError(
            f"cannot open the MLflow store {redact(uri)} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "check tracking.uri / MLFLOW_TRACKING_URI"
        ) from None
