"""Discord's error answers, so every refusal of the fake has the shape discord.py parses.

A check reports into a :class:`Form`, which becomes Discord's ``50035 Invalid Form Body`` error
with an ``errors`` object keyed by the offending path (``embeds.0.description``), exactly the
shape discord.py flattens into its ``HTTPException`` text.
"""

from __future__ import annotations

from typing import Any


class Form:
    """Collects form errors under dotted paths, like Discord's ``errors`` object."""

    def __init__(self) -> None:
        self.errors: dict[str, Any] = {}
        self.first: str | None = None

    def add(self, path: str, message: str, code: str = "BASE_TYPE_INVALID") -> None:
        node = self.errors
        for part in path.split("."):
            node = node.setdefault(part, {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
        self.first = self.first or f"{path}: {message}"

    def length(self, path: str, value: Any, lo: int, hi: int) -> None:
        """Check a string's length the way Discord words it."""
        if value is None:
            if lo > 0:
                self.add(path, "This field is required", "BASE_TYPE_REQUIRED")
            return
        if not isinstance(value, str):
            self.add(path, "Must be a string.", "BASE_TYPE_STRING")
        elif len(value) > hi:
            self.add(path, f"Must be {hi} or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        elif len(value) < lo:
            code = "BASE_TYPE_REQUIRED" if not value else "BASE_TYPE_MIN_LENGTH"
            self.add(path, f"Must be {lo} or more in length.", code)

    def __bool__(self) -> bool:
        return bool(self.errors)


class ApiError(Exception):
    """A Discord error answer: HTTP status plus the JSON ``{"code", "message"}`` body."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.errors = status, code, message, errors

    @classmethod
    def form(cls, form: Form) -> ApiError:
        return cls(400, 50035, f"Invalid Form Body ({form.first})", form.errors)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def missing_permissions() -> ApiError:
    return ApiError(403, 50013, "Missing Permissions")
