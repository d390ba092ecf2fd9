"""Describe a schema as plain data, from a live database or from Table definitions, to compare."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Dialect, MetaData, inspect
from sqlalchemy.types import TypeEngine

#: Spellings that differ between what SQLAlchemy emits and what a database reflects.
_SAME_TYPE = {"DOUBLE PRECISION": "FLOAT"}
_SAME_DEFAULT = {"false": "0", "true": "1"}


def _type(type_: TypeEngine[Any], dialect: Dialect) -> str:
    name = str(type_.compile(dialect=dialect))
    return _SAME_TYPE.get(name, name)


def _default(default: str | None) -> str | None:
    if default is None or default.startswith("nextval("):  # PostgreSQL's serial: autoincrement
        return None
    value = default.split("::")[0].strip("'\"")  # PostgreSQL adds a cast
    return _SAME_DEFAULT.get(value, value)


def describe_database(conn: Connection) -> dict[str, Any]:
    inspector = inspect(conn)
    return {
        name: {
            "columns": {
                c["name"]: (_type(c["type"], conn.dialect), c["nullable"], _default(c["default"]))
                for c in inspector.get_columns(name)
            },
            "primary_key": tuple(inspector.get_pk_constraint(name)["constrained_columns"]),
            "indexes": {
                str(i["name"]): tuple(i["column_names"]) for i in inspector.get_indexes(name)
            },
            "foreign_keys": {
                (
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    fk["options"].get("ondelete"),
                )
                for fk in inspector.get_foreign_keys(name)
            },
        }
        for name in inspector.get_table_names()
        if name != "schema_version"
    }


def describe_metadata(metadata: MetaData, dialect: Dialect) -> dict[str, Any]:
    return {
        table.name: {
            "columns": {
                c.name: (
                    _type(c.type, dialect),
                    c.nullable,
                    _default(str(c.server_default.arg) if c.server_default else None),  # type: ignore[attr-defined]
                )
                for c in table.columns
            },
            "primary_key": tuple(c.name for c in table.primary_key.columns),
            "indexes": {str(i.name): tuple(c.name for c in i.columns) for i in table.indexes},
            "foreign_keys": {
                (
                    tuple(fk.column_keys),
                    fk.referred_table.name,
                    tuple(e.column.name for e in fk.elements),
                    fk.ondelete,
                )
                for fk in table.foreign_key_constraints
            },
        }
        for table in metadata.sorted_tables
    }
