"""``python bot.py --check``: can this configuration run the bot? One line per check, with a fix.

Four checks: the configuration, a Discord login (``GET /users/@me`` with the token), the AI/ML
API key (``GET /v2/billing``, which costs nothing), and the database (reachable, and at the
schema version this code expects). Nothing is changed: a missing SQLite file is not created and
pending migrations are not applied (``python bot.py --migrate`` does that, as does a start).

Discord's REST base comes from the caller (``bot.py`` passes discord.py's), so this module needs
no discord import and the checks follow wherever discord.py is pointed (the tests' fake).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from sqlalchemy.engine import make_url

from services.aimlapi import (
    AimlApiClient,
    AimlApiError,
    ApiConnectionError,
    ApiTimeoutError,
    AuthenticationError,
    OutOfCreditsError,
)
from services.config import WHERE_TO_GET, Settings, SettingsError
from services.store import (
    SCHEMA_VERSION,
    current_version,
    make_engine,
    normalise_database_url,
)

#: No check may keep an operator waiting longer than this.
CHECK_TIMEOUT = 15.0
DISCORD_USER_AGENT = "DiscordBot (https://github.com/Rapptz/discord.py, 2) fluxbot-check"
MIGRATE = "run `python bot.py --migrate` (starting the bot does it too)"


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'ok  ' if self.ok else 'FAIL'}  {self.name:<9} {self.detail}"
        return f"{text} — fix: {self.fix}" if self.fix and not self.ok else text


async def run_checks(load: Callable[[], Settings], *, discord_api: str) -> list[CheckResult]:
    """Every check, in a fixed order; the three remote ones run at once."""
    try:
        settings = load()
    except SettingsError as exc:
        fix = "put the settings in .env (copy .env.example) or in the environment"
        failed = [CheckResult("config", False, problem, fix) for problem in exc.problems]
        skipped = "not checked: the configuration is incomplete"
        return failed + [
            CheckResult(name, False, skipped, "fix the configuration first")
            for name in ("discord", "aimlapi", "database")
        ]
    config = CheckResult("config", True, f"valid (model {settings.aimlapi_model})")
    async with aiohttp.ClientSession() as session:
        remote = await asyncio.gather(
            _bounded("discord", check_discord(session, discord_api, settings)),
            _bounded("aimlapi", check_api(session, settings)),
            _bounded("database", check_database(settings.database_url)),
        )
    return [config, *remote]


async def _bounded(name: str, check: Awaitable[CheckResult]) -> CheckResult:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            return await check
    except TimeoutError:
        return CheckResult(
            name, False, f"no answer within {CHECK_TIMEOUT:.0f}s", "check the network"
        )


async def check_discord(
    session: aiohttp.ClientSession, api_base: str, settings: Settings
) -> CheckResult:
    headers = {
        "Authorization": f"Bot {settings.discord_token.get_secret_value()}",
        "User-Agent": DISCORD_USER_AGENT,
    }
    try:
        async with session.get(f"{api_base}/users/@me", headers=headers) as response:
            status = response.status
            body = await response.json(content_type=None) if status == 200 else None
    except (aiohttp.ClientError, ValueError) as exc:
        return CheckResult(
            "discord",
            False,
            f"could not reach Discord ({type(exc).__name__})",
            "check this machine's network, DNS and proxy",
        )
    if status == 200 and isinstance(body, dict):
        return CheckResult("discord", True, f"logged in as {body.get('username')} ({body['id']})")
    if status == 401:
        return CheckResult(
            "discord",
            False,
            "Discord refused DISCORD_TOKEN",
            f"get a new token at {WHERE_TO_GET['DISCORD_TOKEN']}, and put it in .env",
        )
    return CheckResult(
        "discord",
        False,
        f"Discord answered HTTP {status} to a login",
        "try again in a few minutes (https://discordstatus.com)",
    )


async def check_api(session: aiohttp.ClientSession, settings: Settings) -> CheckResult:
    client = AimlApiClient(session, base_url=settings.api_base, api_key=settings.aimlapi_key)
    try:
        balance = (await client.balance()).current_balance  # USD (DESIGN §10)
    except AuthenticationError:
        return CheckResult(
            "aimlapi",
            False,
            "the AI/ML API refused AIMLAPI_KEY",
            f"create a key at {WHERE_TO_GET['AIMLAPI_KEY']}, and put it in .env",
        )
    except OutOfCreditsError:
        return CheckResult("aimlapi", False, "the account has no credits", "top up the account")
    except (ApiConnectionError, ApiTimeoutError) as exc:
        return CheckResult(
            "aimlapi",
            False,
            f"could not reach {settings.api_base} ({exc.detail})",
            "check AIMLAPI_BASE_URL and this machine's network",
        )
    except AimlApiError as exc:
        return CheckResult(
            "aimlapi",
            False,
            f"{settings.api_base}/v2/billing: {exc.detail}",
            "check AIMLAPI_BASE_URL (the default is https://api.aimlapi.com)",
        )
    if balance <= 0:
        return CheckResult(
            "aimlapi",
            False,
            f"key accepted, but the balance is ${balance:,.2f}",
            "top up the account",
        )
    return CheckResult("aimlapi", True, f"key accepted, balance ${balance:,.2f}")


async def check_database(url: str) -> CheckResult:
    try:
        parsed = make_url(normalise_database_url(url))
    except ValueError as exc:
        return CheckResult(
            "database",
            False,
            str(exc),
            "use sqlite:///data/fluxbot.sqlite3 or postgresql://user:password@host/database",
        )
    where = parsed.render_as_string(hide_password=True)
    is_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, ":memory:")
    if is_file and not await asyncio.to_thread(Path(str(parsed.database)).is_file):
        return CheckResult("database", False, f"no database at {parsed.database} yet", MIGRATE)
    try:
        engine = make_engine(url)
    except ModuleNotFoundError as exc:
        return CheckResult(
            "database",
            False,
            f"the driver {exc.name} is not installed",
            "pip install -e '.[postgres]'",
        )
    try:
        version = await current_version(engine)
    except Exception as exc:  # any driver's refusal: the operator needs its words, not a trace
        return CheckResult(
            "database",
            False,
            f"cannot use {where}: {_reason(exc)}",
            "check DATABASE_URL, and that the database server is running",
        )
    finally:
        with contextlib.suppress(Exception):
            await engine.dispose()
    if version == SCHEMA_VERSION:
        return CheckResult("database", True, f"{where}, schema version {version} (current)")
    if version > SCHEMA_VERSION:
        return CheckResult(
            "database",
            False,
            f"{where} has schema version {version}; this fluxbot knows up to {SCHEMA_VERSION}",
            "upgrade fluxbot, or point DATABASE_URL at another database",
        )
    return CheckResult(
        "database",
        False,
        f"{where} has schema version {version}; this fluxbot needs {SCHEMA_VERSION}",
        MIGRATE,
    )


def _reason(exc: BaseException) -> str:
    """The driver's own words, first line only (SQLAlchemy appends the SQL and a link)."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return f"{type(original).__name__}: {text[0]}" if text else type(original).__name__
