"""The web UI's in-memory sessions: ids, expiry and ending them, on a clock the test moves."""

from __future__ import annotations

from mailstack.webui.sessions import Sessions, same_token
from tests.unit.support import Clock


def test_a_session_is_found_by_its_random_id_only() -> None:
    sessions = Sessions(clock=Clock())
    sid, session = sessions.start("a@example.com")
    other, _ = sessions.start("a@example.com")
    assert sid != other
    assert len(sid) >= 43  # 32 random bytes, base64url
    assert sessions.get(sid) is session
    assert sessions.get(sid[:-1]) is None
    assert sessions.get(None) is None


def test_sessions_expire_when_idle_and_after_their_lifetime() -> None:
    clock = Clock()
    sessions = Sessions(idle=60, lifetime=300, clock=clock)
    sid, _ = sessions.start("a@example.com")
    for _ in range(4):  # busy: each request keeps it alive...
        clock.now += 50
        assert sessions.get(sid) is not None
    clock.now += 101  # ...until the lifetime is over
    assert sessions.get(sid) is None
    idle, _ = sessions.start("a@example.com")
    clock.now += 61
    assert sessions.get(idle) is None
    assert len(sessions) == 0


def test_ending_sessions() -> None:
    sessions = Sessions(clock=Clock())
    mine, _ = sessions.start("a@example.com")
    other, _ = sessions.start("a@example.com")
    theirs, _ = sessions.start("b@example.com")
    sessions.end_others("a@example.com", keep=mine)
    assert sessions.get(other) is None
    assert sessions.get(mine) is not None
    assert sessions.get(theirs) is not None
    sessions.end(mine)
    assert sessions.get(mine) is None


def test_the_oldest_sessions_are_forgotten_beyond_the_limit() -> None:
    sessions = Sessions(limit=2, clock=Clock())
    first, _ = sessions.start("a@example.com")
    sessions.start("b@example.com")
    sessions.start("c@example.com")
    assert len(sessions) == 2
    assert sessions.get(first) is None


def test_tokens_compare_whole() -> None:
    assert same_token("abc", "abc")
    assert not same_token("ab", "abc")
    assert not same_token(None, "abc")
    assert not same_token("", "abc")
