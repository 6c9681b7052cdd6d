"""Statements the store runs often: built once, and on SQLite run on the driver itself.

On a SQLite file every statement already runs whole on a thread of the store's
(``sqlite_threads``), but SQLAlchemy's execution layer still costs some 100 µs a
statement there (cache key, execution context, result metadata, row processing),
all of it holding the GIL the event loop needs: more than SQLite takes to find a
row by its key, and the most of a ``GET /v1/tasks/{guid}``. A :class:`Prepared`
statement is built once with ``bindparam`` placeholders, compiled once to SQLite's
text, and run on the thread's ``sqlite3`` connection: rows come back as named
tuples (a column's value is the attribute of its name, as on SQLAlchemy's rows;
booleans are SQLite's 0 and 1). Other databases run the same statement through
SQLAlchemy as usual.

Only plain values are bound (str, int, bool, None): no type's bind or result
processing is applied.
"""

from __future__ import annotations

import collections
import functools
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

Statement = sa.Select[Any] | sa.Insert | sa.Update | sa.Delete
"""What a Prepared holds: any statement the store runs."""


class Compiled:
    """A statement as SQLite text, the names of its parameters in order, and the type
    of its rows (None for a statement that returns none)."""

    __slots__ = ("defaults", "order", "row", "sql")

    def __init__(
        self, sql: str, order: tuple[str, ...], defaults: dict[str, Any], row: Any
    ) -> None:
        self.sql = sql
        self.order = order
        self.defaults = defaults
        self.row = row

    def parameters(self, params: Mapping[str, Any]) -> list[Any]:
        """The positional parameters of one run: ``params`` by name, else the
        statement's own bound values."""
        defaults = self.defaults
        return [params[name] if name in params else defaults[name] for name in self.order]

    def fetch(self, conn: sqlite3.Connection, parameters: Sequence[Any]) -> list[Any]:
        """Every row of one run (plain tuples if the statement was prepared so)."""
        rows = conn.execute(self.sql, parameters).fetchall()
        return rows if self.row is None else list(map(self.row._make, rows))

    def execute(self, conn: sqlite3.Connection, parameters: Sequence[Any]) -> int:
        """Run a statement that returns no rows; the number of rows it changed."""
        return conn.execute(self.sql, parameters).rowcount


def compile_sqlite(statement: Statement, dialect: Dialect, tuples: bool = False) -> Compiled:
    """``statement`` compiled for SQLite (an ``IN`` of a list: with that list's values);
    its rows plain tuples if ``tuples``, else named."""
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    row = None
    if isinstance(statement, sa.Select) and not tuples:
        row = _row_type(tuple(statement.selected_columns.keys()))
    return Compiled(compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params), row)


@functools.cache
def _row_type(names: tuple[str, ...]) -> Any:
    return collections.namedtuple("Row", names)


def driver(conn: Connection) -> sqlite3.Connection:
    """The ``sqlite3`` connection under a SQLAlchemy connection of the store's threads."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw


class Prepared:
    """A statement built once and run many times, its ``bindparam`` values given by
    name at each run; compiled for SQLite on first use there.

    A SELECT prepared with ``tuples`` gives plain tuples, columns in the order
    selected: for reads of very many rows, which plain tuples of strings and numbers
    keep out of the garbage collector's way (it stops tracking them), as named ones
    are not.
    """

    __slots__ = ("_sqlite", "statement", "tuples")

    def __init__(self, statement: Statement, tuples: bool = False) -> None:
        self.statement = statement
        self.tuples = tuples
        self._sqlite: Compiled | None = None

    def sqlite(self, dialect: Dialect) -> Compiled:
        """The statement as SQLite runs it."""
        if self._sqlite is None:
            self._sqlite = compile_sqlite(self.statement, dialect, self.tuples)
        return self._sqlite
