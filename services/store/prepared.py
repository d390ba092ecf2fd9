"""The job path's statements, compiled once and run on the driver's cursor (issue 10).

A statement through ``Connection.execute`` cost 83–113 µs of CPU (SQLite, warm), of which the
driver's own call took about 20: the rest was SQLAlchemy's cache key, execution context, result
metadata and event checks, for each of the seventeen statements a job runs. Here a statement
built once is compiled once per dialect and set of parameter names; each execution converts its
values and rows with the column types' own processors and hands back a ``Result`` like
``execute``'s (26–45 µs). The connection, its transaction and its errors stay SQLAlchemy's:
only the execution in between is ours.

For statements built once (module constants): a plan lives as long as its statement.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, Executable
from sqlalchemy.engine import Result
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

from services.store.engine import LoopAsyncConnection, WaitOffLoop

_Processor = Callable[[Any], Any] | None
_NO_COLUMNS = SimpleResultMetaData(())


@dataclass(slots=True)
class _Plan:
    sql: str
    #: The driver's positional parameters: each one's name and type processor.
    binds: tuple[tuple[str, _Processor], ...]
    #: Values compiled into the statement (literals, ``IN`` lists), by name.
    constants: Mapping[str, Any]
    #: The result columns' names; ``None`` for a statement without rows.
    metadata: SimpleResultMetaData | None
    #: The result columns' types; their processors, once the driver has said what it returns.
    types: tuple[TypeEngine[Any], ...]
    dialect: Dialect
    results: tuple[_Processor, ...] | None = None

    def run(self, connection: Connection, parameters: Mapping[str, Any]) -> Result[Any]:
        """The statement on ``connection``'s driver cursor, in its transaction (begun as
        ``execute`` would have), failures raised as ``execute`` raises them."""
        if not connection.in_transaction():
            connection.begin()
        values = {**self.constants, **parameters}
        arguments = tuple(
            values[name] if process is None else process(values[name])
            for name, process in self.binds
        )
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self.sql, arguments)
            rows = cursor.fetchall() if self.metadata is not None else []
            if self.results is None and self.metadata is not None:
                self.results = self._result_processors(cursor.description)
        except WaitOffLoop:  # not a failure: ``execute`` makes the call again in a greenlet
            raise
        except Exception as error:
            connection._handle_dbapi_exception(error, self.sql, arguments, cursor, None)
        finally:
            cursor.close()
        if self.metadata is None:
            return IteratorResult(_NO_COLUMNS, iter(()))
        processors = self.results
        if processors is not None and any(processors):
            rows = [
                tuple(
                    value if process is None else process(value)
                    for process, value in zip(processors, row, strict=True)
                )
                for row in rows
            ]
        return IteratorResult(self.metadata, iter(rows))

    def _result_processors(self, description: Sequence[Any]) -> tuple[_Processor, ...]:
        dialect = self.dialect
        return tuple(
            kind.dialect_impl(dialect).result_processor(dialect, column[1])
            for kind, column in zip(self.types, description, strict=True)
        )


_PLANS: weakref.WeakKeyDictionary[Executable, dict[tuple[str, frozenset[str]], _Plan]] = (
    weakref.WeakKeyDictionary()
)


def _plan(statement: Executable, dialect: Dialect, names: frozenset[str]) -> _Plan:
    plans = _PLANS.get(statement)
    if plans is None:
        plans = _PLANS[statement] = {}
    key = (dialect.name, names)
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = _compile(statement, dialect, names)
    return plan


def _compile(statement: Executable, dialect: Dialect, names: frozenset[str]) -> _Plan:
    compiled = statement.compile(dialect=dialect, column_keys=sorted(names))  # type: ignore[attr-defined]
    assert isinstance(compiled, SQLCompiler)
    # ``IN`` lists are expanded at each execution by SQLAlchemy: ours are constants, so once.
    expanded = compiled.construct_expanded_state(dict.fromkeys(names))
    assert expanded.positiontup is not None, "a driver with positional parameters"
    processors: dict[str, Any] = {**compiled._bind_processors, **expanded.processors}
    columns = compiled._result_columns
    return _Plan(
        sql=expanded.statement,
        binds=tuple((name, processors.get(name)) for name in expanded.positiontup),
        constants={k: v for k, v in expanded.parameters.items() if k not in names},
        metadata=SimpleResultMetaData([c.keyname for c in columns]) if columns else None,
        types=tuple(c.type for c in columns),
        dialect=dialect,
    )


async def execute(
    conn: AsyncConnection, statement: Executable, parameters: Mapping[str, Any] | None = None
) -> Result[Any]:
    """``await conn.execute(statement, parameters)``, cheaper, for a statement built once."""
    connection = conn.sync_connection
    assert connection is not None, "a started connection"
    values = parameters or {}
    plan = _plan(statement, connection.dialect, frozenset(values))
    if isinstance(conn, LoopAsyncConnection):  # SQLite: a plain call unless it must wait
        return await conn.run_one_statement(plan.run, values)
    return await conn.run_sync(plan.run, values)
