"""notification_step: a saga_step that tells its handler which attempt it is.

It is shared.event_handlers.SagaStep (retries through per-delay queues,
then parking in `saga.notifications.dead-letters`) with two additions:

- the handler gets `delivery=Delivery(attempt, attempts)`, so on the last
  attempt it can mark what it could not send as failed before the event
  is parked (nothing is marked failed while retries remain);
- its retry policy defaults to 10 attempts, backoff 1 s doubling up to
  300 s (about 8.5 minutes: a provider outage of a few minutes loses
  nothing), unless NOTIFICATIONS_EVENT_RETRY_ATTEMPTS /
  _BACKOFF_SECONDS / _MAX_BACKOFF_SECONDS (container config, then
  environment), or else the platform's EVENT_RETRY_* (same order), say
  otherwise.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

from nameko.exceptions import ContainerBeingKilled

from shared.event_handlers import (
    ATTEMPTS_KEY,
    BACKOFF_KEY,
    MAX_BACKOFF_KEY,
    RetryPolicyError,
    SagaStep,
    failed_attempts,
    resolve_policy,
)

PREFIX = "NOTIFICATIONS_"
DEFAULT_ATTEMPTS = 10
DEFAULT_BACKOFF = 1.0
DEFAULT_MAX_BACKOFF = 300.0


@dataclass(frozen=True)
class Delivery:
    """This delivery of the event to its handler: attempt n of `attempts`."""

    attempt: int = 1
    attempts: int = 1

    @property
    def final(self) -> bool:
        return self.attempt >= self.attempts


def notification_policy(config: Mapping, environ: Mapping | None = None):
    """(attempts, backoff, max_backoff) for notification steps."""
    environ = os.environ if environ is None else environ
    chosen = []
    for key, kind, default in (
        (ATTEMPTS_KEY, int, DEFAULT_ATTEMPTS),
        (BACKOFF_KEY, float, DEFAULT_BACKOFF),
        (MAX_BACKOFF_KEY, float, DEFAULT_MAX_BACKOFF),
    ):
        value = default
        for name in (PREFIX + key, key):
            raw = next(
                (s.get(name) for s in (config, environ) if s.get(name) not in (None, "")), None
            )
            if raw is not None:
                try:
                    value = kind(raw)
                except (TypeError, ValueError):
                    raise RetryPolicyError(f"{name} must be a number, got {raw!r}") from None
                break
        chosen.append(value)
    attempts, backoff, max_backoff = chosen
    max_backoff = max(max_backoff, backoff)
    policy = resolve_policy(attempts, backoff, max_backoff, config={}, environ={})
    return policy.attempts, policy.backoff, policy.max_backoff


class NotificationStep(SagaStep):
    def policy_for(self, config):
        if self._policy_overrides == (None, None, None):
            return resolve_policy(*notification_policy(config), config={}, environ={})
        return super().policy_for(config)

    def handle_message(self, body, message):
        # nameko's Consumer.handle_message, plus the `delivery` keyword.
        delivery = Delivery(failed_attempts(message.headers) + 1, self.policy.attempts)
        context_data = self.unpack_message_headers(message)
        handle_result = partial(self.handle_result, message)
        try:
            self.container.spawn_worker(
                self,
                (body,),
                {"delivery": delivery},
                context_data=context_data,
                handle_result=handle_result,
            )
        except ContainerBeingKilled:
            self.queue_consumer.requeue_message(message)


notification_step = NotificationStep.decorator
