"""Signed expiring URLs (Node-Media-Server's ``?sign=``, HS256 JWTs) and composite authenticators.

Checked: the NMS hash is the one Node-Media-Server computes (a vector worked out by hand with
hashlib here, independent of the module); a signature is refused once expired, for another
stream (replayed across streams), for another app, when malformed, and reported as missing
when absent (HTTP 401); JWTs by query and by Bearer header, their claims (stream, app, action,
wildcards, exp); arbitrary strings as signatures only ever raise ``Unauthorized`` (hypothesis);
``sign_url`` round-trips through the authenticator; composites: any-of, all-of (renames carried
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
NOW = 1_800_000_000
KEY = StreamKey("live", "cam")


def signed(query: dict[str, str], *, bearer: str | None = None) -> Credentials:
    return Credentials(query=query, bearer=bearer, peer=("203.0.113.7", 4000), protocol="rtmp")


def auth(**options: object) -> SignedUrlAuthenticator:
    return SignedUrlAuthenticator(SECRET, clock=lambda: NOW, **options)  # type: ignore[arg-type]


def refusal(authenticator: SignedUrlAuthenticator, action: str, key: StreamKey, credentials: Credentials) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        authenticator.check(action, key, credentials)
    return caught.value


def test_nms_signature_is_node_media_servers_md5_of_path_expiry_and_secret() -> None:
    expected = hashlib.md5(f"/live/cam-{NOW + 60}-{SECRET}".encode()).hexdigest()
    assert nms_sign("live", "cam", NOW + 60, SECRET) == f"{NOW + 60}-{expected}"


def test_nms_signature_accepted_until_it_expires_and_only_for_its_stream() -> None:
    good = nms_sign("live", "cam", NOW + 60, SECRET)
    auth().check("publish", KEY, signed({"sign": good}))
    auth().check("play", KEY, signed({"sign": good}))
    assert refusal(auth(), "play", StreamKey("live", "other"), signed({"sign": good})).reason.startswith("wrong signature")
    assert refusal(auth(), "play", StreamKey("vod", "cam"), signed({"sign": good})).reason.startswith("wrong signature")
    expired = nms_sign("live", "cam", NOW - 1, SECRET)
    assert refusal(auth(), "publish", KEY, signed({"sign": expired})).reason == "signature expired"
    pushed = f"{NOW + 3600}-{good.partition('-')[2]}"  # the expiry is in the hash: it cannot be moved
    assert refusal(auth(), "publish", KEY, signed({"sign": pushed})).reason.startswith("wrong signature")
    other_secret = nms_sign("live", "cam", NOW + 60, "guess")
    assert refusal(auth(), "publish", KEY, signed({"sign": other_secret})).reason.startswith("wrong signature")


@pytest.mark.parametrize("sign", ["", "abc", "123-", "-" + "0" * 32, "12x-" + "0" * 32, "1" * 13 + "-" + "0" * 32,
                                  f"{NOW + 60}-" + "0" * 31, "9" * 5000])
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
    assert refusal(auth(), "play", StreamKey("live", "x"), signed({"jwt": token})).reason == "token is for another stream"
    any_stream = make_jwt(SECRET, "live", "*", NOW + 60, ["play", "publish"])
    auth().check("publish", StreamKey("live", "x"), signed({"jwt": any_stream}))
    assert refusal(auth(), "play", StreamKey("vod", "x"), signed({"jwt": any_stream})).reason == "token is for another stream"
    expired = make_jwt(SECRET, "live", "cam", NOW - 1)
    assert refusal(auth(), "play", KEY, signed({"jwt": expired})).reason == "token expired"
    assert refusal(auth(), "play", KEY, signed({"jwt": make_jwt("wrong", "live", "cam", NOW + 60)})).reason \
        == "wrong token signature"
    no_exp = pyjwt.encode({"app": "live", "stream": "cam"}, SECRET, algorithm="HS256")
    assert refusal(auth(), "play", KEY, signed({"jwt": no_exp})).reason == "malformed token"
    none_alg = pyjwt.encode({"app": "live", "stream": "cam", "exp": NOW + 60}, None, algorithm="none")
    assert refusal(auth(), "play", KEY, signed({"jwt": none_alg})).reason == "malformed token"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300), st.sampled_from(["publish", "play"]))
def test_arbitrary_signatures_only_ever_refuse(sign: str, token: str, action: str) -> None:
    for query in ({"sign": sign}, {"jwt": token}, {"sign": sign, "jwt": token}):
        try:
            auth().check(action, KEY, signed({k: v for k, v in query.items() if v}))
        except Unauthorized:
            continue
        raise AssertionError(f"accepted {query!r}")


@pytest.mark.parametrize("url", ["rtmp://example.org/live/cam", "http://example.org:8080/live/cam.flv?x=1",
                                 "https://example.org/live/cam/index.m3u8", "/live/cam"])
@pytest.mark.parametrize("style", ["nms", "jwt"])
def test_sign_url_makes_urls_the_authenticator_accepts(url: str, style: str) -> None:
    made = sign_url(url, SECRET, NOW + 60, style=style)
    query = dict(parse_qsl(urlsplit(made).query))
    assert urlsplit(made).path == urlsplit(url).path
    auth().check("play", KEY, signed(query))
    with pytest.raises(ValueError):
        sign_url("rtmp://example.org/live", SECRET, NOW)


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
    either = AnyOf([token, SignedUrlAuthenticator(SECRET)])
    assert await ask(either, "publish", KEY, Credentials(token="t")) == KEY
    assert await ask(either, "publish", KEY, Credentials(query={"sign": nms_sign("live", "cam", 4 * 10**9, SECRET)})) == KEY
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
    engine = (Engine.builder().application(AppSpec("live")).application(AppSpec("studio"))
              .authenticator(AllOf([Renamer(StreamKey("studio", "main")), TokenAuthenticator(play_token="v")]))
              .observer(observer).build())
    async with engine:
        async with engine.publish("live/secret-key", Credentials(peer=("198.51.100.1", 1))) as publisher:
            assert publisher.key == StreamKey("studio", "main")
            assert engine.has_stream(StreamKey("studio", "main")) and not engine.has_stream(StreamKey("live", "secret-key"))
        with pytest.raises(Unauthorized):
            async with engine.subscribe("live/x", Credentials(token="wrong")):
                pass
    publish, play = seen
    assert (publish.action, publish.allowed, publish.renamed, publish.key) == \
        ("publish", True, StreamKey("studio", "main"), StreamKey("live", "secret-key"))
    assert publish.client_id and publish.peer == ("198.51.100.1", 1)
    assert (play.action, play.allowed, play.reason) == ("play", False, "wrong token")
