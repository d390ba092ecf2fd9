"""Discord's documented limits and permission bits, as pure checks the fake Discord applies.

Kept apart from the server so each rule reads as the documentation states it. Checks report
into a :class:`~tests.fakes.discord.errors.Form`; application command rules are in
``commands``.
"""

from __future__ import annotations

import re
from typing import Any

from tests.fakes.discord.errors import Form

# Permission bits (https://discord.com/developers/docs/topics/permissions).
CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
SEND_TTS_MESSAGES = 1 << 12
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_EXTERNAL_EMOJIS = 1 << 18
CONNECT = 1 << 20
USE_APPLICATION_COMMANDS = 1 << 31
MANAGE_THREADS = 1 << 34
CREATE_PUBLIC_THREADS = 1 << 35
CREATE_PRIVATE_THREADS = 1 << 36
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 51) - 1

#: What a freshly invited bot typically gets in a channel.
DEFAULT_BOT_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | CREATE_PUBLIC_THREADS
    | SEND_MESSAGES_IN_THREADS
    | ATTACH_FILES
    | EMBED_LINKS
    | READ_MESSAGE_HISTORY
)
#: An ordinary member: can use commands and talk, cannot manage messages.
DEFAULT_MEMBER_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | READ_MESSAGE_HISTORY
    | ATTACH_FILES
    | EMBED_LINKS
    | ADD_REACTIONS
    | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS
    | SEND_MESSAGES_IN_THREADS
)
#: What a bot may do in a DM with a user.
DM_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | ADD_REACTIONS
    | USE_EXTERNAL_EMOJIS
)
_NEEDS_SEND = SEND_TTS_MESSAGES | MENTION_EVERYONE | EMBED_LINKS | ATTACH_FILES

MIB = 1024 * 1024
#: What a bot may upload per file, by the guild's boost tier (and 10 MiB in DMs). Discord has
#: no other sizes: https://discord.com/developers/docs/reference#uploading-files, change log
#: 2024-12-17 "Default File Upload Limit Change" (10 MiB), and discord.py's
#: ``Guild._PREMIUM_GUILD_LIMITS`` (50 MiB at tier 2, 100 MiB at tier 3).
UPLOAD_LIMIT_BY_TIER = {0: 10 * MIB, 1: 10 * MIB, 2: 50 * MIB, 3: 100 * MIB}
DEFAULT_UPLOAD_LIMIT = UPLOAD_LIMIT_BY_TIER[0]
#: A user's own upload limit by Nitro plan (``premium_type``: 1 Classic, 2 Nitro, 3 Basic). An
#: interaction's ``attachment_size_limit`` is the larger of this and the guild's: it is the
#: member's limit, not the bot's (DESIGN §5; Discord change log 2025-04-03).
NITRO_UPLOAD_LIMIT = {0: 0, 1: 50 * MIB, 2: 500 * MIB, 3: 50 * MIB}

# Message flags.
SUPPRESS_EMBEDS = 1 << 2
EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_NOTIFICATIONS = 1 << 12
IS_COMPONENTS_V2 = 1 << 15
CHANNEL_SEND_FLAGS = SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2
INTERACTION_SEND_FLAGS = CHANNEL_SEND_FLAGS | EPHEMERAL

_USER_MENTION_RE = re.compile(r"<@!?(\d{15,21})>")
_ROLE_MENTION_RE = re.compile(r"<@&(\d{15,21})>")
_EVERYONE_RE = re.compile(r"@(everyone|here)\b")
_ATTACHMENT_URL_RE = re.compile(r"^attachment://(.+)$")


def effective_permissions(granted: int, *, in_thread: bool) -> int:
    """Apply Discord's implicit denials so the fake agrees with ``permissions_for``."""
    if granted & ADMINISTRATOR:
        return ALL_PERMISSIONS
    if not granted & VIEW_CHANNEL:
        return 0
    send = SEND_MESSAGES_IN_THREADS if in_thread else SEND_MESSAGES
    if not granted & send:
        granted &= ~_NEEDS_SEND
    return granted


def check_embeds(form: Form, embeds: Any, file_names: set[str]) -> None:
    """Embed limits: 10 embeds, per-field lengths and 6000 characters in total."""
    if not isinstance(embeds, list):
        form.add("embeds", "Must be an array.", "BASE_TYPE_ARRAY")
        return
    if len(embeds) > 10:
        form.add("embeds", "Must be 10 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    total = 0
    for i, embed in enumerate(embeds):
        p = f"embeds.{i}"
        if not isinstance(embed, dict):
            form.add(p, "Must be an object.", "DICT_TYPE_CONVERT")
            continue
        for key, hi in (("title", 256), ("description", 4096)):
            if embed.get(key) is not None:
                form.length(f"{p}.{key}", embed[key], 0, hi)
                total += len(str(embed[key]))
        fields = embed.get("fields") or []
        if len(fields) > 25:
            form.add(f"{p}.fields", "Must be 25 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        for j, field in enumerate(fields):
            form.length(f"{p}.fields.{j}.name", field.get("name"), 1, 256)
            form.length(f"{p}.fields.{j}.value", field.get("value"), 1, 1024)
            total += len(str(field.get("name") or "")) + len(str(field.get("value") or ""))
        for key, sub, hi in (("footer", "text", 2048), ("author", "name", 256)):
            if isinstance(embed.get(key), dict):
                form.length(f"{p}.{key}.{sub}", embed[key].get(sub), 1, hi)
                total += len(str(embed[key].get(sub) or ""))
        for key in ("image", "thumbnail"):
            url = (embed.get(key) or {}).get("url")
            if url is None:
                continue
            m = _ATTACHMENT_URL_RE.match(url)
            if m and m.group(1) not in file_names:
                form.add(f"{p}.{key}.url", f"No attachment named {m.group(1)!r} in this message.")
            elif not m and not url.startswith(("http://", "https://")):
                form.add(f"{p}.{key}.url", "Scheme must be one of ('http', 'https').", "URL_TYPE")
    if total > 6000:
        form.add("embeds", "Embed size exceeds maximum size of 6000", "MAX_EMBED_SIZE_EXCEEDED")


def walk_components(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every component in a tree (rows, sections' accessories, containers, labels)."""
    out: list[dict[str, Any]] = []
    for c in components or []:
        if not isinstance(c, dict):
            continue
        out.append(c)
        out += walk_components(c.get("components") or [])
        out += walk_components([x for x in (c.get("accessory"), c.get("component")) if x])
    return out


def check_components(form: Form, components: Any, *, v2: bool) -> None:
    """5 action rows of 5 buttons (or 40 components with Components V2), unique custom ids."""
    if not isinstance(components, list):
        form.add("components", "Must be an array.", "BASE_TYPE_ARRAY")
        return
    if not v2 and len(components) > 5:
        form.add("components", "Must be 5 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    everything = walk_components(components)
    if v2 and len(everything) > 40:
        form.add("components", "Must be 40 or fewer in total.", "BASE_TYPE_MAX_LENGTH")
    seen: set[str] = set()
    for i, row in enumerate(components):
        if not v2 and row.get("type") != 1:
            form.add(f"components.{i}.type", "Top-level components must be action rows.")
        _check_component(form, f"components.{i}", row, seen, v2)
    text = sum(len(c.get("content") or "") for c in everything if c.get("type") == 10)
    if text > 4000:
        form.add("components", "Text displays exceed 4000 characters.", "BASE_TYPE_MAX_LENGTH")


def _check_component(form: Form, p: str, c: dict[str, Any], seen: set[str], v2: bool) -> None:
    kind = c.get("type")
    if "custom_id" in c:
        cid = c["custom_id"]
        form.length(f"{p}.custom_id", cid, 1, 100)
        if cid in seen:
            form.add(
                f"{p}.custom_id",
                "Component custom id cannot be duplicated",
                "COMPONENT_CUSTOM_ID_DUPLICATED",
            )
        seen.add(cid)
    if kind == 1:
        children = c.get("components") or []
        if not 1 <= len(children) <= 5:
            form.add(
                f"{p}.components", "Must be between 1 and 5 in length.", "BASE_TYPE_BAD_LENGTH"
            )
        selects = [x for x in children if x.get("type") in (3, 5, 6, 7, 8)]
        if selects and len(children) > 1:
            form.add(f"{p}.components", "A select menu must be alone in its row.")
        for j, child in enumerate(children):
            if child.get("type") == 1:
                form.add(f"{p}.components.{j}.type", "Action rows cannot be nested.")
            _check_component(form, f"{p}.components.{j}", child, seen, v2)
    elif kind == 2:
        style = c.get("style")
        if style not in (1, 2, 3, 4, 5, 6):
            form.add(f"{p}.style", "Value must be one of (1, 2, 3, 4, 5, 6).", "BASE_TYPE_CHOICES")
        if style in (1, 2, 3, 4) and "custom_id" not in c:
            form.add(f"{p}.custom_id", "A custom id is required", "BASE_TYPE_REQUIRED")
        if style == 5 and ("url" not in c or "custom_id" in c):
            form.add(f"{p}.url", "Link buttons need a url and no custom id.")
        if c.get("label") is not None:
            form.length(f"{p}.label", c["label"], 0, 80)
        if not c.get("label") and not c.get("emoji"):
            form.add(f"{p}.label", "A button needs a label or an emoji.", "BASE_TYPE_REQUIRED")
    elif kind in (3, 5, 6, 7, 8):
        if len(c.get("options") or []) > 25:
            form.add(f"{p}.options", "Must be 25 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        form.length(f"{p}.placeholder", c.get("placeholder"), 0, 150)
    elif v2 and kind in (9, 10, 11, 12, 13, 14, 17):
        for j, child in enumerate(c.get("components") or []):
            _check_component(form, f"{p}.components.{j}", child, seen, v2)
        if c.get("accessory"):
            _check_component(form, f"{p}.accessory", c["accessory"], seen, v2)
    else:
        form.add(f"{p}.type", f"Component type {kind} is not valid here.", "BASE_TYPE_CHOICES")


def check_modal(form: Form, data: dict[str, Any]) -> None:
    """Modal limits: title 1–45, 1–5 top-level components, text inputs as documented."""
    form.length("data.custom_id", data.get("custom_id"), 1, 100)
    form.length("data.title", data.get("title"), 1, 45)
    components = data.get("components") or []
    if not 1 <= len(components) <= 5:
        form.add("data.components", "Must be between 1 and 5 in length.", "BASE_TYPE_BAD_LENGTH")
    for i, top in enumerate(components):
        p = f"data.components.{i}"
        if top.get("type") == 1:
            inner = top.get("components") or []
            if len(inner) != 1:
                form.add(f"{p}.components", "Must be 1 in length.", "BASE_TYPE_BAD_LENGTH")
            for text in inner:
                form.length(f"{p}.components.0.label", text.get("label"), 1, 45)
                _check_text_input(form, f"{p}.components.0", text)
        elif top.get("type") == 18:
            form.length(f"{p}.label", top.get("label"), 1, 45)
            form.length(f"{p}.description", top.get("description"), 0, 100)
            inner = top.get("component") or {}
            if inner.get("type") == 4 and inner.get("label") is not None:
                form.add(f"{p}.component.label", "Text inputs in a label take no label.")
            _check_text_input(form, f"{p}.component", inner)
        elif top.get("type") != 10:
            form.add(f"{p}.type", "Modals take action rows, labels or text displays.")


def _check_text_input(form: Form, p: str, c: dict[str, Any]) -> None:
    if c.get("type") != 4:
        if c.get("type") not in (3, 5, 6, 7, 8, 19):
            form.add(f"{p}.type", "Expected a text input or a select.")
        return
    form.length(f"{p}.custom_id", c.get("custom_id"), 1, 100)
    if c.get("style") not in (1, 2):
        form.add(f"{p}.style", "Value must be one of (1, 2).", "BASE_TYPE_CHOICES")
    lo, hi = c.get("min_length", 0), c.get("max_length", 4000)
    if not 0 <= lo <= 4000 or not 1 <= hi <= 4000 or lo > hi:
        form.add(f"{p}.max_length", "min_length/max_length must be within 0–4000.")
    form.length(f"{p}.placeholder", c.get("placeholder"), 0, 100)
    if c.get("value") is not None:
        form.length(f"{p}.value", c["value"], 0, min(hi, 4000))


def mention_sources(payload: dict[str, Any]) -> str:
    """The text Discord scans for pings: content plus Components V2 text displays."""
    texts = [payload.get("content") or ""]
    texts += [c.get("content") or "" for c in walk_components(payload.get("components") or [])]
    return "\n".join(t for t in texts if t)


def compute_mentions(
    form: Form,
    text: str,
    allowed: dict[str, Any] | None,
    *,
    known_users: set[int],
    known_roles: set[int],
    may_ping_everyone: bool,
) -> tuple[bool, list[int], list[int]]:
    """Who this message pings: (everyone, user ids, role ids), honouring ``allowed_mentions``."""
    if allowed is None:
        parse, users, roles = {"users", "roles", "everyone"}, set(), set()
    else:
        parse = set(allowed.get("parse") or [])
        users = {int(u) for u in allowed.get("users") or []}
        roles = {int(r) for r in allowed.get("roles") or []}
        if parse - {"users", "roles", "everyone"}:
            form.add(
                "allowed_mentions.parse",
                "Value must be users, roles or everyone.",
                "BASE_TYPE_CHOICES",
            )
        for kind, ids in (("users", users), ("roles", roles)):
            if kind in parse and ids:
                msg = f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.'
                form.add(
                    f"allowed_mentions.{kind}", msg, "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE"
                )
            if len(ids) > 100:
                form.add(f"allowed_mentions.{kind}", "Must be 100 or fewer in length.")
    everyone = bool(_EVERYONE_RE.search(text)) and "everyone" in parse and may_ping_everyone
    pinged_users: list[int] = []
    for m in _USER_MENTION_RE.finditer(text):
        uid = int(m.group(1))
        if uid in known_users and ("users" in parse or uid in users) and uid not in pinged_users:
            pinged_users.append(uid)
    pinged_roles: list[int] = []
    for m in _ROLE_MENTION_RE.finditer(text):
        rid = int(m.group(1))
        if rid in known_roles and ("roles" in parse or rid in roles) and rid not in pinged_roles:
            pinged_roles.append(rid)
    return everyone, pinged_users, pinged_roles


def check_message(
    form: Form, payload: dict[str, Any], file_names: set[str], *, flags_mask: int, merged_flags: int
) -> None:
    """Content, embeds, components and flags of a message create or edit."""
    if payload.get("content") is not None:
        form.length("content", payload["content"], 0, 2000)
    flags = payload.get("flags") or 0
    if not isinstance(flags, int) or flags & ~flags_mask:
        form.add("flags", f"Flags {flags} are not allowed here.", "MESSAGE_INVALID_FLAGS")
    v2 = bool(merged_flags & IS_COMPONENTS_V2)
    if v2 and (payload.get("content") or payload.get("embeds")):
        form.add("content", "Components V2 messages cannot have content or embeds.")
    if payload.get("embeds") is not None:
        check_embeds(form, payload["embeds"], file_names)
    if payload.get("components") is not None:
        check_components(form, payload["components"], v2=v2)
