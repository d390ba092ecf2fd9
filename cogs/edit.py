"""``/edit``: instruction editing of one to three pictures, and the Edit button's form.

``/edit image prompt [image2] [image3] [aspect_ratio] [seed] [count]`` runs ``EDIT_MODEL``
(FLUX Kontext or FLUX.2 edit) with every picture as a reference, in the order given. What the
interaction carries is checked before answering (the guild's model choice and blocked words,
the model's own rules, the files' declared types and sizes, the member's cap); then the same
card, thread and queue as ``/imagine`` (``cogs/_intake.py``), every picture re-hosted on the
card. The ✨ Edit form of a result image (``cogs/_editing.py``) is answered here too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

import discord
from discord import app_commands
from discord.ext import commands

from cogs import _access as access
from cogs._editing import EDIT_MODAL_ID, handle_edit_submit
from cogs._intake import MAX_REFERENCE_BYTES, intake_for
from cogs._replies import UNEXPECTED, reply
from services.errors import UserFacingError
from services.images import ImageRejected, check_attachment_meta
from services.parameters import ASPECT_RATIO, COUNT, PROMPT, SEED, parse_parameters
from services.store import GenerationKind

if TYPE_CHECKING:
    from bot import FluxBot

    Interaction = discord.Interaction[FluxBot]

log = logging.getLogger(__name__)

RATIOS = [app_commands.Choice(name=ratio, value=ratio) for ratio in ASPECT_RATIO.choices]
OPTIONS = ("image", "image2", "image3")


def check_picture(option: str, picture: discord.Attachment) -> None:
    """The declared type and size of one picture; a refusal names the option it came in."""
    try:
        check_attachment_meta(
            picture.content_type, picture.size, picture.filename, max_bytes=MAX_REFERENCE_BYTES
        )
    except ImageRejected as exc:
        raise ImageRejected(f"{option}: {exc.user_message}", reason=exc.reason) from None


class EditCog(commands.Cog):
    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot
        self.intake = intake_for(bot)

    @app_commands.command(name="edit")
    @app_commands.allowed_installs(guilds=True, users=False)
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    @app_commands.describe(
        image="The picture to edit (PNG, JPEG, WebP or GIF)",
        prompt="What to change, in words: make it night; put the cat in a suit",
        image2="Another picture to use (optional): combine it with the first",
        image3="A third picture to use (optional)",
        **{spec.name: spec.description for spec in (ASPECT_RATIO, SEED, COUNT)},
    )
    @app_commands.choices(aspect_ratio=RATIOS)
    async def edit(
        self,
        interaction: Interaction,
        image: discord.Attachment,
        prompt: app_commands.Range[str, PROMPT.min_length, PROMPT.max_length],
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        aspect_ratio: app_commands.Choice[str] | None = None,
        seed: app_commands.Range[int, int(SEED.minimum), int(SEED.maximum)] | None = None,
        count: app_commands.Range[int, int(COUNT.minimum), int(COUNT.maximum)] | None = None,
    ) -> None:
        """Edit pictures by instruction: say what to change, or how to combine them."""
        if (refused := access.check(interaction)) is not None:
            await reply(interaction, refused)
            return
        model = self.bot.settings.edit_model
        pictures = [picture for picture in (image, image2, image3) if picture is not None]
        options: dict[str, Any] = {"seed": seed, "count": count}
        if aspect_ratio is not None:
            options["aspect_ratio"] = aspect_ratio.value
        try:
            parameters = parse_parameters(
                prompt=prompt, **{k: v for k, v in options.items() if v is not None}
            )
            parameters = await self.intake.apply_policy(
                interaction,
                parameters,
                model=model,
                references=[picture.url for picture in pictures],
            )
            for option, picture in zip(OPTIONS, (image, image2, image3), strict=True):
                if picture is not None:
                    check_picture(option, picture)
        except UserFacingError as exc:
            await reply(interaction, exc.user_message)
            return

        await self.intake.answer_with_card(
            interaction,
            parameters,
            image,
            kind=GenerationKind.EDIT,
            model=model,
            more_images=pictures[1:],
        )

    @commands.Cog.listener()
    async def on_interaction(self, interaction: Interaction) -> None:
        """Modals have no DynamicItem: a submitted Edit form is matched by its custom id here."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data = cast(dict[str, Any], interaction.data or {})
        match = EDIT_MODAL_ID.fullmatch(str(data.get("custom_id", "")))
        if match is None:
            return
        try:
            await handle_edit_submit(interaction, int(match["id"]), int(match["image"]))
        except Exception:
            log.exception("edit form for %s failed", match["id"])
            await reply(interaction, UNEXPECTED)


async def setup(bot: FluxBot) -> None:
    await bot.add_cog(EditCog(bot))
