"""/v1/admin/services: which platform services are running, and whether they answer.

`instances` is how many consumers the broker has on the service's nameko RPC
queue (rpc-<service>): one per running instance. `healthy` is the health()
call /health/ready makes, asked of every service.
"""

from concurrent.futures import ThreadPoolExecutor

from amqp.exceptions import AMQPError, NotFound
from flask import current_app
from kombu import Connection
from kombu.exceptions import OperationalError
from marshmallow import Schema, fields
from nameko.rpc import RPC_QUEUE_TEMPLATE

from gateway.blueprints.health import check_services
from gateway.bodies import Blueprint
from gateway.extensions import require_role
from shared import contracts
from shared.errors import Unavailable

blp = Blueprint("operations", __name__, description="The platform's services, for operators")

BEARER = [{"bearerAuth": []}]


# -- schemas ----------------------------------------------------------------------


class PlatformService(Schema):
    service = fields.String(metadata={"example": "accounts"})
    instances = fields.Integer(
        metadata={"description": "Running instances: consumers of the rpc-<service> queue."}
    )
    healthy = fields.Boolean(metadata={"description": "The service answered health() in time."})
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


def rpc_consumer_counts(amqp_uri: str, services: list[str], timeout: float) -> dict[str, int]:
    """The number of consumers on each service's RPC queue, read from the broker.

    A passive declare reports on a queue without creating it. A queue the
    broker does not know (404) belongs to a service that never started: 0.
    Raises Unavailable when the broker cannot be asked within `timeout`.
    """
    counts = {}
    try:
        with Connection(
            amqp_uri,
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
    services = sorted(contracts.SERVICES)
    config = current_app.config
    # The broker is asked while the health checks wait for their replies.
    with ThreadPoolExecutor(max_workers=1) as pool:
        counting = pool.submit(
            rpc_consumer_counts, config["AMQP_URI"], services, config["HEALTH_TIMEOUT"]
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
            }
            for name in services
        ]
    }
