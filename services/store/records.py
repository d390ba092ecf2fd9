"""What the store hands out: a generation job as accepted (``NewGeneration``) and as stored."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.model_registry import DEFAULT_MODEL
from services.parameters import GenerationParameters

#: Discord snowflakes are unsigned 64-bit in principle, signed 63-bit in practice (BIGINT fits).
Snowflake = Annotated[int, Field(ge=0, le=2**63 - 1)]
#: The longest model id the ``generations.model`` column holds.
MODEL_ID_MAX = 100
#: References after the first a job may have (``/edit``'s ``image2`` and ``image3``).
MAX_EXTRA_REFERENCES = 3


class GenerationKind(StrEnum):
    IMAGINE = "imagine"
    REROLL = "reroll"
    REMIX = "remix"
    #: A result image varied (Vary subtle/strong): its prompt, a new seed, a set strength.
    VARY = "vary"
    #: A result image used as the next input (Use as input: the Remix form).
    USE = "use"
    #: "Remix with fluxbot" on a message: like /imagine, the picture taken from that message.
    MESSAGE = "message"
    #: ``/edit``: instruction editing of one to three pictures re-hosted on the job card.
    EDIT = "edit"
    #: A result image edited by an instruction (the Edit button's form).
    EDIT_IMAGE = "edit-image"
    #: A result image upscaled (the Upscale button).
    UPSCALE = "upscale"


class GenerationStatus(StrEnum):
    #: Stored before the command is answered, while its picture is read and checked; no
    #: process claims it until it is queued (or it fails, if that process dies meanwhile).
    INTAKE = "intake"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


#: Jobs that still have to run (after a restart, in this order of priority: oldest first).
UNFINISHED = frozenset(
    {
        GenerationStatus.INTAKE,
        GenerationStatus.QUEUED,
        GenerationStatus.RUNNING,
        GenerationStatus.INTERRUPTED,
    }
)
#: Unfinished jobs that count against the per-member cap and budgets: a job in ``intake`` is
#: checked (and so counted) only as it is queued, in the admission transaction.
ADMITTED = UNFINISHED - {GenerationStatus.INTAKE}


class NewGeneration(BaseModel):
    """What is known when a job is accepted; validated as strictly as the slash command."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: GenerationKind
    parent_id: int | None = None
    user_id: Snowflake
    guild_id: Snowflake | None = None
    channel_id: Snowflake
    thread_id: Snowflake | None = None
    card_channel_id: Snowflake | None = None
    card_message_id: Snowflake | None = None
    #: The AI/ML API model id (``services.model_registry``) this job runs on.
    model: str = Field(default=DEFAULT_MODEL, min_length=1, max_length=MODEL_ID_MAX)
    parameters: GenerationParameters
    reference_url: str = Field(min_length=1)
    #: The second and third pictures of ``/edit`` (re-hosted on the card after the first, as
    #: ``reference-2``, ``reference-3``); their URLs are refreshed from the card like the first.
    extra_reference_urls: tuple[Annotated[str, Field(min_length=1)], ...] = Field(
        default=(), max_length=MAX_EXTRA_REFERENCES
    )
    #: Where the reference file is when it is neither on the card nor a result image itself: a
    #: copy fitted to the model's input limits, posted in the results thread (v0006).
    reference_channel_id: Snowflake | None = None
    reference_message_id: Snowflake | None = None
    #: The channel's upload limit as the interaction reported it (discord.py's guild cache only
    #: knows boost tiers), so results are fitted to what Discord will actually accept.
    upload_limit: int | None = Field(default=None, ge=1)
    #: The result image this job starts from (its generation, its index from 0); ``None`` when
    #: the reference is a member's picture re-hosted on the job card.
    source_id: int | None = None
    source_image: int | None = Field(default=None, ge=0)
    #: What the job is expected to cost, in nano-dollars; set by ``GenerationService.submit``.
    estimate_usd_nanos: int | None = Field(default=None, ge=0)

    @property
    def references(self) -> tuple[str, ...]:
        """Every reference URL, the first one first (what the model's rules count)."""
        return (self.reference_url, *self.extra_reference_urls)


class Generation(BaseModel):
    """One stored job. ``parameters.seed`` is the seed asked for; ``seed`` the one returned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    parent_id: int | None
    kind: GenerationKind
    user_id: int
    guild_id: int | None
    channel_id: int
    thread_id: int | None
    card_channel_id: int | None
    card_message_id: int | None
    model: str
    parameters: GenerationParameters
    seed: int | None
    reference_url: str
    extra_reference_urls: tuple[str, ...] = ()
    reference_channel_id: int | None = None
    reference_message_id: int | None = None
    status: GenerationStatus
    error: str | None
    result_message_ids: tuple[int, ...] = ()
    attempts: int = 0
    created_at: AwareDatetime
    started_at: AwareDatetime | None
    finished_at: AwareDatetime | None
    inference_seconds: float | None
    nsfw_withheld: int = 0
    cancelled_by: int | None = None
    upload_limit: int | None = None
    source_id: int | None = None
    source_image: int | None = None
    deleted_at: AwareDatetime | None = None
    deleted_by: int | None = None
    estimate_usd_nanos: int | None = None
    #: The queue's bookkeeping (``services.store.job_queue``): the worker holding the job while
    #: it runs, the member's turn it started with and the one before, its back-off epoch.
    claimed_by: str | None = None
    queue_turn: int | None = None
    served_before: int | None = None
    throttle_epoch: int | None = None
    #: The API's answer as JSON, once it came: a job answered but not posted is delivered again
    #: after a crash instead of being paid for twice.
    answer: str | None = None

    @property
    def references(self) -> tuple[str, ...]:
        """Every reference URL as last stored, the first one first."""
        return (self.reference_url, *self.extra_reference_urls)

    def follow_up(
        self,
        *,
        kind: GenerationKind,
        user_id: int,
        parameters: GenerationParameters,
        image: int | None = None,
        model: str | None = None,
    ) -> NewGeneration:
        """A reroll or remix: same place, card, references and model; new settings and asker.

        With ``image`` the reference becomes that one image of this generation's result (Vary,
        Use as input, Edit, Upscale); without it the references stay what they were. ``model``
        replaces the generation's own (Edit and Upscale run another model on the image).
        """
        source_id, source_image = (
            (self.source_id, self.source_image) if image is None else (self.id, image)
        )
        same_references = image is None
        return NewGeneration(
            parameters=parameters,
            kind=kind,
            parent_id=self.id,
            user_id=user_id,
            guild_id=self.guild_id,
            channel_id=self.channel_id,
            thread_id=self.thread_id,
            card_channel_id=self.card_channel_id,
            card_message_id=self.card_message_id,
            model=model or self.model,
            reference_url=self.reference_url,
            extra_reference_urls=self.extra_reference_urls if same_references else (),
            reference_channel_id=self.reference_channel_id if same_references else None,
            reference_message_id=self.reference_message_id if same_references else None,
            upload_limit=self.upload_limit,
            source_id=source_id,
            source_image=source_image,
        )


class NewApiAttempt(BaseModel):
    """One HTTP attempt at the API as it is recorded: who it was for, its ids and its cost."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    generation_id: int
    #: The job's run (its ``attempts`` count when this run started) and the attempt in it.
    run: int = Field(ge=0)
    attempt: int = Field(ge=1)
    user_id: Snowflake
    guild_id: Snowflake | None = None
    model: str = Field(min_length=1, max_length=MODEL_ID_MAX)
    client_request_id: str | None = Field(default=None, max_length=128)
    inference_id: str | None = Field(default=None, max_length=128)
    status: int | None = None
    outcome: str = Field(min_length=1, max_length=64)
    credits: int | None = Field(default=None, ge=0)
    #: What counts against budgets; ``usd_estimated`` when the API did not say.
    usd_nanos: int = Field(default=0, ge=0)
    usd_estimated: bool = False


class ApiAttemptRecord(NewApiAttempt):
    id: int
    created_at: AwareDatetime


class Budgets(BaseModel):
    """What a guild's admins allow per UTC day, in nano-dollars; None is no limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    guild_id: int
    #: The whole guild's spend.
    daily_usd_nanos: int | None = None
    #: Each member's spend, unless the member has a budget of their own.
    member_daily_usd_nanos: int | None = None
    #: Members with a budget of their own: user id -> nano-dollars.
    members: dict[int, int] = Field(default_factory=dict)

    def for_member(self, user_id: int) -> int | None:
        return self.members.get(user_id, self.member_daily_usd_nanos)
