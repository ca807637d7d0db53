"""Where the graphs keep their checkpoints: LangGraph's SQLite saver on the Arcpoint database
itself (so a chat thread or a monitor pass waiting for an approval survives the process), or
memory for an in-memory store. A graph object owns the connection it opens and closes it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


class CheckpointOwner:
    """Opens a checkpointer for a graph and closes it with the graph (`with` or `close()`)."""

    _conn: sqlite3.Connection | None = None
    checkpointer: Any = None

    def _open_checkpointer(self, path: str | Path | None) -> Any:
        """A SQLite saver on `path`, memory for ":memory:", none for None."""
        if path is None:
            self.checkpointer = None
        elif str(path) == ":memory:":
            from langgraph.checkpoint.memory import InMemorySaver

            self.checkpointer = InMemorySaver()
        else:
            from langgraph.checkpoint.sqlite import SqliteSaver

            self._conn = sqlite3.connect(str(path), check_same_thread=False)
            self.checkpointer = SqliteSaver(self._conn)
            self.checkpointer.setup()
        return self.checkpointer

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
