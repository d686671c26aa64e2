"""The client <-> server job protocol: names, roles, limits and the job digest.

Every request is a :mod:`ss_engine.net.wire` message from an authorised client (its
CurveZMQ public key is on the server's allow-list; the server knows it by its key name in
the config's ``clients``) with a request id ``rid``; every reply echoes ``rid`` and is
either the typed answer or ``{"type": "error", "message": ...}``.

    ping           {}                                   -> pong {rank, version}
    create         {job, owners}                        -> ok {nonce_part}
    upload         {job, name, offset, rows, row_shape} + [int64 (k, *row_shape)]
                                                        -> ok {received}
    upload_status  {job}                                -> ok {state, tensors: {name: [received, rows]},
                                                           nonce_part (trainer only)}
    submit         {job, kind, train, frac_bits, parts, model_job, nonce, test_seed?}
                                                        -> ok {total_steps, digest}
    status         {job, since}                         -> status {state, step, total, epoch,
                                                           message, loss_steps} + [p_y shares]
    fetch          {job}                                -> result {names} + [int64 shares]
    delete         {job}                                -> ok
    jobs           {}                                   -> jobs {jobs: [{job, role, state, kind,
                                                           message, created}]}
    session_start  {job, frac_bits, nonce, idle, test_seed?}   -> ok {digest}
    session_ops    {job, seq, ops, reveal, free} + [int64 payload]
                                                        -> session_result {seq, reveal:
                                                           [[frac_bits, shape], ...]} + [shares]
    session_close  {job}                                -> ok

Sessions (``ss_engine.session.RemoteSession``).  An interactive session is a job of kind
"session": its trainer creates it (``create``, no owners) and starts it with both nonce
halves (``session_start``); each server's runner then opens the peer channel and the
dealer link for the instance and holds the session's values in memory.  The trainer
sends every batch of ops (``ss_engine.dispatch``) to both servers with its sequence
number; each server checks it in full against the values it holds, the two servers agree
on it in one round (the digest of the ops and public operands, and whether each accepts
it), and both run it or both refuse it (a refusal keeps the session).  A server replies
with its shares of the values the batch reveals; only the trainer adds them.  A session
ends at ``session_close``, after ``idle`` seconds without a batch, or when a party fails;
the values are then forgotten and the instance is released at the dealer.  A session
holds its server's runner: training jobs queued meanwhile start after it ends.

Roles.  The client that sends ``create`` is the job's *trainer*; it names the data owners
(``owners``, key names from ``clients``; it may name itself) allowed to upload parts.

    request                        trainer   named owner   any other client
    create (a new job id)          yes (becomes its trainer, within its quota)
    upload param/*, input/x        yes       no            no
    upload data/<part>/x|y         if named  yes           no
    upload_status                  own tensors, own tensors  no
                                   + nonce
    submit, status, fetch, delete  yes       no            no
    jobs                           lists the jobs it trains or is named in

So a part joins a job only from an owner the job names, and only the trainer ever
receives a share of the model (``fetch``) or of the loss (``status``).

Tensor names: ``data/<part>/x`` (N, 784) and ``data/<part>/y`` (N, 10) for a data owner's
part of a training set, ``param/<name>`` for the trainer's initial model shares, and
``input/x`` for the images of a prediction job.  A tensor is streamed in chunks of rows
(``offset`` must equal the rows received so far) and can only be extended by the client
that started it; after ``submit`` a job's inputs are immutable.  Each server receives only
its own share of every tensor.

Job instances.  At ``create`` each server draws 16 random bytes (``nonce_part``, from
os.urandom) and returns them to the trainer, who sends both halves back in ``submit``
(``nonce``: server 0's then server 1's); each server checks that its own half is there.
The nonce is part of the job digest the two servers compare before running and the dealer
checks before making keys, and the dealer keys its seeds by (job, nonce): a job id used
again (after a delete) is a new instance with new seeds, and a client cannot make two
instances share one, since each server's half is fresh.
"""
from __future__ import annotations

import hashlib
import re

import msgpack

from ..net.dealer_link import NONCE_BYTES, NONCE_PART_BYTES

__all__ = ["TENSOR_RE", "PART_RE", "JOB_KINDS", "MAX_ROWS", "MAX_ROW_ELEMENTS", "MAX_CHUNK_BYTES",
           "job_digest", "JOB_STATES", "CLIENT_CAPS_KW", "DEFAULT_CHUNK_ROWS", "REQUEST_TYPES",
           "NONCE_BYTES", "NONCE_PART_BYTES", "MAX_OWNERS", "SESSION_KIND", "SESSION_IDLE",
           "MAX_SESSION_IDLE", "session_digest"]

TENSOR_RE = re.compile(r"(data/[A-Za-z0-9_-]{1,32}/[xy]|param/[A-Za-z0-9_.]{1,64}|input/x)\Z")
PART_RE = re.compile(r"[A-Za-z0-9_-]{1,32}\Z")
JOB_KINDS = ("train", "predict")
JOB_STATES = ("uploading", "queued", "waiting", "running", "done", "failed", "quarantined")
REQUEST_TYPES = ("ping", "create", "upload", "upload_status", "submit", "status", "fetch",
                 "delete", "jobs", "session_start", "session_ops", "session_close")
SESSION_KIND = "session"
SESSION_IDLE = 600.0            # s a session waits for a batch before it ends (default)
MAX_SESSION_IDLE = 3600.0
MAX_ROWS = 10_000_000
MAX_ROW_ELEMENTS = 1 << 20
#: a chunk, and so the largest frame a client may send a server (before authentication too:
#: the socket's ZMQ_MAXMSGSIZE); one row of MAX_ROW_ELEMENTS int64 values fits
MAX_CHUNK_BYTES = 8 << 20
MAX_OWNERS = 64
DEFAULT_CHUNK_ROWS = 512
#: wire caps for client messages (a chunk, or a session batch, is at most MAX_CHUNK_BYTES; a
#: batch carries up to 64 payload arrays, every other request at most one)
CLIENT_CAPS_KW = dict(max_arrays=64, max_elements=MAX_CHUNK_BYTES // 8, max_total_bytes=MAX_CHUNK_BYTES)


def job_digest(kind: str, train: dict, frac_bits: int, parts: list, rows: dict, model_job: str,
               test_seed: bytes | None, nonce: bytes) -> str:
    """What both servers (and the dealer) must agree on before running a job instance (no
    share content in it)."""
    blob = msgpack.packb([kind, sorted(train.items()), frac_bits, list(parts), sorted(rows.items()),
                          model_job, test_seed or b"", nonce], use_bin_type=True)
    return hashlib.sha256(blob).hexdigest()[:32]


def session_digest(frac_bits: int, idle: float, test_seed: bytes | None, nonce: bytes) -> str:
    """What both servers (and the dealer) must agree on before a session instance runs."""
    return job_digest(SESSION_KIND, {"idle": float(idle)}, frac_bits, [], {}, "", test_seed, nonce)
