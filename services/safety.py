"""Content policy: per-guild settings, blocked words, and when the safety checker may be off.

Blocked terms are plain words or phrases, never regular expressions: Python's ``re`` has no time
limit, and a guild admin's pattern such as ``(a+)+$`` would stall the event loop on a long prompt
(ReDoS). Matching here is tokenising plus set and substring look-ups, linear in the prompt.

A prompt and every term are normalised the same way (Unicode NFKC, case-folded, split on anything
that is not a letter or digit), so ``"Gore"``, ``"ＧＯＲＥ"`` and ``"gore!"`` all match the term
``gore``, at word boundaries only (``"gorengan"`` does not). A trailing ``*`` matches a word
prefix (``gor*`` matches ``gory``). Spaced-out spellings (``g o r e``) are not caught.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.errors import UserFacingError

#: Caps that keep the stored list, the admin reply and the matching cost small.
MAX_TERMS: Final = 100
MAX_TERM_CHARS: Final = 50
MAX_TERM_WORDS: Final = 5

_WORD: Final = re.compile(r"[^\W_]+")
_SEPARATORS: Final = re.compile(r"[,\n]")
#: What an admin may type in a term: letters, digits, spaces, hyphens and apostrophes.
_NOT_PLAIN: Final = re.compile(r"[^\w\s'’-]|_")


def words(text: str) -> list[str]:
    """The comparable words of ``text``: NFKC, case-folded, letters and digits only."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def normalise_term(term: str) -> str:
    """A term as stored and compared: its words joined by one space, ``*`` kept at the end."""
    prefix = term.rstrip().endswith("*")
    joined = " ".join(words(term))
    return f"{joined}*" if prefix and joined else joined


class TermsRejected(UserFacingError):
    """A blocked-word list an admin cannot save; ``user_message`` says why."""


def parse_terms(text: str) -> tuple[str, ...]:
    """Terms from an admin's comma- or newline-separated list; duplicates dropped, order kept."""
    terms: list[str] = []
    for raw in _SEPARATORS.split(text):
        shown = raw.strip()
        if not shown:
            continue
        if len(shown) > MAX_TERM_CHARS:
            raise TermsRejected(
                f"“{shown[:20]}…” is too long: a term may have {MAX_TERM_CHARS} characters."
            )
        if _NOT_PLAIN.search(shown.removesuffix("*")):
            raise TermsRejected(
                f"“{shown}” looks like a pattern. Only plain words and phrases are "
                "supported (a trailing * matches the start of a word)."
            )
        term = normalise_term(shown)
        if not term or term == "*":
            raise TermsRejected(
                f"“{shown}” has no letters or digits. Use plain words, separated by commas."
            )
        if term.count(" ") >= MAX_TERM_WORDS:
            raise TermsRejected(f"“{shown}” is too long: at most {MAX_TERM_WORDS} words.")
        if term not in terms:
            terms.append(term)
    if len(terms) > MAX_TERMS:
        raise TermsRejected(f"That is {len(terms)} terms; a server may block at most {MAX_TERMS}.")
    return tuple(terms)


def blocked_term(prompt: str, terms: Iterable[str]) -> str | None:
    """The first stored term ``prompt`` contains, at word boundaries; None when it is clean.

    Words are joined with single spaces and padded, so a term is a substring search: ``" gore "``
    for a word or phrase, ``" gor"`` for a prefix term.
    """
    joined = f" {' '.join(words(prompt))} "
    for term in terms:
        needle = f" {term[:-1]}" if term.endswith("*") else f" {term} "
        if needle.strip() and needle in joined:
            return term
    return None


class GuildSettings(BaseModel):
    """What a guild's admins chose; the defaults are the safe choice for a guild never set up."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    guild_id: int
    #: In channels Discord marks NSFW, send ``enable_safety_checker=false``. Never elsewhere.
    unfiltered_in_nsfw: bool = False
    #: Anyone may press Reroll/Remix on anyone's result, not only its author and moderators.
    open_rerolls: bool = False
    blocked_terms: tuple[str, ...] = Field(default=(), max_length=MAX_TERMS)
    #: The models members may use (``services.model_access``); empty: every enabled one.
    allowed_models: tuple[str, ...] = ()

    @field_validator("blocked_terms", mode="before")
    @classmethod
    def _normalised(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(t for t in (normalise_term(str(v)) for v in value) if t and t != "*")
        return value


class PromptBlocked(UserFacingError):
    """A prompt the guild's policy refuses; ``user_message`` is shown privately to its author."""

    def __init__(self, term: str) -> None:
        self.term = term
        super().__init__(
            f"This server doesn't allow prompts with “{term.rstrip('*')}”. "
            "Change the prompt and try again."
        )


def check_prompt(prompt: str, settings: GuildSettings | None) -> None:
    """Raise :class:`PromptBlocked` when the guild blocks a term in ``prompt``."""
    if settings is None or not settings.blocked_terms:
        return
    term = blocked_term(prompt, settings.blocked_terms)
    if term is not None:
        raise PromptBlocked(term)


def safety_checker_enabled(settings: GuildSettings | None, *, channel_nsfw: bool) -> bool:
    """Always on, except in an NSFW channel of a guild whose admins turned it off there."""
    return not (channel_nsfw and settings is not None and settings.unfiltered_in_nsfw)


def describe_terms(terms: Sequence[str], limit: int = 900) -> str:
    """The list for an admin's eyes, cut to fit a message field."""
    if not terms:
        return "none"
    text = ", ".join(terms)
    return text if len(text) <= limit else text[: limit - 1] + "…"
