"""The kernel layer: netlink (rtnl, ctnetlink, nfnetlink), namespaces, sysctls, processes.

pyroute2's package ``__init__`` imports every socket it has (NDB, IPDB, WiFi,
devlink, plan9, ...): ~0.2 s on this machine, for a package natns uses a few
message classes and two sockets of. Before anything here imports pyroute2,
`_lazy_pyroute2` registers the package without running that ``__init__``: its
submodules (``pyroute2.netlink.rtnl.ifinfmsg``, ``pyroute2.netns``, ...) import
as usual, and the first time anyone asks the package itself for a name
(``from pyroute2 import IPRoute``, ``pyroute2.NDB``) the real ``__init__`` runs
then, once, so every public name is there for whoever wants it
(docs/performance.md, "Start-up").
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types


class _LazyPackage(types.ModuleType):
    """pyroute2 registered, its ``__init__`` run on the first name asked of it."""

    def __getattr__(self, name: str):
        if name.startswith("__") or self.__dict__.get("_natns_loaded"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        if importlib.util.find_spec(f"{self.__name__}.{name}") is not None:
            # `from pyroute2 import netns` asks the package for the name before importing
            # the submodule: a submodule is imported as itself, without the __init__.
            return importlib.import_module(f"{self.__name__}.{name}")
        with _INIT_LOCK:
            if not self.__dict__.get("_natns_loaded"):
                self.__dict__["_natns_loaded"] = True  # first: the __init__ asks for names too
                self.__spec__.loader.exec_module(self)
        return getattr(self, name)


_INIT_LOCK = threading.RLock()


def _lazy_pyroute2() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not installed as a package: the plain import will say so
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _LazyPackage
    sys.modules["pyroute2"] = module


_lazy_pyroute2()
