"""What the bot must be allowed to do where a job runs, checked before a command is answered.

An interaction reaches the bot in any channel where its command can be used, even one it cannot
see; its answer goes through the interaction, but every later edit, fetch or thread needs the
bot's own permissions there (403 50001 otherwise). So the command checks
``interaction.app_permissions`` first and says exactly what is missing, and where (DESIGN §5).
"""

from __future__ import annotations

from typing import Any

import discord

#: Discord's own names for the permissions, as an admin sees them in the channel settings.
NAMES = {
    "view_channel": "View Channel",
    "send_messages": "Send Messages",
    "send_messages_in_threads": "Send Messages in Threads",
    "create_public_threads": "Create Public Threads",
    "attach_files": "Attach Files",
    "embed_links": "Embed Links",
    "read_message_history": "Read Message History",
    "connect": "Connect",
}
#: Card and results carry files and embeds; a reroll reads the card again for its reference.
ALWAYS = ("view_channel", "attach_files", "embed_links", "read_message_history")
VOICE = (discord.VoiceChannel, discord.StageChannel)
LOCKED = (
    "This thread is locked, so I can't post here. Use /imagine in the channel above it instead."
)


def makes_thread(channel: object, permissions: discord.Permissions) -> bool:
    """Whether results get a new thread on the card: a text channel that allows one."""
    return (
        isinstance(channel, discord.TextChannel)
        and permissions.create_public_threads
        and permissions.send_messages_in_threads
    )


def missing(channel: object, permissions: discord.Permissions) -> list[str]:
    """The permissions a job lacks in ``channel``, by Discord's names; empty when all is well.

    Results go in a new thread where one can be made, else in the channel itself (DESIGN §1.3);
    a voice channel's chat also needs Connect before its messages can be read back.
    """
    needed = list(ALWAYS)
    if isinstance(channel, discord.Thread):
        needed.append("send_messages_in_threads")
    elif not makes_thread(channel, permissions):
        needed.append("send_messages")
    if isinstance(channel, VOICE):
        needed.append("connect")
    return [NAMES[name] for name in needed if not getattr(permissions, name)]


def refusal(names: list[str], channel_id: int | None) -> str:
    """A private answer naming what is missing and where, so an admin can fix it."""
    where = f"<#{channel_id}>" if channel_id else "this channel"
    listed = ", ".join(f"**{name}**" for name in names)
    return (
        f"I can't make images in {where}: I'm missing {listed} there. Ask an admin to allow "
        "it for my role in this channel, then try again."
    )


def check(interaction: discord.Interaction[Any]) -> str | None:
    """Why a job can't run where ``interaction`` happened, or ``None`` when it can.

    In DMs the bot may do everything it needs; Discord's ``app_permissions`` there lists only a
    few bits, so it is not read.
    """
    if interaction.guild_id is None:
        return None
    channel, permissions = interaction.channel, interaction.app_permissions
    if isinstance(channel, discord.Thread) and channel.locked and not permissions.manage_threads:
        return LOCKED
    names = missing(channel, permissions)
    return refusal(names, interaction.channel_id) if names else None


def missing_now(channel: object) -> list[str]:
    """What the bot lacks in a cached guild channel right now (after a 403), else ``[]``."""
    if not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
        return []
    me = channel.guild.me
    return missing(channel, channel.permissions_for(me)) if me is not None else []
