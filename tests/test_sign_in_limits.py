"""The sign-in limiter's rule with a clock the test moves: the window, its reset, per-client
against per-address keys, concurrent attempts, and the cap on tracked keys."""

from __future__ import annotations

import pytest

from batchyard.services.errors import InvalidInput, TooManyRequests, Unauthenticated
from batchyard.services.sign_in_limits import SignInLimits


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limits(clock, per_client=3, per_address=5, window=60.0, max_keys=100) -> SignInLimits:
    return SignInLimits(per_client, per_address, window, max_keys=max_keys, clock=clock)


def _fail():
    raise Unauthenticated("invalid_client", "AADSTS7000215: Invalid client secret provided.")


def _checked(calls: list):
    def check():
        calls.append(1)
        return "principal"
    return check


def _failures(limits, client, address, n):
    for _ in range(n):
        with pytest.raises(Unauthenticated):
            limits.attempt(client, address, _fail)


def test_the_wait_given_is_the_longer_of_the_client_and_the_address_locks():
    clock = Clock()
    limits = _limits(clock, per_client=2, per_address=3)
    _failures(limits, "a", "10.0.0.1", 1)
    clock.now += 30
    _failures(limits, "b", "10.0.0.1", 2)
    with pytest.raises(TooManyRequests) as locked:  # b: 60 s left; the address: 30 s
        limits.attempt("b", "10.0.0.1", _checked([]))
    assert locked.value.retry_after == 60 and "account is locked" in locked.value.message


def test_a_client_is_locked_after_its_failures_and_unlocked_when_the_window_passes():
    clock = Clock()
    limits = _limits(clock)
    _failures(limits, "app-1", "10.0.0.1", 3)
    clock.now += 20
    calls = []
    with pytest.raises(TooManyRequests) as locked:
        limits.attempt("APP-1", "10.0.0.2", _checked(calls))  # the right secret, another address, any case
    assert calls == []  # refused without running the check
    assert locked.value.code == "invalid_grant" and "AADSTS50053" in locked.value.message
    assert locked.value.retry_after == 40  # until the oldest failure leaves the window
    clock.now += 39.5
    with pytest.raises(TooManyRequests) as still:
        limits.attempt("app-1", "10.0.0.2", _checked(calls))
    assert still.value.retry_after == 1 and calls == []
    clock.now += 0.5
    assert limits.attempt("app-1", "10.0.0.2", _checked(calls)) == "principal" and calls == [1]


def test_a_sliding_window_lets_one_more_try_as_each_failure_ages_out():
    clock = Clock()
    limits = _limits(clock)
    for _ in range(3):
        _failures(limits, "app-1", "10.0.0.1", 1)
        clock.now += 10
    clock.now = 1000.0 + 60  # the first failure is out: one more try
    _failures(limits, "app-1", "10.0.0.1", 1)
    with pytest.raises(TooManyRequests) as locked:
        limits.attempt("app-1", "10.0.0.1", _checked([]))
    assert locked.value.retry_after == 10


def test_one_clients_failures_never_block_another_client_below_the_address_limit():
    clock = Clock()
    limits = _limits(clock, per_client=3, per_address=5)
    _failures(limits, "attacked", "10.0.0.1", 3)
    calls = []
    assert limits.attempt("other", "10.0.0.2", _checked(calls)) == "principal"  # another address
    assert limits.attempt("other", "10.0.0.1", _checked(calls)) == "principal"  # same address, under its limit
    assert calls == [1, 1]
    # successes are taken back: they never count toward a limit
    for _ in range(10):
        limits.attempt("other", "10.0.0.1", _checked(calls))


def test_an_address_is_locked_after_failures_across_client_ids():
    clock = Clock()
    limits = _limits(clock, per_client=3, per_address=5)
    for n in range(5):  # a spray: one guess for each of many client ids, all from one address
        with pytest.raises(InvalidInput):
            limits.attempt(f"guess-{n}", "10.0.0.9", lambda: (_ for _ in ()).throw(
                InvalidInput("unauthorized_client", "AADSTS700016: Application not found.")))
    calls = []
    with pytest.raises(TooManyRequests) as locked:
        limits.attempt("legit", "10.0.0.9", _checked(calls))
    assert "IP address" in locked.value.message and calls == []
    assert limits.attempt("legit", "10.0.0.10", _checked(calls)) == "principal"  # from elsewhere it works
    clock.now += 60
    assert limits.attempt("legit", "10.0.0.9", _checked(calls)) == "principal"


def test_an_attempt_under_way_counts_so_concurrent_ones_cannot_pass_the_limit_together():
    clock = Clock()
    limits = _limits(clock, per_client=2)
    inner = []

    def check_while_others_try():
        # two more attempts arrive while this one's check runs: one fits, then the limit holds
        with pytest.raises(Unauthenticated):
            limits.attempt("app", "10.0.0.1", _fail)
        with pytest.raises(TooManyRequests):
            limits.attempt("app", "10.0.0.1", _checked(inner))
        return "principal"
    assert limits.attempt("app", "10.0.0.1", check_while_others_try) == "principal"
    assert inner == []
    # the success was taken back: one failure is left, so one more try is allowed
    with pytest.raises(Unauthenticated):
        limits.attempt("app", "10.0.0.1", _fail)


def test_an_unexpected_error_in_the_check_is_not_the_callers_failure():
    limits = _limits(Clock(), per_client=1)
    with pytest.raises(RuntimeError):
        limits.attempt("app", "10.0.0.1", lambda: (_ for _ in ()).throw(RuntimeError("database gone")))
    assert limits.attempt("app", "10.0.0.1", _checked([])) == "principal"
    assert limits.tracked() == 0


def test_tracked_keys_are_capped_expired_ones_going_first_then_the_oldest():
    clock = Clock()
    limits = _limits(clock, per_client=1, per_address=10_000, window=60, max_keys=10)
    _failures(limits, "old", "10.0.0.1", 1)
    clock.now += 61
    for n in range(20):  # a flood of client ids from one address
        _failures(limits, f"id-{n}", "10.0.0.2", 1)
        clock.now += 0.01
    assert limits.tracked() == 10
    # the newest keys are kept (still locked), the oldest went
    with pytest.raises(TooManyRequests):
        limits.attempt("id-19", "10.0.0.3", _checked([]))
    assert limits.attempt("id-0", "10.0.0.3", _checked([])) == "principal"
    assert limits.attempt("old", "10.0.0.3", _checked([])) == "principal"


def test_long_client_ids_are_kept_cut():
    limits = _limits(Clock(), per_client=1)
    _failures(limits, "x" * 100_000, "10.0.0.1", 1)
    with pytest.raises(TooManyRequests):
        limits.attempt("x" * 100_000, "10.0.0.2", _checked([]))
    assert max(len(key[1]) for key in limits._failures) <= 128
