"""Benchmark-side instruments: a per-phase recorder that hooks into the one training step
(``ss_engine.nn.StepHooks``: the step's phases and every layer's forward and backward), a
timing wrapper for the correlated-randomness source, and a channel wrapper that splits the
time waiting on the peer by protocol label.  None of them changes what the engine computes
or sends; they only delegate and measure.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from ss_engine.comm.channel import Channel
from ss_engine.nn.module import StepHooks
from ss_engine.preprocessing.source import CorrelatedSource

__all__ = ["Recorder", "TimedSource", "LabelTimedChannel", "describe_layer", "FIELDS"]

#: what every phase accumulates (seconds, seconds, seconds, seconds, bytes, rounds, bytes)
FIELDS = ("wall", "peer_wait", "dealer_wait", "material", "bytes_sent", "rounds", "dealer_bytes")


class Recorder(StepHooks):
    """One party's per-phase totals, as the step's hooks.  Phases nest (step phase, then
    layer); each keeps inclusive and *self* values (inclusive minus its children), so the
    self values of all phases add up to the step.  Concurrent tasks of the step (the
    parameters' updates) are counted in the phase the step is in when they run."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.labels: list[str] = []
        self.enabled = False
        self.material_seconds = 0.0
        self.kind_stats: dict[str, list] = {}       # spec kind -> [items, seconds]
        self.incl: dict[str, np.ndarray] = {}
        self.self_: dict[str, np.ndarray] = {}
        self.shapes: dict[str, dict] = {}
        self._stack: list[list] = []
        self.mask_elements: dict[int, int] = {}     # mask seq -> elements (8 bytes each to open)
        self.products: list[tuple[str, object]] = []  # (phase path, ProductSpec) of this step
        self.step_masks: list[int] = []              # mask seqs fetched in this step

    def _snap(self) -> np.ndarray:
        ch, st = self.ctx.channel.stats, self.ctx.source.stats
        return np.array([time.perf_counter(), ch.wait_seconds, st.wait_seconds, self.material_seconds,
                         ch.bytes_sent, ch.rounds, st.dealer_bytes], dtype=float)

    def path(self, name: str) -> str:
        return "/".join([f[0] for f in self._stack] + [name])

    @contextmanager
    def phase(self, name: str):
        if not self.enabled:
            yield
            return
        start = self._snap()
        path = self.path(name)
        self._stack.append([name, np.zeros(len(FIELDS))])
        try:
            yield
        finally:
            _, child = self._stack.pop()
            d = self._snap() - start
            self.incl[path] = self.incl.get(path, 0) + d
            self.self_[path] = self.self_.get(path, 0) + (d - child)
            if self._stack:
                self._stack[-1][1] += d

    def on_fetch(self, spec, material, seconds: float) -> None:
        self.material_seconds += seconds
        ks = self.kind_stats.setdefault(spec.kind, [0, 0.0])
        if self.enabled:
            ks[0] += 1
            ks[1] += seconds
        if spec.kind == "mask":
            self.mask_elements[material.addr] = int(np.prod(spec.shape, dtype=np.int64))
            if self.enabled:
                self.step_masks.append(material.addr)
        elif spec.kind == "product" and self.enabled:
            self.products.append(("/".join(f[0] for f in self._stack), spec))

    def layer(self, stage: str, index: int, layer, value):
        label = f"L{index} {describe_layer(layer)}"
        if label not in self.labels:
            self.labels.append(label)
        if self.enabled:
            w = getattr(getattr(layer, "weight", None), "value", None)
            shapes = self.shapes.setdefault(f"forward/{label}", {"weight_shape": None if w is None
                                                                  else list(w.shape)})
            shapes["in_shape" if stage == "forward" else "out_shape"] = list(value.shape)
        return self.phase(label)

    def new_step(self) -> None:
        """Forget the previous step's product and mask log (totals keep accumulating)."""
        self.products, self.step_masks = [], []

    def rows(self, steps: int) -> list[dict]:
        """Self values per phase, per step, in the order phases ended."""
        out = []
        for path, v in self.self_.items():
            v = np.asarray(v) / steps
            d = dict(zip(FIELDS, map(float, v)))
            d["compute"] = d["wall"] - d["peer_wait"] - d["dealer_wait"]
            d["phase"] = path
            d.update(self.shapes.get(path, {}))
            out.append(d)
        return out


def describe_layer(layer) -> str:
    name = type(layer).__name__
    w = getattr(getattr(layer, "weight", None), "value", None)
    if name == "Linear" and w is not None:
        return f"Linear {w.shape[1]}->{w.shape[0]}"
    if name == "Conv2d" and w is not None:
        return f"Conv2d {w.shape[1]}->{w.shape[0]} k{w.shape[2]}"
    if name in ("MaxPool2d", "AvgPool2d"):
        return f"{name} {layer.k}"
    return name


class TimedSource(CorrelatedSource):
    """Times every ``fetch`` of the wrapped source and reports it to the recorder."""

    def __init__(self, inner: CorrelatedSource, recorder: Recorder) -> None:
        self.inner = inner
        self.stats = inner.stats
        self._rec = recorder

    def fetch(self, spec):
        t0 = time.perf_counter()
        m = self.inner.fetch(spec)
        self._rec.on_fetch(spec, m, time.perf_counter() - t0)
        return m

    def record(self, log):
        self.inner.record(log)

    def begin(self, key=None):
        self.inner.begin(key)

    def end(self, ok=True):
        self.inner.end(ok)

    def expect(self, keys):
        self.inner.expect(keys)

    def __getattr__(self, name):  # next_seq and anything else a caller reads
        return getattr(self.inner, name)


class LabelTimedChannel(Channel):
    """Counts like any channel, and also splits the time blocked on the peer by label."""

    def __init__(self, inner: Channel) -> None:
        super().__init__()
        self.inner = inner
        self.wait_by_label: dict[str, float] = {}
        self._pending_wait = 0.0

    def _send(self, arrays):
        self.inner._send(arrays)

    def _recv(self):
        t0 = time.perf_counter()
        got = self.inner._recv()
        self._pending_wait += time.perf_counter() - t0
        return got

    def _count(self, label: str, sent: int, received: int) -> None:
        super()._count(label, sent, received)
        self.wait_by_label[label] = self.wait_by_label.get(label, 0.0) + self._pending_wait
        self._pending_wait = 0.0

    def close(self) -> None:
        self.inner.close()
