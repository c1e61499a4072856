"""RPC plumbing shared by services and the gateway.

Importing this module teaches nameko to rebuild our error categories on the
caller's side (instead of a generic RemoteError), so the gateway can map
them to HTTP through shared.errors.HTTP_STATUS.
"""

from nameko.exceptions import deserialize_to_instance
from nameko.rpc import rpc as _nameko_rpc

from shared.errors import ERROR_CATEGORIES, ServiceError

for _category in ERROR_CATEGORIES:
    deserialize_to_instance(_category)


def rpc(method):
    """An RPC entrypoint whose ServiceErrors are part of its contract: nameko
    logs them as warnings, not as crashes with a traceback.

    (nameko's decorator ignores keyword arguments when it is handed the
    function directly, so they must be bound first.)
    """
    return _nameko_rpc(expected_exceptions=ServiceError)(method)
