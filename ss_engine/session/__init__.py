"""Sessions: the tensor library on secret handles (``import ss_engine as sse``).

``LocalSession`` runs both parties as threads of this process with an in-process dealer;
``RemoteSession`` drives the two servers and the dealer of a deployment.  Both share the
front-end in ``core`` (lazy ops, batches, reveal) and hand out ``handle.Secret`` handles;
the parties run every op with ``ss_engine.dispatch``, the protocol code the training runs.
"""
from .core import Session, SessionFailed
from .handle import Secret, concatenate, where
from .local import LocalSession

__all__ = ["Session", "SessionFailed", "Secret", "LocalSession", "where", "concatenate"]
