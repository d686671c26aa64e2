"""The client <-> server job protocol: names, limits and the job digest both sides agree on.

Every request is a :mod:`ss_engine.net.wire` message from an authorised client (its
CurveZMQ public key is on the server's allow-list) with a request id ``rid``; every reply
echoes ``rid`` and is either the typed answer or ``{"type": "error", "message": ...}``.

    ping           {}                                   -> pong {rank, version}
    upload         {job, name, offset, rows, row_shape} + [int64 (k, *row_shape)]
                                                        -> ok {received}
    upload_status  {job}                                -> ok {tensors: {name: [received, rows]}}
    submit         {job, kind, train, frac_bits, parts, model_job, test_seed?}
                                                        -> ok {total_steps}
    status         {job, since}                         -> status {state, step, total, epoch,
                                                           message, loss_steps} + [p_y shares]
    fetch          {job}                                -> result {names} + [int64 shares]
    delete         {job}                                -> ok

Tensor names: ``data/<part>/x`` (N, 784) and ``data/<part>/y`` (N, 10) for a data owner's
part of a training set, ``param/<name>`` for the trainer's initial model shares, and
``input/x`` for the images of a prediction job.  A tensor is streamed in chunks of rows
(``offset`` must equal the rows received so far) and can only be extended by the client
that started it; after ``submit`` a job's inputs are immutable.  Each server receives only
its own share of every tensor.
"""
from __future__ import annotations

import hashlib
import re

import msgpack

__all__ = ["TENSOR_RE", "PART_RE", "JOB_KINDS", "MAX_ROWS", "MAX_ROW_ELEMENTS", "MAX_CHUNK_BYTES",
           "job_digest", "JOB_STATES", "CLIENT_CAPS_KW", "DEFAULT_CHUNK_ROWS"]

TENSOR_RE = re.compile(r"(data/[A-Za-z0-9_-]{1,32}/[xy]|param/[A-Za-z0-9_.]{1,64}|input/x)\Z")
PART_RE = re.compile(r"[A-Za-z0-9_-]{1,32}\Z")
JOB_KINDS = ("train", "predict")
JOB_STATES = ("uploading", "queued", "waiting", "running", "done", "failed")
MAX_ROWS = 10_000_000
MAX_ROW_ELEMENTS = 1 << 20
MAX_CHUNK_BYTES = 32 << 20
DEFAULT_CHUNK_ROWS = 512
#: wire caps for client messages (a chunk is at most MAX_CHUNK_BYTES)
CLIENT_CAPS_KW = dict(max_arrays=4, max_elements=MAX_CHUNK_BYTES // 8, max_total_bytes=MAX_CHUNK_BYTES)


def job_digest(kind: str, train: dict, frac_bits: int, parts: list, rows: dict, model_job: str,
               test_seed: bytes | None) -> str:
    """What both servers must agree on before running a job (no share content in it)."""
    blob = msgpack.packb([kind, sorted(train.items()), frac_bits, list(parts), sorted(rows.items()),
                          model_job, test_seed or b""], use_bin_type=True)
    return hashlib.sha256(blob).hexdigest()[:32]
