"""Several references per job, fitted copies, and the models a guild allows.

``generations.extra_reference_urls`` holds the signed URLs of ``/edit``'s second and third
pictures (JSON list; NULL when there are none), re-hosted on the job card after the first, so
later jobs re-fetch them from the card like the first. ``reference_channel_id`` and
``reference_message_id`` name the message holding a job's reference when it is neither on the
card nor a result image: a copy fitted to a model's input limits (Upscale of a picture over
4.7 MB). ``guild_settings.allowed_models`` is the JSON list of models a guild's members may use;
NULL means every model the operator enabled.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Connection, Text, text
from sqlalchemy.types import TypeEngine


def upgrade(conn: Connection) -> None:
    dialect = conn.dialect

    def type_of(type_: TypeEngine[Any]) -> str:
        return str(type_.compile(dialect=dialect))

    for column, type_ in (
        ("extra_reference_urls", Text()),
        ("reference_channel_id", BigInteger()),
        ("reference_message_id", BigInteger()),
    ):
        conn.execute(text(f"ALTER TABLE generations ADD COLUMN {column} {type_of(type_)}"))
    conn.execute(text(f"ALTER TABLE guild_settings ADD COLUMN allowed_models {type_of(Text())}"))
