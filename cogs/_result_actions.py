"""A result message's actions besides Reroll and Remix, and the view that lays them all out.

On the message: Info and Delete. On each result image (DESIGN §8): the entries of
:data:`IMAGE_ACTIONS` (Vary subtle/strong, Upscale, Edit, Use as input). With one image they are
buttons ``fluxbot:<action>:<generation id>:0`` in one row; with several, each image gets one
select menu ``fluxbot:image:<generation id>:<n>`` listing them (at most 4 images: 1 + 4 rows of
Discord's 5). Adding a per-image action is one :class:`ImageAction` entry (a row holds five
buttons, so five actions fit). Like every button here these are ``DynamicItem``s keyed by a
stored generation, so they work after any restart.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from cogs import _render as render
from cogs._components import (
    NO_SUCH_IMAGE,
    GenerationButton,
    RemixButton,
    RemixModal,
    RerollButton,
    pressable,
    start_follow_up,
)
from cogs._editing import edit_image, upscale_image
from cogs._replies import UNEXPECTED, reply
from services.store import Generation, GenerationKind

if TYPE_CHECKING:
    from bot import FluxBot

    Interaction = discord.Interaction[FluxBot]

log = logging.getLogger(__name__)

#: Images a result can have (COUNT's maximum), so the view never passes Discord's 5 rows.
MAX_IMAGES = 4
ONLY_AUTHOR_DELETES = "Only the member who asked for this image, or a moderator, can delete it."


@dataclass(frozen=True)
class ImageAction:
    """Something to do with one result image: a button, or an option of the image's menu."""

    name: str  # the custom id's action (DESIGN §8)
    label: str
    emoji: str
    run: Callable[[Interaction, Generation, int], Awaitable[None]]


async def _vary(
    interaction: Interaction, generation: Generation, image: int, strength: float
) -> None:
    """That image as the reference, the same prompt, a new seed, a set strength: image to image
    (``AIMLAPI_MODEL``) whichever model made it."""
    parameters = generation.parameters.model_copy(update={"seed": None, "strength": strength})
    await start_follow_up(
        interaction,
        generation,
        parameters,
        kind=GenerationKind.VARY,
        image=image,
        model=interaction.client.settings.aimlapi_model,
    )


async def vary_subtle(interaction: Interaction, generation: Generation, image: int) -> None:
    await _vary(interaction, generation, image, interaction.client.settings.vary_subtle_strength)


async def vary_strong(interaction: Interaction, generation: Generation, image: int) -> None:
    await _vary(interaction, generation, image, interaction.client.settings.vary_strong_strength)


async def use_as_input(interaction: Interaction, generation: Generation, image: int) -> None:
    """The Remix form; its job takes this image as the reference (``handle_remix_submit``)."""
    await interaction.response.send_modal(RemixModal(generation, image=image))


IMAGE_ACTIONS: tuple[ImageAction, ...] = (
    ImageAction("vary-subtle", "Vary (subtle)", "🌱", vary_subtle),
    ImageAction("vary-strong", "Vary (strong)", "🌪️", vary_strong),
    ImageAction("upscale", "Upscale", "🔍", upscale_image),
    ImageAction("edit", "Edit", "✨", edit_image),
    ImageAction("use", "Use as input", "🖼️", use_as_input),
)
_BY_NAME = {action.name: action for action in IMAGE_ACTIONS}
_NAMES = "|".join(re.escape(action.name) for action in IMAGE_ACTIONS)


async def _pressed_image(
    interaction: Interaction, generation_id: int, image: int
) -> Generation | None:
    generation = await pressable(interaction, generation_id)
    if generation is not None and image >= generation.parameters.count:
        await reply(interaction, NO_SUCH_IMAGE)
        return None
    return generation


async def _run(
    interaction: Interaction, action: ImageAction, generation: Generation, image: int
) -> None:
    try:
        await action.run(interaction, generation, image)
    except Exception:
        log.exception("%s on image %s of %s failed", action.name, image, generation.id)
        await reply(interaction, UNEXPECTED)


class ImageActionButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=rf"fluxbot:(?P<action>{_NAMES}):(?P<id>[0-9]{{1,20}}):(?P<image>[0-9])",
):
    """One action on one image, for results of a single image."""

    def __init__(
        self, action: ImageAction, generation_id: int, image: int, *, row: int | None = None
    ) -> None:
        super().__init__(
            discord.ui.Button(
                custom_id=f"fluxbot:{action.name}:{generation_id}:{image}",
                label=action.label,
                emoji=action.emoji,
                style=discord.ButtonStyle.secondary,
                row=row,
            )
        )
        self.action, self.generation_id, self.image = action, generation_id, image
        self.generation: Generation | None = None

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ImageActionButton:
        return cls(_BY_NAME[match["action"]], int(match["id"]), int(match["image"]))

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        self.generation = await _pressed_image(interaction, self.generation_id, self.image)
        return self.generation is not None

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        assert self.generation is not None  # set by interaction_check
        await _run(interaction, self.action, self.generation, self.image)


class ImageActionMenu(
    discord.ui.DynamicItem[discord.ui.Select[Any]],
    template=r"fluxbot:image:(?P<id>[0-9]{1,20}):(?P<image>[0-9])",
):
    """Every action on one image, for results of several: 25 buttons would not fit."""

    def __init__(self, generation_id: int, image: int, *, row: int | None = None) -> None:
        labels = ", ".join(action.label for action in IMAGE_ACTIONS)
        super().__init__(
            discord.ui.Select(
                custom_id=f"fluxbot:image:{generation_id}:{image}",
                placeholder=render.shorten(f"Image {image + 1}: {labels}…", 150),
                options=[
                    discord.SelectOption(label=action.label, value=action.name, emoji=action.emoji)
                    for action in IMAGE_ACTIONS
                ],
                row=row,
            )
        )
        self.generation_id, self.image = generation_id, image
        self.generation: Generation | None = None

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ImageActionMenu:
        return cls(int(match["id"]), int(match["image"]))

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        self.generation = await _pressed_image(interaction, self.generation_id, self.image)
        return self.generation is not None

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        assert self.generation is not None  # set by interaction_check
        action = _BY_NAME.get(self.item.values[0]) if self.item.values else None
        if action is None:  # an option from an older version of the menu
            await reply(interaction, "That action no longer exists. Pick another one.")
            return
        await _run(interaction, action, self.generation, self.image)


class InfoButton(GenerationButton, template=r"fluxbot:info:(?P<id>[0-9]{1,20})"):
    action = "info"
    label = "Info"
    emoji = "ℹ️"

    async def press(self, interaction: Interaction, generation: Generation) -> None:
        store = interaction.client.store
        source = None
        if generation.source_id is not None:
            source = await store.generations.get(generation.source_id)
        cost = render.cost_text(await store.api_attempts.for_generation(generation.id))
        await interaction.response.send_message(
            embed=render.info_embed(generation, source, cost=cost),
            ephemeral=True,
            allowed_mentions=render.NO_MENTIONS,
        )


class DeleteButton(GenerationButton, template=r"fluxbot:delete:(?P<id>[0-9]{1,20})"):
    """Deletes the result's messages and marks the generation; the thread and card stay."""

    action = "delete"
    opens_with_guild = False  # open rerolls never let anyone delete someone else's image
    refusal = ONLY_AUTHOR_DELETES
    label = "Delete"
    emoji = "🗑️"
    style = discord.ButtonStyle.danger

    async def press(self, interaction: Interaction, generation: Generation) -> None:
        await interaction.response.defer()  # then a private line, as for a reroll
        bot = interaction.client
        channel = bot.get_partial_messageable(
            generation.thread_id or generation.channel_id, guild_id=generation.guild_id
        )
        # The pressed message first, through its own channel: it may be a failure notice (not
        # a stored result) or sit in the parent channel if the thread was gone when posted.
        messages: list[discord.Message | discord.PartialMessage] = []
        if interaction.message is not None:
            messages.append(interaction.message)
        pressed = {m.id for m in messages}
        messages += [
            channel.get_partial_message(i)
            for i in generation.result_message_ids
            if i not in pressed
        ]
        for message in messages:
            try:
                await message.delete()
            except discord.NotFound:
                pass  # already gone
            except discord.HTTPException as exc:
                log.info("generation %s: could not delete %s (%s)", generation.id, message.id, exc)
                await reply(interaction, "I couldn't delete that message here.")
                return
        await bot.store.generations.mark_deleted(generation.id, deleted_by=interaction.user.id)
        log.info("generation %s: deleted by %s", generation.id, interaction.user.id)
        await reply(interaction, "🗑️ Deleted.")


#: Every item this module puts on messages, for ``add_dynamic_items``.
RESULT_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    InfoButton,
    DeleteButton,
    ImageActionButton,
    ImageActionMenu,
)


def result_view(generation: Generation, *, images: int = 0) -> discord.ui.View:
    """Reroll, Remix, Info, Delete; then each of the ``images`` posted images' actions."""
    view = discord.ui.View(timeout=None)
    for button in (RerollButton, RemixButton, InfoButton, DeleteButton):
        view.add_item(button(generation.id, row=0))
    if images == 1:
        for action in IMAGE_ACTIONS:
            view.add_item(ImageActionButton(action, generation.id, 0, row=1))
    else:
        for image in range(min(images, MAX_IMAGES)):
            view.add_item(ImageActionMenu(generation.id, image, row=1 + image))
    return view
