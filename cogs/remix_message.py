"""Message context menu "Remix with fluxbot": any posted picture, then the same path as /imagine.

Apps -> Remix with fluxbot on a message with an image attachment or image embed opens a form
(prompt, strength); a message with several images first asks which (a private select menu). The
form's answer is the same job card, thread and queue as ``/imagine`` (``cogs/_intake.py``). The
picker and the form are matched by custom id, so either works after a restart. When the picture
is one of fluxbot's own results, the new job records it as its source (lineage).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands
from yarl import URL

from cogs import _access as access
from cogs._components import modal_values
from cogs._intake import MAX_REFERENCE_BYTES, ImageSource, intake_for
from cogs._render import NO_MENTIONS, shorten
from cogs._replies import UNEXPECTED, reply
from services.aimlapi.download import BodyTooLarge, read_capped
from services.errors import UserFacingError
from services.images import ImageRejected, check_attachment_meta
from services.parameters import PROMPT, STRENGTH, parse_parameters
from services.store import GenerationKind

if TYPE_CHECKING:
    from bot import FluxBot

    Interaction = discord.Interaction[FluxBot]

log = logging.getLogger(__name__)

MENU_NAME = "Remix with fluxbot"
NO_IMAGE = (
    "There's no image in that message. Use Remix with fluxbot on a message with a picture "
    "attached or embedded."
)
MESSAGE_GONE = "I can't find that message any more, so I can't remix its image."
IMAGE_GONE = "That image is no longer in the message."
AGAIN = "Use Remix with fluxbot on the message again."
PICK_ID = re.compile(r"fluxbot:pick:(?P<channel>[0-9]{1,20}):(?P<message>[0-9]{1,20})")
FORM_PREFIX = "fluxbot:message-modal:"
FORM_ID = re.compile(
    r"fluxbot:message-modal:(?P<channel>[0-9]{1,20}):(?P<message>[0-9]{1,20})"
    r":(?P<image>[0-9]{1,2}):[0-9a-f]{8}"
)
#: A select menu holds 25 options.
MAX_CHOICES = 25
IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "jfif", "webp", "gif"})
#: Where Discord serves embedded images from (its media proxy); nothing else is fetched.
DISCORD_MEDIA_HOSTS = ("discordapp.net", "discordapp.com", "discord.com")
RESULT_FILE = re.compile(r"(?:SPOILER_)?fluxbot-(?P<id>[0-9]{1,20})-(?P<n>[0-9]{1,2})\.[a-z]+")
DOWNLOAD_TIMEOUT = 30.0


@dataclass(frozen=True)
class FoundImage:
    """One picture in a message: an attachment, or an embed's image on Discord's proxy."""

    label: str
    attachment: discord.Attachment | None = None
    proxy_url: str | None = None


def _path(url: str | None) -> str | None:
    return URL(url).path if url else None


def message_images(message: discord.Message) -> list[FoundImage]:
    """The message's pictures in the order a member sees them, each once."""
    found: list[FoundImage] = []
    seen: set[str | None] = set()
    for attachment in message.attachments:
        extension = attachment.filename.rpartition(".")[2].lower()
        if (attachment.content_type or "").startswith("image/") or extension in IMAGE_EXTENSIONS:
            found.append(FoundImage(attachment.filename, attachment=attachment))
            seen |= {_path(attachment.url), _path(attachment.proxy_url)}
    for embed in message.embeds:
        # A rich embed shows its image; a link to a picture unfurls into a thumbnail.
        media = embed.image if embed.image.proxy_url else None
        if media is None and embed.type in ("image", "gifv") and embed.thumbnail.proxy_url:
            media = embed.thumbnail
        if media is None or _path(media.url) in seen or _path(media.proxy_url) in seen:
            continue  # a result's embed shows its own attachment again
        seen |= {_path(media.url), _path(media.proxy_url)}
        name = (media.url or "").rpartition("/")[2].partition("?")[0] or "image"
        found.append(FoundImage(f"Embedded: {name}", proxy_url=media.proxy_url))
    return found


def media_url_allowed(url: URL) -> bool:
    """Discord's media proxy over HTTPS, or loopback (the test fakes)."""
    host = url.host or ""
    if url.scheme == "https" and any(
        host == allowed or host.endswith(f".{allowed}") for allowed in DISCORD_MEDIA_HOSTS
    ):
        return True
    try:
        return url.scheme in ("http", "https") and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EmbeddedImage:
    """An embedded image, read through Discord's media proxy with a size cap."""

    def __init__(self, session: aiohttp.ClientSession, url: str, message_id: int) -> None:
        self._session, self._url, self._message_id = session, url, message_id

    @property
    def id(self) -> int:
        return self._message_id

    @property
    def url(self) -> str:
        return self._url

    async def read(self) -> bytes:
        failed = ImageRejected(
            "I couldn't download that image. Try again, or attach the picture to /imagine.",
            reason="download_failed",
        )
        if not media_url_allowed(URL(self._url)):
            log.info("message %s: embedded image not on Discord's proxy", self._message_id)
            raise failed
        try:
            timeout = aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT)
            async with self._session.get(self._url, timeout=timeout) as response:
                if response.status != 200 or not media_url_allowed(response.url):
                    log.info(
                        "message %s: embedded image HTTP %s", self._message_id, response.status
                    )
                    raise failed
                return await read_capped(response, MAX_REFERENCE_BYTES)
        except BodyTooLarge:
            raise ImageRejected(
                "That image is over the 20 MB limit. Try a smaller one.", reason="too_big"
            ) from None
        except (aiohttp.ClientError, TimeoutError):
            raise failed from None


class MessageRemixForm(discord.ui.Modal):
    """The prompt and strength for one picture of a message; answered by ``handle_form``."""

    def __init__(self, channel_id: int, message_id: int, image: int) -> None:
        super().__init__(
            title=MENU_NAME,
            custom_id=f"{FORM_PREFIX}{channel_id}:{message_id}:{image}:{secrets.token_hex(4)}",
            timeout=15 * 60,
        )
        self.add_item(
            discord.ui.TextInput(
                custom_id=PROMPT.name,
                label=PROMPT.label,
                placeholder=PROMPT.help,
                style=discord.TextStyle.paragraph,
                max_length=PROMPT.max_length,
            )
        )
        self.add_item(
            discord.ui.TextInput(
                custom_id=STRENGTH.name,
                label=f"{STRENGTH.label} ({STRENGTH.range_text}: how far to move away)",
                default=STRENGTH.show(STRENGTH.default),
                required=False,
                max_length=12,
            )
        )


class ImagePicker(
    discord.ui.DynamicItem[discord.ui.Select[Any]],
    template=PICK_ID.pattern,
):
    """Which picture of a message with several: each option opens the form for that one."""

    def __init__(
        self, channel_id: int, message_id: int, images: list[FoundImage] | None = None
    ) -> None:
        options = [
            discord.SelectOption(label=shorten(image.label, 100), value=str(index))
            for index, image in enumerate((images or [])[:MAX_CHOICES])
        ]
        super().__init__(
            discord.ui.Select(
                custom_id=f"fluxbot:pick:{channel_id}:{message_id}",
                placeholder="Which image?",
                options=options,
            )
        )
        self.channel_id, self.message_id = channel_id, message_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ImagePicker:
        return cls(int(match["channel"]), int(match["message"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await open_form(interaction, self.channel_id, self.message_id, int(self.item.values[0]))
        except Exception:
            log.exception("image picker for message %s failed", self.message_id)
            await reply(interaction, UNEXPECTED)


async def open_form(interaction: Interaction, channel_id: int, message_id: int, image: int) -> None:
    """The form, unless this member could not queue a job now anyway (saves typing a prompt)."""
    try:
        await interaction.client.generations.admit(interaction.user.id, interaction.guild_id)
    except UserFacingError as exc:
        await reply(interaction, exc.user_message)
        return
    await interaction.response.send_modal(MessageRemixForm(channel_id, message_id, image))


async def result_source(
    bot: FluxBot, message: discord.Message, found: FoundImage
) -> tuple[int, int] | None:
    """The (generation, image index) when the picture is one of this bot's posted results."""
    if found.attachment is None or bot.user is None or message.author.id != bot.user.id:
        return None
    match = RESULT_FILE.fullmatch(found.attachment.filename)
    if match is None:
        return None
    generation = await bot.store.generations.get(int(match["id"]))
    if generation is None or message.id not in generation.result_message_ids:
        return None
    return generation.id, int(match["n"]) - 1


async def handle_form(
    interaction: Interaction, channel_id: int, message_id: int, index: int
) -> None:
    """A submitted form: the checks /imagine makes, the picture fetched fresh, then the card."""
    if (refused := access.check(interaction)) is not None:  # permissions may change meanwhile
        await reply(interaction, refused)
        return
    bot = interaction.client
    intake = intake_for(bot)
    data = cast(dict[str, Any], interaction.data or {})
    values = modal_values(list(data.get("components", [])))
    typed = {spec.name: values.get(spec.name, "").strip() for spec in (PROMPT, STRENGTH)}
    if not typed[STRENGTH.name]:
        del typed[STRENGTH.name]
    try:
        parameters = await intake.apply_policy(interaction, parse_parameters(**typed))
    except UserFacingError as exc:
        await reply(interaction, f"{exc.user_message} {AGAIN}")
        return
    channel = bot.get_partial_messageable(channel_id, guild_id=interaction.guild_id)
    try:
        message = await channel.fetch_message(message_id)  # fresh URLs, and is it still there?
    except discord.NotFound:
        await reply(interaction, MESSAGE_GONE)
        return
    except discord.Forbidden:
        await reply(interaction, "I can't read messages in this channel, so I can't remix them.")
        return
    images = message_images(message)
    if index >= len(images):
        await reply(interaction, IMAGE_GONE)
        return
    found = images[index]
    image: ImageSource
    try:
        if found.attachment is not None:
            attachment = found.attachment
            check_attachment_meta(
                attachment.content_type,
                attachment.size,
                attachment.filename,
                max_bytes=MAX_REFERENCE_BYTES,
            )
            image = attachment
        else:
            assert found.proxy_url is not None
            image = EmbeddedImage(bot.http_session, found.proxy_url, message.id)
    except UserFacingError as exc:
        await reply(interaction, exc.user_message)
        return
    source = await result_source(bot, message, found)
    await intake.answer_with_card(
        interaction, parameters, image, kind=GenerationKind.MESSAGE, source=source
    )


class RemixMessageCog(commands.Cog):
    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name=MENU_NAME, callback=self.remix_message)
        # Guild installs only (DESIGN §5); in a server, and in the bot's own DMs.
        self.menu.allowed_installs = app_commands.AppInstallationType(guild=True, user=False)
        self.menu.allowed_contexts = app_commands.AppCommandContext(
            guild=True, dm_channel=True, private_channel=False
        )

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)
        self.bot.add_dynamic_items(ImagePicker)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)
        self.bot.remove_dynamic_items(ImagePicker)

    async def remix_message(self, interaction: Interaction, message: discord.Message) -> None:
        if (refused := access.check(interaction)) is not None:
            await reply(interaction, refused)
            return
        images = message_images(message)
        if not images:
            await reply(interaction, NO_IMAGE)
            return
        if len(images) == 1:
            await open_form(interaction, message.channel.id, message.id, 0)
            return
        view = discord.ui.View(timeout=None)
        view.add_item(ImagePicker(message.channel.id, message.id, images))
        more = f" (the first {MAX_CHOICES} are listed)" if len(images) > MAX_CHOICES else ""
        await interaction.response.send_message(
            f"That message has {len(images)} images{more}. Which one?",
            view=view,
            ephemeral=True,
            allowed_mentions=NO_MENTIONS,
        )

    @commands.Cog.listener()
    async def on_interaction(self, interaction: Interaction) -> None:
        """Modals have no DynamicItem: a submitted form is matched by its custom id here."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data = cast(dict[str, Any], interaction.data or {})
        match = FORM_ID.fullmatch(str(data.get("custom_id", "")))
        if match is None:
            return
        try:
            await handle_form(
                interaction, int(match["channel"]), int(match["message"]), int(match["image"])
            )
        except Exception:
            log.exception("remix form for message %s failed", match["message"])
            await reply(interaction, UNEXPECTED)


async def setup(bot: FluxBot) -> None:
    await bot.add_cog(RemixMessageCog(bot))
