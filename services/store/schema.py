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
    # What the job is expected to cost while it is not settled (admission counts it; v0007).
    Column("estimate_usd_nanos", BigInteger),
    # The queue (v0008): the worker whose lease holds a running job, the member's turn it
    # started with and the one before, the back-off epoch it started in, and the API's answer
    # (JSON) once it came, so a crash after the call re-delivers instead of calling again.
    Column("claimed_by", String(64)),
    Column("queue_turn", BigInteger),
    Column("served_before", BigInteger),
    Column("throttle_epoch", Integer),
    Column("answer", Text),
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

#: One row per HTTP attempt at the API: what it cost, and the ids that trace it (v0007).
api_attempts = Table(
    "api_attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("generation_id", Id, ForeignKey("generations.id", ondelete="CASCADE"), nullable=False),
    # The job's run (its ``attempts`` count when it started) and the HTTP attempt within it.
    Column("run", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    # Copied from the job, so budgets and stats sum one table.
    Column("user_id", BigInteger, nullable=False),
    Column("guild_id", BigInteger),
    Column("model", String(MODEL_ID_MAX), nullable=False),
    Column("client_request_id", String(128)),
    Column("inference_id", String(128)),
    Column("status", Integer),
    Column("outcome", String(64), nullable=False),
    Column("credits", BigInteger),
    # Nano-dollars counted against budgets: what the API said, or the job's estimate when an
    # attempt that may have been billed said nothing (``usd_estimated``).
    Column("usd_nanos", BigInteger, nullable=False, server_default="0"),
    Column("usd_estimated", Boolean, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ux_api_attempts_attempt", "generation_id", "run", "attempt", unique=True),
    Index("ix_api_attempts_created", "created_at"),
    Index("ix_api_attempts_guild_created", "guild_id", "created_at"),
)

#: Daily budgets a guild's admins set: ``user_id`` 0 is the guild's own row (its total and each
#: member's default); another ``user_id`` is that member's own budget (v0007).
budgets = Table(
    "budgets",
    metadata,
    Column("guild_id", BigInteger, primary_key=True, autoincrement=False),
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("daily_usd_nanos", BigInteger),
    Column("member_daily_usd_nanos", BigInteger),
    Column("updated_by", BigInteger),
    Column("updated_at", UTCDateTime),
)

#: Processes running jobs; a heartbeat older than the lease means the process is gone (v0008).
workers = Table(
    "workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("description", String(200), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
)

#: Each member's last turn: the member served least recently goes first (DESIGN §7; v0008).
queue_members = Table(
    "queue_members",
    metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("last_served", BigInteger, nullable=False),
)

#: One row (``id`` 1): the turn counter, the live concurrency (NULL: no 429 yet, the settings'
#: cap), the back-off after 429s and the out-of-credits hold, for the whole bot (v0008).
queue_state = Table(
    "queue_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("turn", BigInteger, nullable=False),
    Column("live_limit", Integer),
    Column("epoch", Integer, nullable=False),
    Column("strikes", Integer, nullable=False),
    Column("resume_at", UTCDateTime),
    Column("credit_hold", Boolean, nullable=False),
)
