"""``check_key``'s one-match fast path accepts exactly the keys the piece-by-piece rules accept."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.storage import InvalidStorageKey, check_key
from arcly_trio.storage.base import MAX_KEY_LENGTH

_RULE = re.compile(r"[^/\\\x00-\x1f\x7f.][^/\\\x00-\x1f\x7f]*")


def valid_by_the_rules(key: str) -> bool:
    """The documented rules, one by one (the reference)."""
    if not key or len(key) > MAX_KEY_LENGTH or key.startswith("/"):
        return False
    return all(segment and segment not in (".", "..") and _RULE.fullmatch(segment) for segment in key.split("/"))


def accepted(key: str) -> bool:
    try:
        return check_key(key) == key
    except InvalidStorageKey:
        return False


_PIECES = st.sampled_from(
    ["a", "live", "cam", "x-1.m4s", ".", "..", ".h", "/", "//", "\\", "\x00", "\x7f", "é", " ", "\n"]
)


@given(st.lists(_PIECES, max_size=12).map("".join) | st.text(max_size=40))
def test_check_key_accepts_exactly_the_keys_its_rules_accept(key: str) -> None:
    assert accepted(key) == valid_by_the_rules(key)


@pytest.mark.parametrize("length", [MAX_KEY_LENGTH, MAX_KEY_LENGTH + 1])
def test_the_length_limit_holds_on_the_fast_path(length: int) -> None:
    key = "a/" + "b" * (length - 2)
    assert accepted(key) == (length <= MAX_KEY_LENGTH)
