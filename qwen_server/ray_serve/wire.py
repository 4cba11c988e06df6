"""What crosses between the ingress and an engine replica: replies, errors, replica read-outs.

Domain errors (``Overloaded``, ``NotReady``, ...) do not travel as exceptions: Ray wraps a
raised exception in a ``RayTaskError`` subclass built on the fly, which loses the constructor
arguments our errors need (message, Retry-After). An engine replica returns an ``ErrorReply``
instead and the ingress raises the same error again, with the same status and headers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engine.types import ModelOutput
from ..errors import EngineFailure, InvalidInput, NotReady, Overloaded, QwenServerError

# The errors an engine replica can answer with; anything else travels as EngineFailure.
_KINDS: dict[str, type[QwenServerError]] = {
    "Overloaded": Overloaded,
    "NotReady": NotReady,
    "InvalidInput": InvalidInput,
    "EngineFailure": EngineFailure,
}


@dataclass
class ReplicaView:
    """One engine replica's serving state as its last reply showed it (no secrets, no paths)."""

    replica: str  # Serve's replica id, unique in the application
    actor: str  # the replica's Ray actor name (operators and tests: ray.get_actor)
    node: str  # Ray node id it runs on
    ready: bool
    failed: str | None
    draining: bool
    model_id: str
    device: str
    placement: str
    replicas: int  # model copies inside the replica (1 with one GPU per replica)
    shots_served: int
    queue_depth: int
    stats: dict[str, Any] = field(default_factory=dict)
    gpus: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ErrorReply:
    """A domain error raised in an engine replica, carried back to be raised again."""

    kind: str
    message: str
    headers: dict[str, str]
    # True when the replica itself cannot serve (draining, failed): another replica may.
    replica_down: bool

    @classmethod
    def of(cls, exc: QwenServerError, *, replica_down: bool) -> ErrorReply:
        """The reply carrying ``exc``."""
        kind = type(exc).__name__ if type(exc).__name__ in _KINDS else "EngineFailure"
        return cls(kind, exc.message, dict(exc.headers), replica_down)

    def error(self) -> QwenServerError:
        """The error to raise in the ingress: same class, message and headers."""
        exc = _KINDS[self.kind](self.message)
        exc.headers = dict(self.headers)
        return exc


@dataclass
class AnalyzeReply:
    """An engine replica's answer to one ``analyze``: outputs in input order, or an error."""

    view: ReplicaView
    outputs: list[ModelOutput] | None = None
    error: ErrorReply | None = None
