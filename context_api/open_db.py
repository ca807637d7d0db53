"""Opening a database that must already be Arcpoint's, for commands that read (and at most
append their own traces): they never create a file and never add tables to a foreign one.

`Store(path)` creates and migrates, which is right for commands that produce data (demo, loop,
ingest, eval) and wrong for `ask`, `chat`, `models`, `alerts` and `traces`: pointed at the wrong
file, they used to turn an empty file into a database or add Arcpoint's tables to someone
else's. An older Arcpoint file is still upgraded, as every Arcpoint command does, so it stays
usable; only files that are Arcpoint's are ever changed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from context_api import schema
from context_api.store import Store


class NotAnArcpointDatabase(Exception):
    """The path is missing, not SQLite, not Arcpoint's, or from a newer Arcpoint."""


def arcpoint_schema_version(path: str | Path) -> int:
    """The file's Arcpoint schema version, read without creating or changing anything.

    Raises `NotAnArcpointDatabase` (with a message for the user) when there is no such file, it
    is not SQLite, or it holds no Arcpoint schema.
    """
    p = Path(path)
    if not p.is_file():
        raise NotAnArcpointDatabase(f"there is no database at {p}")
    if p.stat().st_size == 0:
        raise NotAnArcpointDatabase(f"{p} is an empty file, not an Arcpoint database")
    try:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise NotAnArcpointDatabase(f"cannot open {p}: {exc}") from None
    try:
        version = schema.current_version(conn)
    except sqlite3.DatabaseError as exc:
        raise NotAnArcpointDatabase(f"{p} is not a SQLite database ({exc})") from None
    finally:
        conn.close()
    if version == 0:
        raise NotAnArcpointDatabase(
            f"{p} is not an Arcpoint database (it has no Arcpoint schema); nothing was changed"
        )
    if version > schema.LATEST_VERSION:
        raise NotAnArcpointDatabase(
            f"{p} has schema version {version}, newer than the {schema.LATEST_VERSION} this "
            "Arcpoint knows; upgrade Arcpoint"
        )
    return version


def open_existing(path: str | Path, **store_options: Any) -> Store:
    """A `Store` on an existing Arcpoint file (upgraded if older); never creates one.

    Raises `NotAnArcpointDatabase` otherwise, before anything is written.
    """
    if str(path) == ":memory:":
        return Store(path, **store_options)
    arcpoint_schema_version(path)
    try:
        return Store(path, **store_options)
    except (sqlite3.Error, schema.SchemaTooNewError, RuntimeError) as exc:
        raise NotAnArcpointDatabase(f"cannot open {path}: {exc}") from None
