"""The impls a run can measure: built in, named by module path, or registered by entry point.

Design note
-----------
An impl is a module that keeps the loop contract (``fastsock._common``,
docs/impls.md): it declares ``FASTSOCK_CONTRACT``, provides some of the
contract's functions (those it defines) and may declare the modes it runs
(``MODES``).  What it provides decides where it applies: the measured side
of a case calls one function (:func:`function_for`: ``stream_send`` for a
stream over TCP or Unix streams, ``dgram_send`` over datagrams, the
``*_pingpong`` for round trips, ``connect_accept``), so a case is the
impl's when it defines that function and runs that mode
(:meth:`Impl.applies`).  The matrix asks here; the rest is left out with
a note (:meth:`Impl.scope` says what an impl runs).

Where impls come from, in the order ``--impl all`` lists them:

* built in: the twins (``cython``, ``python``), the event loops
  (``asyncio-*``, ``uvloop-*``: ``fastsock._asyncloops`` behind an
  ``AsyncConn``, not a loop module; stream and pingpong in ``nonblocking``
  mode) and the standard library's idioms (``socket-*``,
  ``fastsock._idioms``).  The twins and event loops are described here
  without importing anything, so a twin's worker starts as light as
  before (no asyncio); the idioms are read from their modules;
* entry points of the group ``fastsock.impls`` (``name = "pkg.module"``):
  ``pip install`` of a package that registers one makes it appear in
  ``--impl all`` and ``--list``;
* ``--impl pkg.module`` (a dotted module path: the impl's name is the
  path) or ``--impl label=pkg.module`` (any importable module, under a
  name of its own).

Bad input is an :class:`ImplError`, one line: an unknown name, a module
that does not import, one without ``FASTSOCK_CONTRACT`` or with a newer
contract, no contract function, bad ``MODES``, a label that is a built-in
impl's or an entry point's name, an entry point that fails to load.

Outside impls (entry points and modules) are imported by every process
that enumerates cases (the run and each worker), as the matrix needs
their declarations; what they measure is checked before a run
(:mod:`bench.run.conformance`).  :func:`select` keeps the impls it
resolved in this process, so :func:`get` knows them by name afterwards.
"""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import fastsock
from bench.analysis.report import (
    ASYNC_IMPLS,
    DGRAM_TRANSPORTS,
    IDIOM_IMPLS,
    SCENARIOS,
    TRANSPORTS,
    TWIN_IMPLS,
)
from fastsock._common import CONNECT_MODES, CONTRACT_VERSION, MODES

GROUP = "fastsock.impls"  # the entry-point group
# The contract versions this fastsock measures.
SUPPORTED_CONTRACTS = (1,)
UVLOOP_IMPLS = ("uvloop-streams", "uvloop-sock")
# A name: no '/' (the case name's separator), ',' or '=' (--impl's).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")
MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")
KINDS = ("twin", "event loop", "idiom", "outside")
STREAM_TRANSPORTS = tuple(t for t in TRANSPORTS if t not in DGRAM_TRANSPORTS)
CONNECT_TRANSPORTS = ("tcp4", "tcp6", "unix-stream")


class ImplError(ValueError):
    """An impl that cannot be used; ``str()`` is one line."""


def function_for(scenario: str, transport: str) -> str:
    """The contract function the measured side of such a case calls."""
    if scenario == "connect":
        return "connect_accept"
    dgram = transport in DGRAM_TRANSPORTS
    if scenario == "pingpong":
        return "dgram_pingpong" if dgram else "stream_pingpong"
    return "dgram_send" if dgram else "stream_send"


@dataclass(frozen=True)
class Impl:
    """What the matrix and the worker need to know of one impl."""

    name: str
    module: str  # where its loops are (the event loops: fastsock._asyncloops)
    kind: str  # one of KINDS
    functions: frozenset[str]  # the contract functions it provides
    modes: tuple[str, ...]  # the modes it runs
    source: str = "built in"  # or "entry point", "--impl"
    contract: int = CONTRACT_VERSION

    @property
    def builtin(self) -> bool:
        return self.kind != "outside"

    def applies(self, scenario: str, transport: str, mode: str) -> bool:
        if function_for(scenario, transport) not in self.functions:
            return False
        if scenario == "connect" and (mode not in CONNECT_MODES
                                      or transport not in CONNECT_TRANSPORTS):
            return False
        return mode in self.modes

    def scope(self) -> str:
        """What it runs, in words: 'stream and pingpong over tcp4, tcp6,
        unix-stream in nonblocking mode'."""
        runs: dict[str, list[str]] = {}
        for scenario in SCENARIOS:
            for t in CONNECT_TRANSPORTS if scenario == "connect" else TRANSPORTS:
                if function_for(scenario, t) in self.functions:
                    runs.setdefault(scenario, []).append(t)
        by_transports: dict[tuple[str, ...], list[str]] = {}
        for scenario, ts in runs.items():
            by_transports.setdefault(tuple(ts), []).append(scenario)
        what = "; ".join(f"{' and '.join(ss)} over {', '.join(ts)}"
                         for ts, ss in by_transports.items()) or "nothing"
        modes = self.modes
        if set(runs) == {"connect"}:
            modes = tuple(m for m in modes if m in CONNECT_MODES)
        if tuple(modes) == MODES:
            return f"{what} in every mode"
        return f"{what} in {' or '.join(modes)} mode"

    def load(self) -> Any:
        """The loops module (None for an event loop, which the worker wraps
        around the socket); ImplError where it cannot be loaded here."""
        if self.kind == "event loop":
            return None
        if self.kind == "twin":
            found = fastsock.implementations().get(self.name)
            if found is None:
                raise ImplError("the compiled extension is not built: cannot run cython cases")
            return found
        return _import(self.module, self.name)

    def metadata(self) -> dict[str, Any]:
        """Where it came from, for the report: ``impl_module``,
        ``impl_origin`` (the module's file), ``impl_contract``,
        ``impl_dist`` and ``impl_dist_version`` where known, ``impl_version``
        when the module says (``__version__``)."""
        module = sys.modules.get(self.module) or _import(self.module, self.name)
        out: dict[str, Any] = {"impl_module": self.module, "impl_contract": self.contract}
        origin = getattr(module, "__file__", None)
        if origin:
            out["impl_origin"] = str(origin)
        if self.builtin:  # fastsock's own: no lookup (a twin's worker stays light)
            dist: tuple[str, str] | None = ("fastsock", fastsock.__version__)
        else:
            dist = distribution_of(self.module)
        if dist is not None:
            out["impl_dist"], out["impl_dist_version"] = dist
        version = getattr(module, "__version__", None)
        if isinstance(version, str) and version.strip() and "\n" not in version:
            out["impl_version"] = version.strip()
        return out


_ALL = frozenset(fastsock.LOOP_NAMES)
_ASYNC = frozenset({"stream_send", "stream_pingpong"})
# The built-ins described without an import (the idioms are read from their
# modules: see get()).
_STATIC = {
    "cython": Impl("cython", "fastsock._loops", "twin", _ALL, MODES),
    "python": Impl("python", "fastsock._pyloops", "twin", _ALL, MODES),
    **{name: Impl(name, "fastsock._asyncloops", "event loop", _ASYNC, ("nonblocking",))
       for name in ASYNC_IMPLS},
}
BUILTIN_IMPLS = (*TWIN_IMPLS, *ASYNC_IMPLS, *IDIOM_IMPLS)
# What this process resolved: idioms once read, outside impls once selected.
_KNOWN: dict[str, Impl] = {}


def _idiom_module(name: str) -> str:
    from fastsock._idioms import IDIOMS

    return IDIOMS[name]


def get(name: str) -> Impl:
    """A built-in impl, or one this process selected; KeyError otherwise."""
    if name in _STATIC:
        return _STATIC[name]
    if name not in _KNOWN and name in IDIOM_IMPLS:
        module = _idiom_module(name)
        _KNOWN[name] = describe(_import(module, name), name, module, "idiom", "built in")
    return _KNOWN[name]


def _import(module: str, name: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ImplError(f"impl {name}: no module {module} ({exc})") from None
    except Exception as exc:  # a module's own code: any error, one line
        raise ImplError(f"impl {name}: module {module} failed to import "
                        f"({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def describe(module: ModuleType, name: str, path: str, kind: str, source: str) -> Impl:
    """An impl from a module's own declarations; ImplError when they do not
    keep the contract's rules (docs/impls.md)."""
    where = f"impl {name}" + (f" ({path})" if path != name else "")
    version = getattr(module, "FASTSOCK_CONTRACT", None)
    if version is None:
        raise ImplError(f"{where} does not declare FASTSOCK_CONTRACT (the loop contract's "
                        f"version it keeps; this fastsock's is {CONTRACT_VERSION})")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ImplError(f"{where}: FASTSOCK_CONTRACT must be a contract version (an int "
                        f"from 1), got {version!r}")
    if version > CONTRACT_VERSION:
        raise ImplError(f"{where} keeps contract {version}, newer than this fastsock's "
                        f"({CONTRACT_VERSION}): upgrade fastsock")
    if version not in SUPPORTED_CONTRACTS:
        raise ImplError(f"{where} keeps contract {version}, which this fastsock no longer "
                        f"measures (it measures {', '.join(map(str, SUPPORTED_CONTRACTS))})")
    functions = frozenset(f for f in fastsock.LOOP_NAMES if hasattr(module, f))
    for f in sorted(functions):
        if not callable(getattr(module, f)):
            raise ImplError(f"{where}: {f} is not callable")
    if not functions:
        raise ImplError(f"{where} provides none of the contract's functions "
                        f"({', '.join(fastsock.LOOP_NAMES)})")
    modes = getattr(module, "MODES", MODES)
    if isinstance(modes, str) or not isinstance(modes, (tuple, list)) or not modes \
            or any(m not in MODES for m in modes):
        raise ImplError(f"{where}: MODES must be a non-empty tuple of the contract's modes "
                        f"({', '.join(MODES)}), got {modes!r}")
    ordered = tuple(m for m in MODES if m in modes)
    return Impl(name, path, kind, functions, ordered, source, version)


# ------------------------------------------------------------ entry points

_EPS: dict[str, Any] | None = None


def entry_points() -> dict[str, Any]:
    """The entry points of GROUP by name (read once per process);
    ImplError for a name two packages register."""
    global _EPS
    if _EPS is None:
        from importlib import metadata

        found: Any = metadata.entry_points()
        group = found.select(group=GROUP) if hasattr(found, "select") \
            else found.get(GROUP, [])  # Python 3.9
        eps: dict[str, Any] = {}
        for ep in group:
            if ep.name in eps and eps[ep.name].value != ep.value:
                raise ImplError(f"entry point {ep.name} of group {GROUP} is registered twice "
                                f"({eps[ep.name].value} and {ep.value})")
            eps[ep.name] = ep
        _EPS = eps
    return _EPS


def _from_entry_point(name: str, ep: Any) -> Impl:
    dist = getattr(getattr(ep, "dist", None), "name", None)
    by = f"entry point {name} of group {GROUP}" + (f" (package {dist})" if dist else "")
    if name in BUILTIN_IMPLS:
        raise ImplError(f"{by} has a built-in impl's name; the package must rename it")
    if not NAME.match(name):
        raise ImplError(f"{by}: not a usable impl name (letters, digits, '.', '_', '+', '-')")
    value = str(ep.value)
    if ":" in value or not MODULE.match(value.strip()):
        raise ImplError(f"{by} must name a module (pkg.module), got {value!r}")
    module = value.strip()
    try:
        loaded = importlib.import_module(module)
    except Exception as exc:
        raise ImplError(f"{by} failed to load: {type(exc).__name__}: {_first_line(exc)}") \
            from None
    return describe(loaded, name, module, "outside", "entry point")


# ------------------------------------------------------------ --impl

def resolve(item: str) -> Impl:
    """One ``--impl`` item: a built-in name, an entry point's name, a dotted
    module path, or ``label=module``."""
    item = item.strip()
    if "=" in item:
        label, _, module = (part.strip() for part in item.partition("="))
        if not NAME.match(label):
            raise ImplError(f"impl label {label!r}: letters, digits, '.', '_', '+', '-' "
                            "(at most 64, starting with a letter or digit)")
        if label in BUILTIN_IMPLS:
            raise ImplError(f"impl label {label} is a built-in impl's name; choose another")
        if label in entry_points():
            raise ImplError(f"impl label {label} is the name of an entry point of group "
                            f"{GROUP}; choose another")
        if not MODULE.match(module):
            raise ImplError(f"impl {label}: {module!r} is not a module path (pkg.module)")
        return describe(_import(module, label), label, module, "outside", "--impl")
    if item in BUILTIN_IMPLS:
        return get(item)
    eps = entry_points()
    if item in eps:
        return _from_entry_point(item, eps[item])
    if "." in item and MODULE.match(item):
        return describe(_import(item, item), item, item, "outside", "--impl")
    raise ImplError(f"unknown impl {item!r} (expected one of: {', '.join(BUILTIN_IMPLS)}; "
                    f"an entry point of group {GROUP}; a module path pkg.module; "
                    "or label=pkg.module)")


def adopt(name: str, module: str) -> Impl:
    """In a process the run started (a counting worker): the outside impl
    the run selected as ``name``, from ``module``, known to :func:`get`."""
    known = _KNOWN.get(name)
    if known is None:
        known = _KNOWN[name] = describe(_import(module, name), name, module, "outside",
                                        "--impl")
    return known


def available(uvloop: bool) -> list[str]:
    """``--impl all``: the built-ins (no uvloop pair without uvloop), then
    the entry points by name (each loaded: one that fails is an error)."""
    names = [n for n in BUILTIN_IMPLS if uvloop or n not in UVLOOP_IMPLS]
    for name, ep in sorted(entry_points().items()):
        _KNOWN[name] = _from_entry_point(name, ep)
        names.append(name)
    return names


def select(text: str, uvloop: bool) -> tuple[str, ...]:
    """An ``--impl`` list as impl names, each resolved and known to
    :func:`get` from now on.  ``all`` is :func:`available`; an empty item
    or a name given twice for two modules is an ImplError."""
    items = [t.strip() for t in text.split(",")]
    if any(not t for t in items):
        raise ImplError(f"empty item in --impl {text!r}")
    if items == ["all"]:
        return tuple(available(uvloop))
    names: list[str] = []
    for item in items:
        impl = resolve(item)
        known = _KNOWN.get(impl.name)
        if known is not None and not known.builtin and known.module != impl.module:
            raise ImplError(f"impl {impl.name} names two modules: {known.module} and "
                            f"{impl.module}")
        _KNOWN.setdefault(impl.name, impl)
        if impl.name not in names:
            names.append(impl.name)
    return tuple(names)


def distribution_of(module: str) -> tuple[str, str] | None:
    """(distribution, version) that installed ``module``'s top-level
    package, or None (a module on PYTHONPATH, say)."""
    from importlib import metadata

    top = module.split(".")[0]
    names: list[str] = []
    if hasattr(metadata, "packages_distributions"):  # Python >= 3.10
        names = list(metadata.packages_distributions().get(top, []))
    else:
        for dist in metadata.distributions():
            tops = (dist.read_text("top_level.txt") or "").split()
            if top in tops:
                names.append(dist.metadata["Name"])
    for name in names:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None
