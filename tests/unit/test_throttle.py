"""The login throttle every Python login path shares, on an injected clock."""

from __future__ import annotations

from mailstack.throttle import LoginThrottle
from tests.unit.support import Clock


def test_delay_doubles_per_failure_up_to_the_cap() -> None:
    """Each failure from one address doubles the wait for the next attempt, to the cap."""
    clock = Clock()
    throttle = LoginThrottle(base_delay=1.0, max_delay=5.0, clock=clock)
    assert throttle.delay("192.0.2.1", "a@example.com") == 0
    waits = []
    for _ in range(5):
        throttle.failed("192.0.2.1", "a@example.com")
        waits.append(throttle.delay("192.0.2.1", None))
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_failures_count_for_the_account_from_any_address() -> None:
    """Spreading guesses over many addresses does not reset the account's count."""
    clock = Clock()
    throttle = LoginThrottle(base_delay=1.0, max_delay=60.0, clock=clock)
    for host in range(4):
        throttle.failed(f"192.0.2.{host}", "a@example.com")
    assert throttle.delay("198.51.100.7", "a@example.com") == 8.0
    assert throttle.delay("198.51.100.7", "b@example.com") == 0


def test_failures_age_out_after_the_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(window=60.0, clock=clock)
    throttle.failed("192.0.2.1", None)
    clock.now += 59
    assert throttle.delay("192.0.2.1", None) > 0
    clock.now += 2
    assert throttle.delay("192.0.2.1", None) == 0
