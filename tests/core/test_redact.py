"""The one redaction helper (``arcly_trio.core.redact``): what it hides, what it keeps, fuzzed.

Issue 18, finding 3: option URLs reached ``/api/health`` (a hook's ``user:password@``), logs and
errors. Every place that shows an option's URL uses :func:`redact_url` (or :func:`scrub` for an
error text that may quote it); ``tests/ops/test_ops_interop.py`` checks the whole server with canaries.
"""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.core.redact import redact_url, scrub
from arcly_trio.protocols.rtmp.url import parse_rtmp_url
from arcly_trio.relay.push import PushTarget

SECRET = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=2, max_size=30).map(
    lambda text: "Q9" + text
)  # "Q9": never part of the URLs' other parts, so any sighting is a leak


def test_what_is_hidden_and_what_is_kept() -> None:
    assert (
        redact_url("https://hook:s3cret@example.com:8443/on_publish?key=abc&x")
        == "https://***@example.com:8443/on_publish?key=***&***"
    )
    assert redact_url("redis://:pa55word@redis.internal:6379/0") == "redis://***@redis.internal:6379/0"
    assert redact_url("rtmp://a.rtmp.youtube.com/live2/KEY#frag") == "rtmp://a.rtmp.youtube.com/live2/KEY"
    assert redact_url("http://example.com/hook") == "http://example.com/hook"  # nothing to hide
    # Push links shorten a stream key placed in the path, and hide the query's values.
    assert (
        parse_rtmp_url("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl?bitrate=1").redacted()
        == "rtmp://a.rtmp.youtube.com:1935/live2/abcd…?bitrate=***"
    )


@given(user=SECRET, password=SECRET, value=SECRET)
def test_no_credential_or_query_value_survives(user: str, password: str, value: str) -> None:
    quoted = {name: quote(text, safe="") for name, text in (("user", user), ("password", password), ("value", value))}
    for url, secrets in (
        (
            f"https://{quoted['user']}:{quoted['password']}@example.com/x?key={quoted['value']}",
            (user, password, value, quoted["value"]),
        ),
        (f"rtmp://{quoted['user']}@example.com/app/s?a=1&token={quoted['value']}", (user, value, quoted["value"])),
    ):
        shown = redact_url(url)
        assert "Q9" not in shown, (url, shown)
        message = f"connecting to {url} failed: " + "; ".join(secrets)  # an error that quotes it all
        assert "Q9" not in scrub(message, url), message


@given(st.text(max_size=200))
def test_never_raises(text: str) -> None:
    redact_url(text)
    scrub(text, text)


def test_configuration_errors_show_urls_redacted() -> None:
    import pytest

    from arcly_trio.ops.hooks import check_hook_url

    with pytest.raises(ValueError) as caught:
        check_hook_url("ftp://u:hunter22@host/x?key=k3yk3y")
    assert "hunter22" not in str(caught.value) and "k3yk3y" not in str(caught.value)
    with pytest.raises(ValueError) as caught:
        PushTarget("http://u:hunter22@host/{stream}?key=k3yk3y")
    assert "hunter22" not in str(caught.value) and "k3yk3y" not in str(caught.value)
