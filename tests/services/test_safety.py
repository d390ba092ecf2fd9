"""services.safety: blocked terms match whole words only, cost little whatever admins type."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.safety import (
    MAX_TERMS,
    GuildSettings,
    PromptBlocked,
    TermsRejected,
    blocked_term,
    check_prompt,
    parse_terms,
    safety_checker_enabled,
    words,
)


@pytest.mark.parametrize(
    ("prompt", "terms", "found"),
    [
        ("a gory scene", ("gore",), None),  # word boundaries, not substrings
        ("gorengan on a plate", ("gore",), None),
        ("Lots of GORE!", ("gore",), "gore"),
        ("ｇｏｒｅ in fullwidth", ("gore",), "gore"),  # NFKC
        ("STRASSE sign", ("straße",), "strasse"),  # casefold both ways
        ("a gory scene", ("gor*",), "gor*"),
        ("a  Dark\tMagic  ritual", ("dark magic",), "dark magic"),
        ("dark, magic", ("dark magic",), "dark magic"),  # punctuation is a separator
        ("darkmagic", ("dark magic",), None),
        ("a dark magician", ("dark magic*",), "dark magic*"),
        ("snake_case words", ("snake",), "snake"),  # underscores split words
        ("", ("gore",), None),
        ("gore", (), None),
    ],
)
def test_blocked_term(prompt: str, terms: tuple[str, ...], found: str | None) -> None:
    normalised = GuildSettings(guild_id=1, blocked_terms=terms).blocked_terms
    assert blocked_term(prompt, normalised) == found


def test_parse_terms_normalises_dedupes_and_keeps_order() -> None:
    assert parse_terms("Gore, blood\n  dark   MAGIC ,gore,, gor* ") == (
        "gore",
        "blood",
        "dark magic",
        "gor*",
    )
    assert parse_terms("") == ()


@pytest.mark.parametrize(
    ("text", "words_in_message"),
    [
        ("(a+)+$", "looks like a pattern"),  # regexes are refused, not half-matched
        ("gor.*", "looks like a pattern"),
        ("*", "letters or digits"),
        ("- '", "letters or digits"),
        ("x" * 51, "too long"),
        ("one two three four five six", "at most 5 words"),
        (", ".join(f"w{i}" for i in range(MAX_TERMS + 1)), f"at most {MAX_TERMS}"),
    ],
)
def test_parse_terms_refuses_what_it_cannot_bound(text: str, words_in_message: str) -> None:
    with pytest.raises(TermsRejected) as caught:
        parse_terms(text)
    assert words_in_message in caught.value.user_message


def test_check_prompt_and_safety_checker_rules() -> None:
    strict = GuildSettings(guild_id=1, blocked_terms=("gore",))
    with pytest.raises(PromptBlocked) as caught:
        check_prompt("so much Gore", strict)
    assert "gore" in caught.value.user_message
    check_prompt("a kitten", strict)
    check_prompt("so much gore", None)

    relaxed = GuildSettings(guild_id=1, unfiltered_in_nsfw=True)
    assert safety_checker_enabled(relaxed, channel_nsfw=True) is False
    assert safety_checker_enabled(relaxed, channel_nsfw=False) is True
    assert safety_checker_enabled(strict, channel_nsfw=True) is True
    assert safety_checker_enabled(None, channel_nsfw=True) is True


@settings(max_examples=60, deadline=None)
@given(
    before=st.text(max_size=200),
    after=st.text(max_size=200),
    term=st.lists(st.text("abcxyzé0", min_size=1, max_size=8), min_size=1, max_size=3),
)
def test_a_term_surrounded_by_any_text_is_found(before: str, after: str, term: list[str]) -> None:
    phrase = " ".join(term)
    (stored,) = parse_terms(phrase)
    assert blocked_term(f"{before} {phrase.upper()} {after}", (stored,)) is not None


@settings(max_examples=60, deadline=None)
@given(prompt=st.text(max_size=4000), terms=st.lists(st.text(max_size=50), max_size=20))
def test_any_prompt_and_any_terms_never_raise(prompt: str, terms: list[str]) -> None:
    stored = GuildSettings(guild_id=1, blocked_terms=terms).blocked_terms
    found = blocked_term(prompt, stored)
    assert found is None or found in stored
    assert all(w == w.casefold() for w in words(prompt))


def test_matching_cost_is_linear_on_hostile_input() -> None:
    """The kind of prompt that makes a backtracking regex take hours, against a full list."""
    terms = parse_terms(", ".join(f"{'a ' * 4}w{i}*" for i in range(MAX_TERMS)))
    prompt = "a " * 2000 + "!"
    started = time.perf_counter()
    assert blocked_term(prompt, terms) is None
    assert time.perf_counter() - started < 0.5
