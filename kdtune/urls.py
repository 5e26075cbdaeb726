"""Storage URLs, as SQLAlchemy, Optuna and MLflow take them: the file behind a SQLite one."""

from __future__ import annotations

from pathlib import Path

SQLITE = "sqlite:///"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///<path>`` URL (its query string dropped; absolute when the path starts with
    a fourth slash), or None for any other URL."""
    if not url.startswith(SQLITE):
        return None
    return Path(url.removeprefix(SQLITE).split("?", 1)[0])
