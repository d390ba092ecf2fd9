"""Settings, read once in ``main()`` from the environment and ``.env`` and passed down."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.model_registry import DEFAULT_MODEL, REGISTRY

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
    aimlapi_model: str = DEFAULT_MODEL
    database_url: str = "sqlite:///data/fluxbot.sqlite3"
    dev_guild_id: int | None = None
    max_concurrent_jobs: int = Field(default=4, ge=1, le=64)
    max_queued_per_user: int = Field(default=3, ge=1, le=100)
    max_input_megapixels: float = Field(default=1.0, gt=0, le=4.0)
    #: Overall deadline for one generation, retries included.
    api_deadline_seconds: float = Field(default=180.0, gt=0)
    job_timeout_seconds: float = Field(default=600.0, gt=0)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    #: Generations per member / per guild each UTC day; 0 = unlimited.
    user_daily_limit: int = Field(default=0, ge=0)
    guild_daily_limit: int = Field(default=0, ge=0)
    log_level: str = "INFO"
    #: Serve Prometheus metrics on this port (0: any free port, for tests); unset: no server.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    @field_validator("dev_guild_id", "metrics_port", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("aimlapi_model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in REGISTRY:
            raise ValueError(f"must be one of the models fluxbot knows: {', '.join(REGISTRY)}")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value

    @property
    def api_base(self) -> str:
        return str(self.aimlapi_base_url).rstrip("/")


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
            found.append(f"{name}: {error['msg']}")
    return found


def describe_problems(exc: ValidationError) -> str:
    lines = ["fluxbot cannot start: its configuration is incomplete."]
    lines += [f"  - {problem}" for problem in problems(exc)]
    lines.append(
        "Put them in .env in the folder you start the bot from (copy .env.example), "
        "or in the environment."
    )
    return "\n".join(lines)
