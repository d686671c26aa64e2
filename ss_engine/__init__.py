"""ss-engine: two-party secure computation on secret shares, as a tensor library.

The public surface (``import ss_engine as sse``)::

    with sse.LocalSession() as s:          # two party threads + an in-process dealer
        x = s.share(np.random.randn(4, 3)) # a Secret: fixed-point shares, one per party
        y = (x @ x.T).relu().reveal()      # ops on handles; reveal() to the caller only
    sse.RemoteSession(config)              # the same handles on a deployment's servers
    model, report = sse.train(torch_model, x, y, epochs=3, batch_size=32, lr=0.1)

``Secret`` is the handle type, ``where`` and ``concatenate`` the functions of several
handles, ``OpError`` what an invalid op raises and ``SessionFailed`` what a session that
ended raises.  Everything else (protocols, layers, the deployment) lives in the
subpackages.  The names load on first use, so importing a subpackage stays light.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "LocalSession": "ss_engine.session.local",
    "RemoteSession": "ss_engine.session.remote",
    "Secret": "ss_engine.session.handle",
    "where": "ss_engine.session.handle",
    "concatenate": "ss_engine.session.handle",
    "SessionFailed": "ss_engine.session.core",
    "OpError": "ss_engine.dispatch",
    "train": "ss_engine.session.train",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ss_engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
