"""HTTP client for the analysis servers.

``pool`` (``ServerPool``: spreading batches over servers, retries, failover, health), ``bodies``
(the request bodies and reading answers, no connection) and ``transport`` (connections that a
failed run can abort). The names other modules use are importable from here.
"""

from client.api.bodies import parse_retry_after, session_id_for, shot_payload
from client.api.pool import BatchResult, ServerPool, ServerState

__all__ = [
    "BatchResult",
    "ServerPool",
    "ServerState",
    "parse_retry_after",
    "session_id_for",
    "shot_payload",
]
