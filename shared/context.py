"""Binds each nameko worker to its correlation id and service name.

The id arrives in the caller's context data (nameko carries context data in
`nameko.*` message headers for RPC and events alike); a worker started
without one (a timer, an event from outside) gets a fresh id. Writing it
back into the worker's context data makes every RPC call and event the
worker sends carry it on.
"""

from nameko.extensions import DependencyProvider

from shared import correlation


class CorrelationContext(DependencyProvider):
    # Runs in the worker's own greenthread, before any entrypoint code and
    # before worker_setup hooks (nameko injects dependencies first).
    def get_dependency(self, worker_ctx):
        cid = correlation.sanitize(worker_ctx.data.get(correlation.CONTEXT_KEY))
        worker_ctx.data[correlation.CONTEXT_KEY] = cid
        correlation.bind(cid)
        correlation.set_service(self.container.service_name)
        return cid
