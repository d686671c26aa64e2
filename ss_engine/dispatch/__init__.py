"""The op dispatcher: what a session's handles ask of the two parties, and how each runs it.

``table`` lists every op (its checks and the SPMD code each party runs: the secure ops of
``ss_engine.tensor.ops`` and local share operations); ``batch`` parses a batch of ops in
full against the values a party holds and runs it on the party's scheduler.  The local
session's party threads and the servers' session runner call exactly these functions, so
both sessions compute the same thing with the same protocol code the training uses.
"""
from .batch import (MAX_HANDLE_ID, Batch, ParsedOp, PartySession, SessionLimits, check_op,
                    parse_batch, run_batch)
from .table import MAX_RANK, OPS, Env, Op, OpError, index_from_wire, index_to_wire

__all__ = ["OPS", "Op", "OpError", "Env", "SessionLimits", "ParsedOp", "Batch", "PartySession", "check_op",
           "parse_batch", "run_batch", "index_to_wire", "index_from_wire", "MAX_HANDLE_ID",
           "MAX_RANK"]
