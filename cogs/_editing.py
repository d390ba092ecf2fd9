"""Edit and Upscale on a result image: the instruction form, and the jobs they start.

✨ **Edit** opens a form for the instruction ("make it night") and runs ``EDIT_MODEL`` on that
image; 🔍 **Upscale** runs ``UPSCALE_MODEL`` on it at once. Both are :class:`ImageAction`
entries (``cogs/_result_actions.py``) and go through ``start_follow_up`` like Vary, so the
guild's model choice, the model's own rules, the member cap and the quotas are checked before
anything is queued. A picture over the upscaler's input limits is fitted when the job runs
(``cogs/delivery.py``), where its bytes are at hand. The form is matched by custom id
(``fluxbot:edit-modal:<generation>:<image>:<nonce>``) by the ``edit`` extension, so a form
opened before a restart still works after it.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any, cast

import discord

from cogs._components import (
    NO_SUCH_IMAGE,
    check_follow_up,
    modal_values,
    pressable,
    start_follow_up,
)
from cogs._replies import reply
from services.errors import UserFacingError
from services.model_registry import model_entry
from services.parameters import DETAIL, PROMPT, RESOLUTION, parse_parameters
from services.safety import check_prompt
from services.store import Generation, GenerationKind

if TYPE_CHECKING:
    from bot import FluxBot

    Interaction = discord.Interaction[FluxBot]

EDIT_MODAL_PREFIX = "fluxbot:edit-modal:"
EDIT_MODAL_ID = re.compile(
    r"fluxbot:edit-modal:(?P<id>[0-9]{1,20}):(?P<image>[0-9]{1,2}):[0-9a-f]{8}"
)
INSTRUCTION_HINT = "e.g. make it night; put the cat in a suit; add a red scarf"


class EditModal(discord.ui.Modal):
    """The instruction for one result image; answered by :func:`handle_edit_submit`."""

    def __init__(self, generation: Generation, image: int, *, prompt_max: int) -> None:
        super().__init__(
            title=f"Edit image {image + 1}",
            custom_id=f"{EDIT_MODAL_PREFIX}{generation.id}:{image}:{secrets.token_hex(4)}",
            timeout=15 * 60,
        )
        self.add_item(
            discord.ui.TextInput(
                custom_id=PROMPT.name,
                label="What should change?",
                placeholder=INSTRUCTION_HINT,
                style=discord.TextStyle.paragraph,
                max_length=min(prompt_max, PROMPT.max_length),
            )
        )


async def edit_image(interaction: Interaction, generation: Generation, image: int) -> None:
    """The instruction form, unless the guild or the model would refuse the job anyway."""
    model = interaction.client.settings.edit_model
    # The form's job: an instruction on one picture, every other knob at its default.
    defaults = parse_parameters(prompt=INSTRUCTION_HINT)
    try:
        await check_follow_up(interaction, model, defaults, (generation.reference_url,))
    except UserFacingError as exc:
        await reply(interaction, exc.user_message)
        return
    entry = model_entry(model)
    await interaction.response.send_modal(
        EditModal(generation, image, prompt_max=entry.prompt_max or PROMPT.max_length)
    )


async def handle_edit_submit(interaction: Interaction, generation_id: int, image: int) -> None:
    """A submitted Edit form: the same checks as the button, then the edit job in the thread."""
    source = await pressable(interaction, generation_id)
    if source is None:
        return
    if image >= source.parameters.count:
        await reply(interaction, NO_SUCH_IMAGE)
        return
    data = cast(dict[str, Any], interaction.data or {})
    instruction = modal_values(list(data.get("components", []))).get(PROMPT.name, "")
    try:
        parameters = parse_parameters(
            prompt=instruction, safety_checker=source.parameters.safety_checker
        )
        if interaction.guild_id is not None:
            settings = await interaction.client.store.guild_settings.get(interaction.guild_id)
            check_prompt(parameters.prompt, settings)
    except UserFacingError as exc:
        await reply(interaction, f"{exc.user_message} Press Edit to try again.")
        return
    await start_follow_up(
        interaction,
        source,
        parameters,
        kind=GenerationKind.EDIT_IMAGE,
        image=image,
        model=interaction.client.settings.edit_model,
    )


async def upscale_image(interaction: Interaction, generation: Generation, image: int) -> None:
    """That image through the upscaler: one picture, at the default resolution and detail (the
    prompt is kept for the embed and for a later Vary, though the upscaler reads none)."""
    parameters = generation.parameters.model_copy(
        update={
            "seed": None,
            "count": 1,
            "resolution": RESOLUTION.default,
            "detail": DETAIL.default,
        }
    )
    await start_follow_up(
        interaction,
        generation,
        parameters,
        kind=GenerationKind.UPSCALE,
        image=image,
        model=interaction.client.settings.upscale_model,
    )
