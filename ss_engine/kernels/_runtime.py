"""Process-wide Numba threading setup for the kernel layer, and the per-call scheduler.

Why this module exists
----------------------
The local runtime runs both parties (and sometimes the dealer) as Python threads of one
process, and every kernel is compiled ``nogil=True``, so two threads really do call
``parallel=True`` kernels at the same time.  Numba's default ``workqueue`` layer aborts the
process on concurrent launches ("Concurrent access has been detected") and costs about
150 us per launch on this VM.  Measured alternatives (2-core VM, 128x784 @ 784x128 ring
product, serial kernel 2.2 ms):

=====================  ===========  ===============  ================================
layer                  launch cost  2 threads, idle  2 threads, other process busy
=====================  ===========  ===============  ================================
tbb (pip ``tbb``)      ~3 us        1.1 ms           ~2.2-5 ms (about the serial time)
omp (GNU, spinning)    ~2 us        1.1 ms           8-12 ms (barrier spin vs. a busy
                                                     core: 4-5x *slower* than serial)
omp, passive waiting   ~90 us       1.1 ms           ~2.2 ms
workqueue              ~150 us      1.1 ms           not thread-safe
=====================  ===========  ===============  ================================

So the layer requested is ``tbb`` when its runtime can be loaded (the ``tbb`` wheel puts
``libtbb.so.12`` in ``<venv>/lib``, which is not on the loader path, so it is preloaded from
there), else ``omp`` with ``OMP_WAIT_POLICY=PASSIVE`` as default, else Numba's choice.  The
request is made at import, before any parallel launch, unless the user set
``NUMBA_THREADING_LAYER``.  The serial/parallel threshold follows the launch cost.  Note the
``OMP_WAIT_POLICY`` default is process-wide: an OpenMP runtime loaded later (e.g. torch's)
also waits passively; set the variable yourself to override, or install ``tbb``.

On top of that, :class:`_Scheduler` lets at most one parallel region run per process at a
time: a call big enough to go parallel that starts while another such call is in flight in
another thread runs its serial twin on the calling thread.  Two parties computing at once
then each get one core (the throughput optimum on 2 cores); a party computing alone gets
both.  This also makes any layer safe, ``workqueue`` included.

Knobs (environment, read once at import):

* ``SS_ENGINE_NUM_THREADS`` -- the most threads one kernel call may use (default: Numba's
  ``NUMBA_NUM_THREADS``, i.e. the core count).  Set it to 1 when two or three compute
  processes share the 2 cores (servers + dealer as separate processes): kernels then never
  start a thread team.
* ``NUMBA_THREADING_LAYER`` -- respected if set.

GNU OpenMP is not fork-safe: a child forked after the parent ran a parallel region is
killed by Numba when it starts one.  A fork hook makes such children use the serial kernels
(still correct, single-threaded); prefer the ``spawn``/``forkserver`` start methods for
multi-process runs.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numba

__all__ = ["KernelRuntimeInfo", "runtime_info", "parallel_slot", "serial_kernels", "NUM_THREADS_ENV"]

NUM_THREADS_ENV = "SS_ENGINE_NUM_THREADS"

# Smallest work (in multiply-add-like units, ~0.5 ns each serially) worth a thread-team
# launch, by layer: about 10x the launch cost.
_MIN_PARALLEL_WORK = {"tbb": 1 << 15, "omp": 1 << 18, "workqueue": 1 << 19}


def _preload_tbb() -> None:
    """Load ``libtbb.so.12`` from the environment's ``lib`` dir, where the ``tbb`` wheel puts
    it; Numba then finds it by soname.  No-op if absent or not Linux."""
    if not sys.platform.startswith("linux"):
        return
    for prefix in dict.fromkeys((sys.prefix, sys.exec_prefix)):
        path = os.path.join(prefix, "lib", "libtbb.so.12")
        if os.path.exists(path):
            try:
                ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
            except OSError:
                continue
            return


def _layer_loadable(name: str) -> bool:
    """Whether Numba's threading-layer ``name`` can be loaded in this process."""
    try:
        if name == "tbb":
            from numba.np.ufunc.parallel import _check_tbb_version_compatible
            _check_tbb_version_compatible()
            from numba.np.ufunc import tbbpool  # noqa: F401
        elif name == "omp":
            from numba.np.ufunc import omppool  # noqa: F401
        else:
            from numba.np.ufunc import workqueue  # noqa: F401
    except Exception:  # noqa: BLE001 - any load failure means "not available"
        return False
    return True


def _select_threading_layer() -> str:
    """Request tbb, else passive omp (see module doc) unless the user chose a layer.

    Returns the layer requested ("default" etc. if left to Numba)."""
    if "NUMBA_THREADING_LAYER" in os.environ:
        return str(numba.config.THREADING_LAYER)
    _preload_tbb()
    if _layer_loadable("tbb"):
        numba.config.THREADING_LAYER = "tbb"
        return "tbb"
    # libgomp reads its environment when loaded, i.e. by the availability check below.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if _layer_loadable("omp"):
        numba.config.THREADING_LAYER = "omp"
        return "omp"
    return str(numba.config.THREADING_LAYER)


def _configured_threads() -> int:
    pool = int(numba.config.NUMBA_NUM_THREADS)
    raw = os.environ.get(NUM_THREADS_ENV, "").strip()
    if not raw:
        return pool
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{NUM_THREADS_ENV} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{NUM_THREADS_ENV} must be a positive integer, got {raw!r}")
    return min(value, pool)


@dataclass(frozen=True)
class KernelRuntimeInfo:
    """What the kernel layer decided at import (for logs and benchmark reports)."""

    requested_layer: str
    active_layer: str  # "uninitialised" until the first parallel kernel has run
    max_threads: int
    parallel_enabled: bool
    min_parallel_work: int


class _Scheduler:
    """Decides, per kernel call, between the parallel kernel and its serial twin."""

    def __init__(self, max_threads: int, min_work: int) -> None:
        self.max_threads = max_threads
        self.min_work = min_work
        self._lock = threading.Lock()
        self._active = 0
        self._launched = False
        self._fork_child = False
        self._tls = threading.local()

    def after_fork_in_child(self) -> None:
        # The lock may have been held by another thread at fork time: replace it.
        self._lock = threading.Lock()
        self._active = 0
        self._tls = threading.local()
        if self._launched:
            self._fork_child = True

    @property
    def parallel_enabled(self) -> bool:
        return self.max_threads > 1 and not self._fork_child

    @contextmanager
    def slot(self, work: int) -> Iterator[bool]:
        """Yield True if the caller should run the parallel kernel, False for the serial one."""
        if work < self.min_work or not self.parallel_enabled or getattr(self._tls, "serial", False):
            yield False
            return
        with self._lock:
            alone = self._active == 0
            self._active += 1
        try:
            if alone:
                if getattr(self._tls, "threads", None) != self.max_threads:
                    numba.set_num_threads(self.max_threads)  # thread-local in Numba
                    self._tls.threads = self.max_threads
                self._launched = True
            yield alone
        finally:
            with self._lock:
                self._active -= 1


_REQUESTED_LAYER = _select_threading_layer()
_SCHEDULER = _Scheduler(_configured_threads(),
                        _MIN_PARALLEL_WORK.get(_REQUESTED_LAYER, _MIN_PARALLEL_WORK["workqueue"]))
os.register_at_fork(after_in_child=_SCHEDULER.after_fork_in_child)


def parallel_slot(work: int):
    """``with parallel_slot(work) as par:`` run the parallel kernel if ``par`` else the serial
    twin.  ``work`` counts multiply-add-like steps of the call (see module doc)."""
    return _SCHEDULER.slot(work)


@contextmanager
def serial_kernels() -> Iterator[None]:
    """Within the block, this thread's kernel calls run their serial twins.  For threads that
    already keep every core busy together (the local runtime's two parties and its dealer:
    measured here, a thread team then only waits for a busy core)."""
    tls = _SCHEDULER._tls
    before = getattr(tls, "serial", False)
    tls.serial = True
    try:
        yield
    finally:
        tls.serial = before


def runtime_info() -> KernelRuntimeInfo:
    """The threading layer requested/active, the per-call thread cap, and whether parallel
    kernels may run in this process."""
    try:
        active = numba.threading_layer()
    except ValueError:
        active = "uninitialised"
    return KernelRuntimeInfo(requested_layer=_REQUESTED_LAYER, active_layer=active,
                             max_threads=_SCHEDULER.max_threads,
                             parallel_enabled=_SCHEDULER.parallel_enabled,
                             min_parallel_work=_SCHEDULER.min_work)
