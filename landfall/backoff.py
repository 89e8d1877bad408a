"""landfall's one backoff: how long to wait before trying again, anywhere it waits.

Retries of a stage's work and redos of an unpublished batch (:mod:`landfall.processing`,
``runner.retry_backoff_s``/``retry_backoff_max_s``) and restarts of a crashed service
(:mod:`landfall.stack`, ``supervision.restart_delay_s``/``restart_delay_max_s``) all wait
this way. It is a tenacity wait, so a tenacity retry loop takes it as it is.
"""

from __future__ import annotations

from tenacity import RetryCallState, Retrying, wait_exponential, wait_random_exponential
from tenacity.wait import wait_base

__all__ = ["backoff_delay", "backoff_wait"]


def backoff_wait(first_s: float, max_s: float) -> wait_base:
    """Doubling from ``first_s`` after each failed attempt, capped at ``max_s``, with jitter.

    Half of each wait is fixed and half random ("equal jitter"): instances that failed
    together (a broker or registry restart) do not all come back at once, and no wait is
    shorter than half its step, so a backoff never turns into an immediate retry.
    """
    half_step, half_cap = first_s / 2, max_s / 2
    return wait_exponential(multiplier=half_step, max=half_cap) + wait_random_exponential(
        multiplier=half_step, max=half_cap
    )


def backoff_delay(first_s: float, max_s: float, attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...): see backoff_wait."""
    # A wait outside a tenacity loop (a redo that keeps polling Kafka, a restart
    # scheduled by the supervisor) asks the same wait for the attempt it is at.
    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = attempt
    return float(backoff_wait(first_s, max_s)(state))
