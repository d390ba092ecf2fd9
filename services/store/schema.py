"""The tables as the latest migration leaves them: what the repositories query.

Written out once, in full. Never used to create tables: ``migrations/`` does that, and a test
checks that a migrated database and these definitions agree column for column.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from services.store.columns import Id, IdList, ParametersJSON, TextList, UTCDateTime
from services.store.records import MODEL_ID_MAX

metadata = MetaData()

generations = Table(
    "generations",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("parent_id", Id, ForeignKey("generations.id", ondelete="SET NULL")),
    Column("kind", String(16), nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("guild_id", BigInteger),
    Column("channel_id", BigInteger, nullable=False),
    Column("thread_id", BigInteger),
    Column("card_channel_id", BigInteger),
    Column("card_message_id", BigInteger),
    # The database's default is the one model there was before jobs named theirs (v0004); the
    # store always writes the job's own, so a later DEFAULT_MODEL does not change this.
    Column("model", String(MODEL_ID_MAX), nullable=False, server_default="flux/dev/image-to-image"),
    # The parameters asked for, as JSON (so a new knob needs no migration); ``seed`` below is
    # the seed the API returned.
    Column("parameters", ParametersJSON, nullable=False),
    Column("seed", BigInteger),
    Column("reference_url", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("result_message_ids", IdList),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("inference_seconds", Float),
    Column("nsfw_withheld", Integer, nullable=False, server_default="0"),
    Column("cancelled_by", BigInteger),
    Column("upload_limit", BigInteger),
    # The result image this job's reference is (v0005): generation and index from 0; NULL
    # means the member's upload on the job card.
    Column("source_id", Id),  # no foreign key: see the migration
    Column("source_image", Integer),
    # Set when a member deleted the result (Delete button); /history leaves it out.
    Column("deleted_at", UTCDateTime),
    Column("deleted_by", BigInteger),
    # /edit's second and third pictures, re-hosted on the card after the first (v0006).
    Column("extra_reference_urls", TextList),
    # A reference that is neither on the card nor a result image: a copy fitted to the model's
    # input limits, posted in the results thread (v0006).
    Column("reference_channel_id", BigInteger),
    Column("reference_message_id", BigInteger),
    Index("ix_generations_user_created", "user_id", "created_at"),
    Index("ix_generations_guild_created", "guild_id", "created_at"),
    Index("ix_generations_card", "card_message_id"),
    Index("ix_generations_status", "status"),
    sqlite_autoincrement=True,
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)

guild_settings = Table(
    "guild_settings",
    metadata,
    Column("guild_id", BigInteger, primary_key=True, autoincrement=False),
    Column("unfiltered_in_nsfw", Boolean, nullable=False, server_default="0"),
    Column("open_rerolls", Boolean, nullable=False, server_default="0"),
    Column("blocked_terms", Text),
    # The models members may use, a JSON list; NULL: every model the operator enabled (v0006).
    Column("allowed_models", TextList),
    Column("updated_by", BigInteger),
    Column("updated_at", UTCDateTime),
)
