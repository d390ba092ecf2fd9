"""Settings, read once in ``main()`` from the environment and ``.env`` and passed down."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.costs import MAX_USD, parse_prices
from services.model_registry import (
    DEFAULT_EDIT_MODEL,
    DEFAULT_MODEL,
    DEFAULT_UPSCALE_MODEL,
    REGISTRY,
    ModelKind,
    models_of_kind,
)
from services.parameters import STRENGTH

#: Where an operator gets each required secret; shown when one is missing.
WHERE_TO_GET = {
    "DISCORD_TOKEN": "https://discord.com/developers/applications -> your app -> Bot -> Reset Token",  # noqa: E501
    "AIMLAPI_KEY": "https://aimlapi.com/app/keys -> Create API Key",
}


class Settings(BaseSettings):
    """Every knob of the bot. Names match ``.env.example``; the README lists them all."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    discord_token: SecretStr = Field(min_length=1)
    aimlapi_key: SecretStr = Field(min_length=1)
    aimlapi_base_url: AnyHttpUrl = AnyHttpUrl("https://api.aimlapi.com")
    #: The models guilds may use (a comma list in the environment); empty = every known one.
    #: Read before the three below, which must each be one of them.
    enabled_models: Annotated[tuple[str, ...], NoDecode] = ()
    #: The model per kind of work: /imagine and variations, instruction edits, upscales.
    aimlapi_model: str = DEFAULT_MODEL
    edit_model: str = DEFAULT_EDIT_MODEL
    upscale_model: str = DEFAULT_UPSCALE_MODEL
    database_url: str = "sqlite:///data/fluxbot.sqlite3"
    dev_guild_id: int | None = None
    max_concurrent_jobs: int = Field(default=4, ge=1, le=64)
    max_queued_per_user: int = Field(default=3, ge=1, le=100)
    max_input_megapixels: float = Field(default=1.0, gt=0, le=4.0)
    #: Overall deadline for one generation, retries included.
    api_deadline_seconds: float = Field(default=180.0, gt=0)
    job_timeout_seconds: float = Field(default=600.0, gt=0)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    #: A process silent this long (a crash, a SIGKILL) loses its running jobs to the others.
    job_lease_seconds: float = Field(default=30.0, ge=1, le=3600)
    #: How often an idle process looks for jobs stored by other processes.
    queue_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    #: One job card is edited at most this often; edits asked for meanwhile merge into one.
    card_edit_interval_seconds: float = Field(default=1.0, ge=0, le=60)
    #: Generations per member / per guild each UTC day; 0 = unlimited.
    user_daily_limit: int = Field(default=0, ge=0)
    guild_daily_limit: int = Field(default=0, ge=0)
    #: Strength of Vary (subtle) and Vary (strong) on a result image (DESIGN §8).
    vary_subtle_strength: float = Field(default=0.35, ge=STRENGTH.minimum, le=STRENGTH.maximum)
    vary_strong_strength: float = Field(default=0.7, ge=STRENGTH.minimum, le=STRENGTH.maximum)
    #: USD the whole bot may spend per UTC day; empty = no limit (DESIGN §10).
    bot_daily_budget_usd: Decimal | None = Field(default=None, ge=0, le=MAX_USD)
    #: ``model=price,...``: USD per image (up to 1 MP) instead of the registry's estimate.
    model_prices_usd: str = ""
    #: Warn (log and admin channel) when the API balance is below this; 0 = never.
    low_balance_usd: Decimal = Field(default=Decimal(5), ge=0, le=MAX_USD)
    #: A channel for operator notes (low balance, out of credits); empty = log only.
    admin_channel_id: int | None = None
    log_level: str = "INFO"
    #: Serve Prometheus metrics on this port (0: any free port, for tests); unset: no server.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    #: Discord shards the whole bot runs on (DESIGN §9); unset: one gateway connection, unsharded.
    shard_count: int | None = Field(default=None, ge=1)
    #: The shards of ``shard_count`` this process connects (a comma list); unset: all of them.
    shard_ids: Annotated[tuple[int, ...] | None, NoDecode] = None
    #: Run jobs and post results only: log in over REST, never connect to the gateway.
    worker_only: bool = False

    @field_validator(
        "dev_guild_id",
        "admin_channel_id",
        "bot_daily_budget_usd",
        "metrics_port",
        "shard_count",
        "shard_ids",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("enabled_models", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("enabled_models")
    @classmethod
    def _known_models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in REGISTRY]
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a model "
                f"fluxbot knows; known: {', '.join(REGISTRY)}"
            )
        return tuple(dict.fromkeys(value)) or tuple(REGISTRY)

    @field_validator("aimlapi_model", "edit_model", "upscale_model")
    @classmethod
    def _model_for_its_kind(cls, value: str, info: ValidationInfo) -> str:
        kind = _KIND_OF_SETTING[info.field_name or ""]
        fitting = models_of_kind(kind)
        if value not in fitting:
            known = ", ".join(fitting)
            raise ValueError(f"must be one of the {kind} models fluxbot knows: {known}")
        enabled = info.data.get("enabled_models")
        if enabled is not None and value not in enabled:
            raise ValueError(f"{value} is not in ENABLED_MODELS; add it there or pick another")
        return value

    @field_validator("model_prices_usd")
    @classmethod
    def _known_prices(cls, value: str) -> str:
        parse_prices(value)  # ValueError in plain words
        return value

    @property
    def model_prices(self) -> dict[str, Decimal]:
        return parse_prices(self.model_prices_usd)

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _shard_list(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return [int(part) for part in value.split(",") if part.strip()] or None
            except ValueError:
                raise ValueError("must be shard numbers separated by commas, like 0,1") from None
        return value

    @field_validator("shard_ids")
    @classmethod
    def _shards_of_the_count(
        cls, value: tuple[int, ...] | None, info: ValidationInfo
    ) -> tuple[int, ...] | None:
        if value is None or "shard_count" not in info.data:  # a bad count is reported already
            return value
        count = info.data["shard_count"]
        if count is None:
            raise ValueError("needs SHARD_COUNT, the number of shards the whole bot runs on")
        wrong = [str(shard) for shard in value if not 0 <= shard < count]
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not a shard of "
                f"SHARD_COUNT={count}; shards are numbered 0 to {count - 1}"
            )
        return tuple(dict.fromkeys(value))

    @field_validator("worker_only")
    @classmethod
    def _worker_has_no_shards(cls, value: bool, info: ValidationInfo) -> bool:
        if value and (info.data.get("shard_count") or info.data.get("shard_ids")):
            raise ValueError(
                "a worker connects to no gateway, so it has no shards: leave SHARD_COUNT and "
                "SHARD_IDS empty, or set WORKER_ONLY=false"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value

    @property
    def model_for(self) -> dict[ModelKind, str]:
        """The model each kind of work runs on."""
        return {
            ModelKind.IMG2IMG: self.aimlapi_model,
            ModelKind.EDIT: self.edit_model,
            ModelKind.UPSCALE: self.upscale_model,
        }

    @property
    def api_base(self) -> str:
        return str(self.aimlapi_base_url).rstrip("/")


_KIND_OF_SETTING = {
    "aimlapi_model": ModelKind.IMG2IMG,
    "edit_model": ModelKind.EDIT,
    "upscale_model": ModelKind.UPSCALE,
}


class SettingsError(Exception):
    """Configuration that cannot start the bot, worded for an operator; one line per problem
    in ``problems``."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one readable message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_problems(exc), problems(exc)) from None


def problems(exc: ValidationError) -> list[str]:
    """One line per bad setting, naming it and never echoing its value."""
    found = []
    for error in exc.errors(include_input=False, include_url=False):
        name = str(error["loc"][0]).upper() if error["loc"] else "?"
        if error["type"] == "missing" or (name in WHERE_TO_GET and "short" in error["type"]):
            hint = WHERE_TO_GET.get(name, "see .env.example")
            found.append(f"{name} is missing. Get it at {hint}")
        else:
            message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
            found.append(f"{name}: {message}")
    return found


def describe_problems(exc: ValidationError) -> str:
    lines = ["fluxbot cannot start: its configuration is incomplete."]
    lines += [f"  - {problem}" for problem in problems(exc)]
    lines.append(
        "Put them in .env in the folder you start the bot from (copy .env.example), "
        "or in the environment."
    )
    return "\n".join(lines)
