"""Fresh bytes of array data numpy allocates, per thread: numpy's allocation hooks (NEP 49).

``AllocationMeter.install()`` sets, for the calling thread (numpy keeps its data allocator
in a context variable, so every thread installs its own), a ``PyDataMem_Handler`` whose
malloc/calloc/realloc count the bytes asked for before calling libc; ``bytes_of(thread_id)``
is that thread's running total.  Every array numpy makes (kernel outputs too: the Numba
kernels allocate their results with numpy) passes through it; zmq frames and the AES
library's buffers do not.  Benchmark-only: the hooks cost ~1 us per allocation.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

__all__ = ["AllocationMeter"]

_libc = ctypes.CDLL(None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.calloc.restype = ctypes.c_void_p
_libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
_libc.realloc.restype = ctypes.c_void_p
_libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]

_MALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_CALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t)
_REALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class _Allocator(ctypes.Structure):
    _fields_ = [("ctx", ctypes.c_void_p), ("malloc", _MALLOC), ("calloc", _CALLOC),
                ("realloc", _REALLOC), ("free", _FREE)]


class _Handler(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 127), ("version", ctypes.c_uint8), ("allocator", _Allocator)]


def _set_handler_fn():
    api = np._core._multiarray_umath._ARRAY_API
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype = ctypes.c_void_p
    get_ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]
    table = ctypes.cast(get_ptr(api, None), ctypes.POINTER(ctypes.c_void_p))
    fn = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object)(table[304])  # PyDataMem_SetHandler
    return fn


class AllocationMeter:
    """Per-thread totals of numpy data allocations (see module doc).  One per process
    (``shared()``): every array allocated through the hooks holds them and calls them again
    when it is freed, so they must outlive every such array."""

    _shared: "AllocationMeter | None" = None

    @classmethod
    def shared(cls) -> "AllocationMeter":
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def __init__(self) -> None:
        self.totals: dict[int, int] = {}
        self.counts: dict[int, int] = {}
        get = threading.get_ident
        totals, counts = self.totals, self.counts

        def count(n: int) -> None:
            t = get()
            totals[t] = totals.get(t, 0) + n
            counts[t] = counts.get(t, 0) + 1

        def malloc(ctx, size):
            count(size)
            return _libc.malloc(size)

        def calloc(ctx, nelem, elsize):
            count(nelem * elsize)
            return _libc.calloc(nelem, elsize)

        def realloc(ctx, ptr, size):
            count(size)
            return _libc.realloc(ptr, size)

        def free(ctx, ptr, size):
            _libc.free(ptr)

        self._fns = (_MALLOC(malloc), _CALLOC(calloc), _REALLOC(realloc), _FREE(free))
        self._handler = _Handler(b"ss-engine allocation meter", 1, _Allocator(None, *self._fns))
        new = ctypes.pythonapi.PyCapsule_New
        new.restype = ctypes.py_object
        new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        self._capsule = new(ctypes.addressof(self._handler), b"mem_handler", None)
        self._set = _set_handler_fn()

    def install(self) -> None:
        """Count this thread's allocations from now on (idempotent)."""
        if np._core.multiarray.get_handler_name() != "ss-engine allocation meter":
            self._set(self._capsule)

    def bytes_of(self, ident: int | None = None) -> int:
        return self.totals.get(threading.get_ident() if ident is None else ident, 0)

    def allocations_of(self, ident: int | None = None) -> int:
        return self.counts.get(threading.get_ident() if ident is None else ident, 0)
