"""Application commands: what Discord accepts when a bot syncs them, and where they are stored.

Also what a Discord client enforces before a user's command is sent at all
(:func:`check_option_value`), which ``invoke_command`` applies unless told not to.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.discord.errors import ApiError, Form
from tests.fakes.discord.middleware import BODY

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord

_NAME_RE = re.compile(r"^[-_'\w]{1,32}$")


class CommandsMixin:
    """Command routes of FakeDiscord (``self`` is always a FakeDiscord)."""

    def _command_store(self: FakeDiscord, request: web.Request) -> list[dict[str, Any]]:
        if request.match_info["app_id"] != str(self.application_id):
            raise ApiError(403, 50001, "Missing Access")
        gid = request.match_info.get("guild_id")
        if gid is None:
            return self.commands
        if int(gid) not in self.guilds:
            raise ApiError(403, 50001, "Missing Access")
        return self.guild_commands.setdefault(int(gid), [])

    async def _h_get_commands(self: FakeDiscord, request: web.Request) -> web.Response:
        return self._json(self._command_store(request))

    async def _h_put_commands(self: FakeDiscord, request: web.Request) -> web.Response:
        store = self._command_store(request)
        form = Form()
        check_commands(form, request[BODY])
        if form:
            raise ApiError.form(form)
        ids = {(c["type"], c["name"]): c["id"] for c in store}
        gid = request.match_info.get("guild_id")
        stored = []
        for cmd in request[BODY]:
            kind = cmd.get("type", 1)
            c = {
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                "contexts": None,
                "integration_types": [0],
                **cmd,
                "type": kind,
                "id": ids.get((kind, cmd["name"])) or str(self._snowflake()),
                "application_id": str(self.application_id),
                "version": str(self._snowflake()),
            }
            if gid:
                c["guild_id"] = gid
            stored.append(c)
        store[:] = stored
        self._notify()
        return self._json(stored)

    def _find_command(
        self: FakeDiscord, name: str, guild_id: int | None, *, kind: int = 1
    ) -> dict[str, Any]:
        """A synced command the channel can see: a slash command (1), or a message menu (3)."""
        candidates = list(self.guild_commands.get(guild_id, [])) if guild_id else []
        candidates += self.commands
        for cmd in candidates:
            if cmd["name"] == name and cmd["type"] == kind:
                if (
                    guild_id is None
                    and cmd.get("contexts") is not None
                    and 1 not in cmd["contexts"]
                ):
                    continue
                return cmd
        what = f"/{name} command" if kind == 1 else f"{name!r} menu command"
        raise AssertionError(f"no {what} is synced where this channel could see it")


def check_commands(form: Form, commands: Any) -> None:
    """Bulk-overwrite rules for application commands (names, descriptions, options)."""
    if not isinstance(commands, list):
        form.add("_", "Must be an array.", "BASE_TYPE_ARRAY")
        return
    if len(commands) > 100:
        form.add("_", "Must be 100 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    names: set[tuple[int, str]] = set()
    for i, cmd in enumerate(commands):
        kind = cmd.get("type", 1)
        name = cmd.get("name")
        if kind == 1:
            _check_name(form, f"{i}.name", name)
            form.length(f"{i}.description", cmd.get("description"), 1, 100)
            _check_options(form, f"{i}.options", cmd.get("options") or [], depth=0)
        else:
            form.length(f"{i}.name", name, 1, 32)
            if cmd.get("description"):
                form.add(f"{i}.description", "Context menu commands take no description.")
        if (kind, name) in names:
            form.add(
                f"{i}.name",
                "Application command names must be unique",
                "APPLICATION_COMMANDS_DUPLICATE_NAME",
            )
        names.add((kind, name))


def _check_name(form: Form, path: str, name: Any) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name != name.lower():
        form.add(path, "Command name is invalid", "APPLICATION_COMMAND_INVALID_NAME")


def _check_options(form: Form, p: str, options: list[dict[str, Any]], depth: int) -> None:
    if len(options) > 25:
        form.add(p, "Must be 25 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    seen_optional = False
    names: set[str] = set()
    for j, opt in enumerate(options):
        q = f"{p}.{j}"
        kind = opt.get("type")
        _check_name(form, f"{q}.name", opt.get("name"))
        form.length(f"{q}.description", opt.get("description"), 1, 100)
        if opt.get("name") in names:
            form.add(
                f"{q}.name",
                "Option names must be unique",
                "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
            )
        names.add(opt.get("name"))
        if kind not in range(1, 12):
            form.add(f"{q}.type", "Value must be one of 1–11.", "BASE_TYPE_CHOICES")
        if kind in (1, 2):
            if depth >= (2 if kind == 1 else 1):
                form.add(f"{q}.type", "Subcommands nest at most two deep.")
            _check_options(form, f"{q}.options", opt.get("options") or [], depth + 1)
            continue
        if opt.get("required"):
            if seen_optional:
                form.add(
                    f"{q}.required",
                    "Required options must be placed before non-required options",
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                )
        else:
            seen_optional = True
        if ("min_value" in opt or "max_value" in opt) and kind not in (4, 10):
            form.add(f"{q}.min_value", "Only integer and number options take min/max values.")
        if ("min_length" in opt or "max_length" in opt) and kind != 3:
            form.add(f"{q}.min_length", "Only string options take min/max lengths.")
        if (
            not 0 <= opt.get("min_length", 0) <= 6000
            or not 1 <= opt.get("max_length", 6000) <= 6000
        ):
            form.add(f"{q}.max_length", "Lengths must be within 0–6000.")
        if len(opt.get("choices") or []) > 25:
            form.add(f"{q}.choices", "Must be 25 or fewer in length.", "BASE_TYPE_MAX_LENGTH")


def check_option_value(definition: dict[str, Any], value: Any) -> None:
    """What the Discord client enforces before a command is even sent."""
    kind, name = definition["type"], definition["name"]
    if kind == 3:
        assert isinstance(value, str), f"{name} must be a string"
        lo, hi = definition.get("min_length", 0), definition.get("max_length", 6000)
        assert lo <= len(value) <= hi, f"{name}: length {len(value)} outside {lo}–{hi}"
    elif kind in (4, 10):
        ok = isinstance(value, int) if kind == 4 else isinstance(value, int | float)
        assert ok and not isinstance(value, bool), (
            f"{name} must be a {'integer' if kind == 4 else 'number'}"
        )
        lo, hi = definition.get("min_value"), definition.get("max_value")
        assert lo is None or value >= lo, f"{name}: {value} < {lo}"
        assert hi is None or value <= hi, f"{name}: {value} > {hi}"
    elif kind == 5:
        assert isinstance(value, bool), f"{name} must be a boolean"
    choices = definition.get("choices")
    if choices:
        assert value in [c["value"] for c in choices], f"{name}: {value!r} is not a choice"
