"""The bot token and API key never reach a log line (any level), a member, or a repr."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from tests.world import API_KEY, TOKEN, World


class Everything(logging.Handler):
    """Every record, formatted as a real handler would write it (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def capture_everything() -> Iterator[Everything]:
    """DEBUG everywhere, discord.http included (it logs request payloads and URLs).

    Entered in the test body: pytest resets the root level between set-up and call.
    """
    handler = Everything()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", "discord", "discord.http")}
    root.addHandler(handler)
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


async def test_a_whole_session_logs_neither_secret(world: World):
    with capture_everything() as captured:
        bot = await world.restart_bot()  # login, IDENTIFY and sync happen under DEBUG capture
        interaction = await world.imagine("a cat wearing a tiny hat")
        await interaction.response()
        card_id = int(interaction.original_message["id"])
        await world.result_in(card_id)
        await world.card_status(card_id, "✅ Done")

        # An API error that echoes the key back, as a misbehaving proxy might.
        world.api.fail_next(400, body={"message": f"bad key {API_KEY}", "statusCode": 400})
        failing = await world.imagine("second")
        await failing.response()
        failure = await world.result_in(int(failing.original_message["id"]))
        # A library that logs request headers (aiohttp's tracing, an HTTP debug hook...).
        logging.getLogger("somelib.http").debug("headers: Authorization: Bot %s", TOKEN)
        try:
            raise RuntimeError(f"connect failed for key={API_KEY}")
        except RuntimeError:
            logging.getLogger("some.library").warning("oops", exc_info=True)
        await world.stop_bot()

    text = "\n".join(captured.lines)
    assert len(captured.lines) > 50 and "discord.http DEBUG" in text
    assert TOKEN not in text and API_KEY not in text
    assert "Authorization: Bot [redacted]" in text and "key=[redacted]" in text
    assert "bad key [redacted]" in failure["content"]
    for body in world.bot_messages():
        assert TOKEN not in str(body) and API_KEY not in str(body)
    for shown in (repr(bot.settings), str(bot.settings), repr(bot.api), repr(vars(bot.api))):
        assert TOKEN not in shown and API_KEY not in shown
