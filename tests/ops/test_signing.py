"""Signed expiring URLs (Node-Media-Server's ``?sign=``, HS256 JWTs) and composite authenticators.

Checked: the NMS hash is the one Node-Media-Server computes (a vector worked out by hand with
hashlib here, independent of the module); a signature is refused once expired, for another
stream (replayed across streams), for another app, when malformed (Unicode digits included),
and reported as missing when absent (HTTP 401); a play ``?sign=`` never publishes, a publish
one is made with its own secret; JWTs by query and by Bearer header, their claims (stream, app,
action — required —, wildcards, exp); arbitrary strings as signatures only ever raise
``Unauthorized`` (hypothesis); ``sign_url`` round-trips through the authenticator, for its
action only; composites: any-of, all-of (renames carried
to the next member), per action, per application; through the engine, the decision reaches the
observers and a rename moves the publish.
"""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl, urlsplit

import jwt as pyjwt
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio import AppSpec, Credentials, Engine, StreamKey, TokenAuthenticator, Unauthorized
from arcly_trio.kernel.events import AuthDecided
from arcly_trio.ops import AllOf, AnyOf, ByApp, ForActions, SignedUrlAuthenticator, make_jwt, nms_sign, sign_url
from arcly_trio.ops.composite import Swappable, TrustedPeers, ask
from arcly_trio.testing import CountingObserver

SECRET = "nodemedia2017privatekey"
PUBLISH_SECRET = "streamers-only-2017"
NOW = 1_800_000_000
KEY = StreamKey("live", "cam")


def signed(query: dict[str, str], *, bearer: str | None = None) -> Credentials:
    return Credentials(query=query, bearer=bearer, peer=("203.0.113.7", 4000), protocol="rtmp")


def auth(**options: object) -> SignedUrlAuthenticator:
    return SignedUrlAuthenticator(SECRET, clock=lambda: NOW, **options)  # type: ignore[arg-type]


def refusal(
    authenticator: SignedUrlAuthenticator, action: str, key: StreamKey, credentials: Credentials
) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        authenticator.check(action, key, credentials)
    return caught.value


def test_nms_signature_is_node_media_servers_md5_of_path_expiry_and_secret() -> None:
    expected = hashlib.md5(f"/live/cam-{NOW + 60}-{SECRET}".encode()).hexdigest()
    assert nms_sign("live", "cam", NOW + 60, SECRET) == f"{NOW + 60}-{expected}"


def test_nms_signature_accepted_until_it_expires_and_only_for_its_stream() -> None:
    good = nms_sign("live", "cam", NOW + 60, SECRET)
    auth().check("play", KEY, signed({"sign": good}))
    assert refusal(auth(), "play", StreamKey("live", "other"), signed({"sign": good})).reason.startswith(
        "wrong signature"
    )
    assert refusal(auth(), "play", StreamKey("vod", "cam"), signed({"sign": good})).reason.startswith("wrong signature")
    expired = nms_sign("live", "cam", NOW - 1, SECRET)
    assert refusal(auth(), "play", KEY, signed({"sign": expired})).reason == "signature expired"
    pushed = f"{NOW + 3600}-{good.partition('-')[2]}"  # the expiry is in the hash: it cannot be moved
    assert refusal(auth(), "play", KEY, signed({"sign": pushed})).reason.startswith("wrong signature")
    other_secret = nms_sign("live", "cam", NOW + 60, "guess")
    assert refusal(auth(), "play", KEY, signed({"sign": other_secret})).reason.startswith("wrong signature")


def test_an_nms_play_signature_never_publishes() -> None:
    """Issue 18, finding 1: the hash has no action in it, so a viewer's ?sign= published.
    Mutant killed: the NMS form checked for every action with the one secret."""
    viewer = nms_sign("live", "cam", NOW + 60, SECRET)
    found = refusal(auth(), "publish", KEY, signed({"sign": viewer}))
    assert found.reason.startswith("a ?sign= does not allow publish") and not found.missing
    # With a publish signing secret, a ?sign= made with it publishes, and only publishes.
    both = auth(publish_secret=PUBLISH_SECRET)
    streamer = nms_sign("live", "cam", NOW + 60, PUBLISH_SECRET)
    both.check("publish", KEY, signed({"sign": streamer}))
    both.check("play", KEY, signed({"sign": viewer}))
    assert refusal(both, "publish", KEY, signed({"sign": viewer})).reason.startswith("wrong signature")
    assert refusal(both, "play", KEY, signed({"sign": streamer})).reason.startswith("wrong signature")
    assert refusal(both, "publish", StreamKey("live", "x"), signed({"sign": streamer})).reason.startswith("wrong")
    with pytest.raises(ValueError, match="must differ"):
        SignedUrlAuthenticator(SECRET, publish_secret=SECRET)
    with pytest.raises(ValueError, match="must not be empty"):
        SignedUrlAuthenticator(SECRET, publish_secret="")


@pytest.mark.parametrize(
    "sign",
    [
        "",
        "abc",
        "123-",
        "-" + "0" * 32,
        "12x-" + "0" * 32,
        "1" * 13 + "-" + "0" * 32,
        f"{NOW + 60}-" + "0" * 31,
        "9" * 5000,
        # Unicode digits: str.isdigit() says yes, int() fails (finding 2)
        "\u00b2-" + "0" * 32,
        "\u0661\u0662-" + "0" * 32,
        "\uff11-" + "0" * 32,
        "+1-" + "0" * 32,
        " 1-" + "0" * 32,
        "1_0-" + "0" * 32,
        f"{NOW + 60}-" + "g" * 32,
        f"{NOW + 60}-" + "0" * 32 + "\n",
    ],
)
def test_malformed_signatures_are_refused_as_such(sign: str) -> None:
    found = refusal(auth(), "play", KEY, signed({"sign": sign} if sign else {}))
    assert found.reason in ("malformed signature", "no signature")
    assert found.missing == (sign == "") and found.http_status == (401 if sign == "" else 403)


def test_only_the_guarded_actions_need_a_signature() -> None:
    publish_only = auth(actions={"publish"})
    publish_only.check("play", KEY, signed({}))
    assert refusal(publish_only, "publish", KEY, signed({})).missing


def test_jwt_by_query_or_bearer_header_with_its_claims() -> None:
    token = make_jwt(SECRET, "live", "cam", NOW + 60, "play")
    auth().check("play", KEY, signed({"jwt": token}))
    auth().check("play", KEY, signed({}, bearer=token))
    assert refusal(auth(), "publish", KEY, signed({"jwt": token})).reason == "token does not allow publish"
    assert (
        refusal(auth(), "play", StreamKey("live", "x"), signed({"jwt": token})).reason == "token is for another stream"
    )
    any_stream = make_jwt(SECRET, "live", "*", NOW + 60, ["play", "publish"])
    auth().check("publish", StreamKey("live", "x"), signed({"jwt": any_stream}))
    assert (
        refusal(auth(), "play", StreamKey("vod", "x"), signed({"jwt": any_stream})).reason
        == "token is for another stream"
    )
    expired = make_jwt(SECRET, "live", "cam", NOW - 1)
    assert refusal(auth(), "play", KEY, signed({"jwt": expired})).reason == "token expired"
    assert (
        refusal(auth(), "play", KEY, signed({"jwt": make_jwt("wrong", "live", "cam", NOW + 60)})).reason
        == "wrong token signature"
    )
    no_exp = pyjwt.encode({"app": "live", "stream": "cam", "action": "play"}, SECRET, algorithm="HS256")
    assert refusal(auth(), "play", KEY, signed({"jwt": no_exp})).reason == "malformed token"
    none_alg = pyjwt.encode({"app": "live", "stream": "cam", "exp": NOW + 60}, None, algorithm="none")
    assert refusal(auth(), "play", KEY, signed({"jwt": none_alg})).reason == "malformed token"


def test_a_jwt_must_name_its_action_and_a_wildcard_must_be_written() -> None:
    """Issue 18, finding 1: a JWT without an ``action`` claim allowed everything.
    Mutant killed: ``claims.get("action", "*")``."""
    silent = pyjwt.encode({"app": "live", "stream": "cam", "exp": NOW + 60}, SECRET, algorithm="HS256")
    for action in ("publish", "play"):
        assert refusal(auth(), action, KEY, signed({"jwt": silent})).reason == "token names no action"
    assert make_jwt(SECRET, "live", "cam", NOW + 60) == make_jwt(SECRET, "live", "cam", NOW + 60, "play")  # least
    wildcard = make_jwt(SECRET, "live", "cam", NOW + 60, "*")
    auth().check("publish", KEY, signed({"jwt": wildcard}))
    auth().check("play", KEY, signed({"jwt": wildcard}))
    for odd in (None, 1, {"publish": True}, ["pla"], ""):
        token = pyjwt.encode(
            {"app": "live", "stream": "cam", "exp": NOW + 60, "action": odd}, SECRET, algorithm="HS256"
        )
        assert refusal(auth(), "publish", KEY, signed({"jwt": token})).reason == "token does not allow publish"


def test_a_viewer_sign_next_to_a_streamer_jwt_still_publishes() -> None:
    viewer = nms_sign("live", "cam", NOW + 60, SECRET)
    streamer = make_jwt(SECRET, "live", "cam", NOW + 60, "publish")
    auth().check("publish", KEY, signed({"sign": viewer, "jwt": streamer}))
    found = refusal(auth(), "publish", KEY, signed({"sign": viewer, "jwt": make_jwt(SECRET, "live", "cam", NOW + 60)}))
    assert "does not allow publish" in found.reason and "token does not allow publish" in found.reason


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300), st.sampled_from(["publish", "play"]))
def test_arbitrary_signatures_only_ever_refuse(sign: str, token: str, action: str) -> None:
    for query in ({"sign": sign}, {"jwt": token}, {"sign": sign, "jwt": token}):
        try:
            auth().check(action, KEY, signed({k: v for k, v in query.items() if v}))
        except Unauthorized:
            continue
        raise AssertionError(f"accepted {query!r}")


@pytest.mark.parametrize(
    "url",
    [
        "rtmp://example.org/live/cam",
        "http://example.org:8080/live/cam.flv?x=1",
        "https://example.org/live/cam/index.m3u8",
        "/live/cam",
    ],
)
@pytest.mark.parametrize("style", ["nms", "jwt"])
def test_sign_url_makes_urls_the_authenticator_accepts_for_their_action_only(url: str, style: str) -> None:
    made = sign_url(url, SECRET, NOW + 60, style=style)
    query = dict(parse_qsl(urlsplit(made).query))
    assert urlsplit(made).path == urlsplit(url).path
    checker = auth(publish_secret=PUBLISH_SECRET)
    checker.check("play", KEY, signed(query))  # a play URL by default...
    assert refusal(checker, "publish", KEY, signed(query)).http_status == 403  # ...that never publishes
    streamer = sign_url(url, SECRET, NOW + 60, style=style, action="publish", publish_secret=PUBLISH_SECRET)
    streamer_query = dict(parse_qsl(urlsplit(streamer).query))
    checker.check("publish", KEY, signed(streamer_query))
    assert refusal(checker, "play", KEY, signed(streamer_query)).http_status == 403
    with pytest.raises(ValueError):
        sign_url("rtmp://example.org/live", SECRET, NOW)


def test_sign_url_refuses_what_a_sign_cannot_carry() -> None:
    with pytest.raises(ValueError, match="publish signing secret"):
        sign_url("rtmp://h/live/cam", SECRET, NOW, style="nms", action="publish")
    with pytest.raises(ValueError, match="one action"):
        sign_url("rtmp://h/live/cam", SECRET, NOW, style="nms", action="*")
    with pytest.raises(ValueError, match="unknown action"):
        sign_url("rtmp://h/live/cam", SECRET, NOW, style="jwt", action="delete")
    both = sign_url("rtmp://h/live/cam", SECRET, NOW + 60, style="jwt", action="*")
    auth().check("publish", KEY, signed(dict(parse_qsl(urlsplit(both).query))))


# --------------------------------------------------------------------------- composites


class Renamer:
    def __init__(self, to: StreamKey | None = None, refuse: str = "", missing: bool = False) -> None:
        self.to, self.refuse, self.missing, self.asked = to, refuse, missing, []  # type: ignore[var-annotated]

    async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> StreamKey | None:
        return self._decide("publish", key)

    async def authorize_play(self, key: StreamKey, credentials: Credentials) -> StreamKey | None:
        return self._decide("play", key)

    def _decide(self, action: str, key: StreamKey) -> StreamKey | None:
        self.asked.append((action, key))
        if self.refuse:
            raise Unauthorized(key.app, key.name, action, self.refuse, missing=self.missing)
        return self.to


async def test_any_of_takes_the_first_that_allows_and_joins_the_reasons() -> None:
    token = TokenAuthenticator(publish_token="t")
    either = AnyOf([token, SignedUrlAuthenticator(SECRET, publish_secret=PUBLISH_SECRET)])
    assert await ask(either, "publish", KEY, Credentials(token="t")) == KEY
    publish_sign = nms_sign("live", "cam", 4 * 10**9, PUBLISH_SECRET)
    assert await ask(either, "publish", KEY, Credentials(query={"sign": publish_sign})) == KEY
    with pytest.raises(Unauthorized) as caught:
        await ask(either, "publish", KEY, Credentials())
    assert caught.value.reason == "no token; no signature" and caught.value.missing
    with pytest.raises(Unauthorized) as caught:
        await ask(either, "publish", KEY, Credentials(token="nope"))
    assert not caught.value.missing and caught.value.http_status == 403


async def test_all_of_asks_each_in_order_with_the_renamed_key() -> None:
    first, second = Renamer(StreamKey("live", "renamed")), Renamer()
    assert await ask(AllOf([first, second]), "play", KEY, Credentials()) == StreamKey("live", "renamed")
    assert second.asked == [("play", StreamKey("live", "renamed"))]
    refusing = Renamer(refuse="hook said no")
    with pytest.raises(Unauthorized, match="hook said no"):
        await ask(AllOf([Renamer(), refusing, second]), "play", KEY, Credentials())
    assert len(second.asked) == 1  # not asked after a refusal


async def test_for_actions_and_by_app() -> None:
    guard = ForActions(Renamer(refuse="closed"), {"publish"})
    assert await ask(guard, "play", KEY, Credentials()) == KEY
    with pytest.raises(Unauthorized):
        await ask(guard, "publish", KEY, Credentials())
    with pytest.raises(ValueError):
        ForActions(Renamer(), {"delete"})
    per_app = ByApp(Renamer(), {"vip": Renamer(refuse="members only")})
    assert await ask(per_app, "play", KEY, Credentials()) == KEY
    with pytest.raises(Unauthorized, match="members only"):
        await ask(per_app, "play", StreamKey("vip", "cam"), Credentials())
    trusted = TrustedPeers(Renamer(refuse="no"), {("local", 0)})
    assert await ask(trusted, "play", KEY, Credentials(peer=("local", 0))) == KEY
    with pytest.raises(Unauthorized):
        await ask(trusted, "play", KEY, Credentials(peer=("203.0.113.1", 0)))


async def test_swappable_starts_the_new_one_and_retires_the_old() -> None:
    class Running(Renamer):
        def __init__(self) -> None:
            super().__init__()
            self.running = False

        async def run(self, engine: object, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            self.running = True
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.running = False

    old, new = Running(), Running()
    holder = Swappable(old, linger=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(holder.run, None)
        assert old.running
        await holder.swap(new)
        assert new.running and old.running  # calls in flight finish with the old one
        await ask(holder, "play", KEY, Credentials())
        assert new.asked and not old.asked
        await trio.sleep(1.5)
        assert not old.running and new.running
        nursery.cancel_scope.cancel()


async def test_engine_follows_a_rename_and_tells_the_observers() -> None:
    observer = CountingObserver()
    seen: list[AuthDecided] = []
    observer.on_auth_decided = seen.append  # type: ignore[method-assign]
    engine = (
        Engine.builder()
        .application(AppSpec("live"))
        .application(AppSpec("studio"))
        .authenticator(AllOf([Renamer(StreamKey("studio", "main")), TokenAuthenticator(play_token="v")]))
        .observer(observer)
        .build()
    )
    async with engine:
        async with engine.publish("live/secret-key", Credentials(peer=("198.51.100.1", 1))) as publisher:
            assert publisher.key == StreamKey("studio", "main")
            assert engine.has_stream(StreamKey("studio", "main")) and not engine.has_stream(
                StreamKey("live", "secret-key")
            )
        with pytest.raises(Unauthorized):
            async with engine.subscribe("live/x", Credentials(token="wrong")):
                pass
    publish, play = seen
    assert (publish.action, publish.allowed, publish.renamed, publish.key) == (
        "publish",
        True,
        StreamKey("studio", "main"),
        StreamKey("live", "secret-key"),
    )
    assert publish.client_id and publish.peer == ("198.51.100.1", 1)
    assert (play.action, play.allowed, play.reason) == ("play", False, "wrong token")


async def test_an_authenticator_answering_nonsense_refuses() -> None:
    """A broken authenticator that answers neither None, a bool nor a StreamKey (``"deny"``, a
    truthy string) was taken as allowing. Mutant killed: anything but ``False`` allows."""

    class Nonsense:
        async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> object:
            return "deny"

        authorize_play = authorize_publish

    with pytest.raises(TypeError):
        await ask(Nonsense(), "play", KEY, Credentials())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await ask(AnyOf([Nonsense()]), "play", KEY, Credentials())  # type: ignore[list-item]
    engine = Engine.builder().application(AppSpec("live")).authenticator(Nonsense()).build()  # type: ignore[arg-type]
    async with engine:
        with pytest.raises(Unauthorized, match="authorization failed"):
            async with engine.publish("live/cam", Credentials(peer=("198.51.100.1", 1))):
                pass
    assert engine.authenticator_failures == 1 and engine.auth_throttle.refusals == 1


def test_valid_until_is_the_expiry_of_the_valid_signature_presented() -> None:
    """What a reused decision (an HLS session) must not outlive: the ``sign``'s expiry, the
    JWT's ``exp`` plus the leeway, the later of both; 0 when none is valid, ``None`` when the
    action needs no signature."""
    key = StreamKey("live", "cam")
    auth = SignedUrlAuthenticator("s3cret", actions=("play",), leeway=5, clock=lambda: 1000.0)
    sign = nms_sign("live", "cam", 2000, "s3cret")
    token = make_jwt("s3cret", "live", "cam", 3000)
    assert auth.valid_until("play", key, Credentials(query={"sign": sign})) == 2000
    assert auth.valid_until("play", key, Credentials(query={"jwt": token})) == 3005
    assert auth.valid_until("play", key, Credentials(query={"sign": sign, "jwt": token})) == 3005
    assert auth.valid_until("play", key, Credentials(query={"sign": nms_sign("live", "cam", 999, "s3cret")})) == 0
    assert auth.valid_until("play", key, Credentials(query={"jwt": token + "x"})) == 0
    assert auth.valid_until("publish", key, Credentials()) is None


def test_composites_forward_valid_until_as_the_server_builds_them() -> None:
    """``arcly-trio serve``'s ``AllOf([ForActions(AnyOf([token, signed]), ...), hooks])``: a
    signed play holds until its signature expires, a right token for ever (``None``), a member
    that cannot tell (a hook) bounds nothing in ``AllOf`` and makes ``AnyOf`` unknown."""

    class Hook:
        async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> None:
            return None

        async def authorize_play(self, key: StreamKey, credentials: Credentials) -> None:
            return None

    key = StreamKey("live", "cam")
    signed = SignedUrlAuthenticator("s3cret", clock=lambda: 1000.0)
    either = AnyOf([TokenAuthenticator(play_token="t"), signed])
    server = AllOf([ForActions(either, {"publish"}), ForActions(either, {"play"}), Hook()])
    sign = nms_sign("live", "cam", 2000, "s3cret")
    assert server.valid_until("play", key, Credentials(query={"sign": sign})) == 2000
    assert server.valid_until("play", key, Credentials(token="t")) is None
    assert server.valid_until("play", key, Credentials(token="t", query={"sign": sign})) is None
    assert ByApp(server, {}).valid_until("play", key, Credentials(query={"sign": sign})) == 2000
    assert TrustedPeers(signed, [("10.0.0.1", 1)]).valid_until("play", key, Credentials(peer=("10.0.0.1", 1))) is None
    assert Swappable(signed).valid_until("play", key, Credentials(query={"sign": sign})) == 2000
    assert AnyOf([signed, Hook()]).valid_until("play", key, Credentials(query={"sign": sign})) is None
