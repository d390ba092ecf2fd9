"""SQLite's way to make the changes its ``ALTER TABLE`` cannot (say, NOT NULL on a filled column).

The procedure of https://sqlite.org/lang_altertable.html#otheralter: build the new shape beside the
old table, copy every row, drop the old table, rename the new one, recreate the indexes. It needs
foreign keys off, which the migration runner sees to and checks afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import Connection, Index, MetaData, Table, column, insert, select, table, text


def rebuild_table(
    conn: Connection,
    build: Callable[[MetaData, str], Table],
    indexes: Callable[[Table], Iterable[Index]],
    name: str,
) -> None:
    """Rebuild table ``name`` as ``build(metadata, name)`` makes it, with ``indexes`` on it.

    ``build`` must name every foreign key to the table itself by the name it is given, and keep
    only columns the old table has (they are copied by name). An AUTOINCREMENT high-water mark
    is kept, so an id once handed out is never handed out again.
    """
    quote = conn.dialect.identifier_preparer.quote
    final = build(MetaData(), name)
    beside = build(MetaData(), f"{name}__rebuilt")
    names = [c.name for c in final.columns]
    old = table(name, *(column(n) for n in names))
    high_water = _sequence(conn, name)
    beside.create(conn)
    conn.execute(insert(beside).from_select(names, select(*old.c)))
    conn.execute(text(f"DROP TABLE {quote(name)}"))
    # SQLite (3.26+) also renames the references to it, its own foreign keys included.
    conn.execute(text(f"ALTER TABLE {quote(beside.name)} RENAME TO {quote(name)}"))
    copied = _sequence(conn, name)
    if high_water is not None and (copied is None or copied < high_water):
        conn.execute(text("DELETE FROM sqlite_sequence WHERE name = :name"), {"name": name})
        conn.execute(
            text("INSERT INTO sqlite_sequence (name, seq) VALUES (:name, :seq)"),
            {"name": name, "seq": high_water},
        )
    for index in indexes(final):
        index.create(conn)


def _sequence(conn: Connection, name: str) -> int | None:
    """The table's AUTOINCREMENT high-water mark, if it has one."""
    exists = conn.execute(
        text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'")
    ).first()
    if exists is None:
        return None
    seq = conn.execute(
        text("SELECT seq FROM sqlite_sequence WHERE name = :name"), {"name": name}
    ).scalar_one_or_none()
    return None if seq is None else int(seq)
