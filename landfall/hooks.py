"""What a consuming loop tells its telemetry: the hooks the runner and the reporter call.

The loops (:mod:`landfall.runner`, :mod:`services.reporter.app`) record nothing
themselves; at each step they call a hook of a :class:`RunHooks`, the way faust's
sensors are told of each message. Two implementations ship:
:class:`~landfall.hooks_prometheus.PrometheusHooks` (the metrics of DESIGN §7) and
:class:`~landfall.hooks_tracing.TracingHooks` (OpenTelemetry spans); a service runs
both, joined by :class:`CombinedHooks` (:func:`telemetry_hooks`).

The order a loop calls them in, for one message::

    with hooks.consuming(delivery):          # the message taken from Kafka
        hooks.on_stage_start(dataset)
        with hooks.working(event_type, record):   # the stage's work (worker thread)
            hooks.on_retry(...)                   # zero or more times
            hooks.on_stage_result(outgoing)
        hooks.on_stage_end(dataset)
        with hooks.producing(topic, event_type) as headers: ...   # per event published
        hooks.on_batch_done(...)     # or on_revoked / on_abandoned / on_unpublished /
                                     # on_dead_letter, when the message went another way
    hooks.after_message(consumer)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from landfall.contracts import EventType
from landfall.hooks_prometheus import PrometheusHooks
from landfall.hooks_tracing import TracingHooks

if TYPE_CHECKING:  # landfall.processing calls the hooks: only its types are needed here
    from landfall.processing import Headers, Outgoing

__all__ = ["CombinedHooks", "Delivery", "RunHooks", "telemetry_hooks"]


@dataclass(frozen=True)
class Delivery:
    """A message as a loop took it from Kafka: where it was, and its headers."""

    topic: str
    partition: int | None
    offset: int | None
    headers: Sequence[tuple[str, Any]] | None
    consumer_group: str | None = None


class RunHooks(Protocol):
    """The steps of handling one message, as telemetry sees them.

    ``dataset`` is always a label value (:func:`landfall.telemetry.dataset_label`).
    A hook must not raise: telemetry never decides what happens to a batch.
    """

    def consuming(self, delivery: Delivery) -> AbstractContextManager[None]:
        """The whole handling of one message, from taking it to committing it."""
        ...

    def working(
        self, event_type: EventType, record: dict[str, Any]
    ) -> AbstractContextManager[None]:
        """The stage's work on the event (entered in the worker thread)."""
        ...

    def on_stage_start(self, dataset: str) -> None:
        """The stage starts work on a batch."""
        ...

    def on_stage_end(self, dataset: str) -> None:
        """The stage's work on a batch ended, however it ended."""
        ...

    def on_stage_result(self, outgoing: Sequence[Outgoing]) -> None:
        """What the stage returned (called inside :meth:`working`)."""
        ...

    def on_retry(self, dataset: str, attempt: int, error: Exception) -> None:
        """Attempt number ``attempt`` failed transiently; it is retried after a backoff."""
        ...

    def producing(self, topic: str, event_type: EventType) -> AbstractContextManager[Headers]:
        """Producing one event; yields the headers that carry telemetry on with it."""
        ...

    def on_batch_done(
        self, dataset: str, outgoing: Sequence[Outgoing], failed: bool, seconds: float
    ) -> None:
        """A batch's events are published (``failed``: they say batch-failed)."""
        ...

    def on_revoked(self, dataset: str) -> None:
        """A rebalance took the message's partition away mid-stage: its result is dropped."""
        ...

    def on_abandoned(self, dataset: str) -> None:
        """A stop's grace ran out before the stage was done: left uncommitted."""
        ...

    def on_unpublished(self, dataset: str, error: Exception) -> None:
        """The broker did not acknowledge what the message produced: it is redone."""
        ...

    def on_dead_letter(self, kind: str, reason: str) -> None:
        """The message was set aside on the dead-letter topic (``kind``: why, in a word)."""
        ...

    def after_message(self, consumer: Any) -> None:
        """The loop is done with a message (``consumer``: the one it came from)."""
        ...


class CombinedHooks:
    """Several :class:`RunHooks` as one: each hook called on each, in order."""

    def __init__(self, *hooks: RunHooks) -> None:
        self.hooks = hooks

    @contextmanager
    def consuming(self, delivery: Delivery) -> Iterator[None]:
        with ExitStack() as stack:
            for hooks in self.hooks:
                stack.enter_context(hooks.consuming(delivery))
            yield

    @contextmanager
    def working(self, event_type: EventType, record: dict[str, Any]) -> Iterator[None]:
        with ExitStack() as stack:
            for hooks in self.hooks:
                stack.enter_context(hooks.working(event_type, record))
            yield

    @contextmanager
    def producing(self, topic: str, event_type: EventType) -> Iterator[Headers]:
        headers: Headers = []
        with ExitStack() as stack:
            for hooks in self.hooks:
                headers.extend(stack.enter_context(hooks.producing(topic, event_type)))
            yield headers

    def on_stage_start(self, dataset: str) -> None:
        for hooks in self.hooks:
            hooks.on_stage_start(dataset)

    def on_stage_end(self, dataset: str) -> None:
        for hooks in self.hooks:
            hooks.on_stage_end(dataset)

    def on_stage_result(self, outgoing: Sequence[Outgoing]) -> None:
        for hooks in self.hooks:
            hooks.on_stage_result(outgoing)

    def on_retry(self, dataset: str, attempt: int, error: Exception) -> None:
        for hooks in self.hooks:
            hooks.on_retry(dataset, attempt, error)

    def on_batch_done(
        self, dataset: str, outgoing: Sequence[Outgoing], failed: bool, seconds: float
    ) -> None:
        for hooks in self.hooks:
            hooks.on_batch_done(dataset, outgoing, failed, seconds)

    def on_revoked(self, dataset: str) -> None:
        for hooks in self.hooks:
            hooks.on_revoked(dataset)

    def on_abandoned(self, dataset: str) -> None:
        for hooks in self.hooks:
            hooks.on_abandoned(dataset)

    def on_unpublished(self, dataset: str, error: Exception) -> None:
        for hooks in self.hooks:
            hooks.on_unpublished(dataset, error)

    def on_dead_letter(self, kind: str, reason: str) -> None:
        for hooks in self.hooks:
            hooks.on_dead_letter(kind, reason)

    def after_message(self, consumer: Any) -> None:
        for hooks in self.hooks:
            hooks.after_message(consumer)


def telemetry_hooks(service: str, stage: str | None = None) -> CombinedHooks:
    """What every landfall service records: Prometheus metrics and OpenTelemetry spans.

    ``service`` labels the metrics; ``stage`` names the span of the work (default: service).
    """
    return CombinedHooks(PrometheusHooks(service), TracingHooks(service, stage))
