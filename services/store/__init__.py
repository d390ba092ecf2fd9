"""Persistent store of generation jobs: what buttons point at, and what survives a restart.

``engine`` (URLs, connections), ``columns`` (types), ``records`` (what callers get), ``schema``
(the tables now), ``migrations`` (how every older database gets there), one repository per table
(``generations``, ``guild_settings``, ``meta``, ``api_attempts``, ``budgets``), and ``Store``,
which ties them together.
"""

from services.store.engine import make_engine, normalise_database_url
from services.store.migrations import (
    SCHEMA_VERSION,
    MigrationError,
    SchemaTooNewError,
    current_version,
    migrate,
)
from services.store.records import (
    UNFINISHED,
    ApiAttemptRecord,
    Budgets,
    Generation,
    GenerationKind,
    GenerationStatus,
    NewApiAttempt,
    NewGeneration,
)
from services.store.store import Store

__all__ = [
    "SCHEMA_VERSION",
    "UNFINISHED",
    "ApiAttemptRecord",
    "Budgets",
    "Generation",
    "GenerationKind",
    "GenerationStatus",
    "MigrationError",
    "NewApiAttempt",
    "NewGeneration",
    "SchemaTooNewError",
    "Store",
    "current_version",
    "make_engine",
    "migrate",
    "normalise_database_url",
]
