"""/v1/admin/services: which platform services are running, and whether they answer.

`instances` is how many consumers the broker has on the service's nameko RPC
queue (rpc-<service>): one per running instance. `healthy` is the health()
call /health/ready makes, asked of every service. `instance_details` lists
each instance by its own heartbeat (shared.heartbeats, gateway/instances.py):
whether that very process reaches the broker and its database.
"""

from concurrent.futures import ThreadPoolExecutor

from amqp.exceptions import AMQPError, NotFound
from flask import current_app
from kombu.exceptions import OperationalError
from marshmallow import Schema, fields
from nameko.rpc import RPC_QUEUE_TEMPLATE

from gateway.blueprints.health import check_services
from gateway.bodies import Blueprint
from gateway.extensions import platform, require_role
from shared import broker, contracts
from shared.errors import Unavailable

blp = Blueprint("operations", __name__, description="The platform's services, for operators")

BEARER = [{"bearerAuth": []}]


# -- schemas ----------------------------------------------------------------------


class Instance(Schema):
    instance = fields.String(metadata={"example": "accounts-7d9f8b6c5-x2x4q:1"})
    ready = fields.Boolean(
        metadata={"description": "It reaches the broker (its heartbeat arrived) and its database."}
    )
    checks = fields.Dict(keys=fields.String(), values=fields.String())
    seconds_since_heartbeat = fields.Float()


class PlatformService(Schema):
    service = fields.String(metadata={"example": "accounts"})
    instances = fields.Integer(
        metadata={"description": "Running instances: consumers of the rpc-<service> queue."}
    )
    healthy = fields.Boolean(metadata={"description": "The service answered health() in time."})
    instance_details = fields.List(
        fields.Nested(Instance),
        metadata={
            "description": "Each running instance, from its own heartbeat (every few "
            "seconds): whether it can work, and what it checked."
        },
    )
    status = fields.String(
        metadata={
            "description": "The health check's result: ok, or why not "
            "(service_timeout, service_unavailable, broker_unavailable, ...).",
            "example": "ok",
        }
    )


class PlatformServicesResponse(Schema):
    items = fields.List(fields.Nested(PlatformService))


# -- the broker's view --------------------------------------------------------------


def rpc_consumer_counts(
    access: broker.BrokerAccess, services: list[str], timeout: float
) -> dict[str, int]:
    """The number of consumers on each service's RPC queue, read from the broker.

    A passive declare reports on a queue without creating it. A queue the
    broker does not know (404) belongs to a service that never started: 0.
    Raises Unavailable when the broker cannot be asked within `timeout`.
    """
    counts = {}
    try:
        with access.connection(
            connect_timeout=timeout,
            transport_options={"read_timeout": timeout, "write_timeout": timeout},
        ) as connection:
            connection.ensure_connection(max_retries=0)  # one attempt: never wait out retries
            for service in services:
                # A 404 closes the channel it happened on: one channel per queue.
                channel = connection.channel()
                try:
                    declared = channel.queue_declare(
                        queue=RPC_QUEUE_TEMPLATE.format(service), passive=True
                    )
                    counts[service] = declared.consumer_count
                except NotFound:
                    counts[service] = 0
                finally:
                    channel.close()
    except (OSError, OperationalError, AMQPError):
        raise Unavailable("broker_unavailable", "The message broker is unreachable.") from None
    return counts


# -- views ------------------------------------------------------------------------


@blp.route("/v1/admin/services", methods=["GET"])
@blp.response(200, PlatformServicesResponse)
@blp.doc(security=BEARER)
def list_services():
    require_role("admin")
    platform().instances.warm()
    services = sorted(contracts.SERVICES)
    config = current_app.config
    # The broker is asked while the health checks wait for their replies.
    with ThreadPoolExecutor(max_workers=1) as pool:
        counting = pool.submit(
            rpc_consumer_counts, platform().broker, services, config["HEALTH_TIMEOUT"]
        )
        checks = check_services(services)
        instances = counting.result()
    return {
        "items": [
            {
                "service": name,
                "instances": instances[name],
                "healthy": checks[name] == "ok",
                "status": checks[name],
                "instance_details": platform().instances.instances(name),
            }
            for name in services
        ]
    }
