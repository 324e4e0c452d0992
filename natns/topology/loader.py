"""Reading a topology file: YAML text to a validated `Topology`, or one error line.

`load(path)`, `loads(text)` and `parse(data)` raise TopologyError naming the
file, the field path (``routers[0].external.address``) and the problem. The
YAML is read by PyYAML's safe loader, refusing a key written twice in one
mapping (PyYAML would keep the last silently); an unknown key is named with
the nearest known one (``adress``: did you mean 'address'?).
"""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import TopologyError
from .checks import cross_check
from .schema import Topology

# --------------------------------------------------------------------------- YAML


class _DuplicateKey(yaml.MarkedYAMLError):
    """A key written twice in one mapping (the problem names both lines)."""


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML's SafeLoader, refusing duplicate keys.

    The C one (libyaml's parser, PyYAML's own constructor) where PyYAML was built
    with it: ~10x faster on a file of 500 routers (docs/performance.md).
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *a`: merged keys may be overridden, that is its point
                try:
                    key = self.construct_object(key_node, deep=True)
                    hash(key)
                except Exception:  # unhashable or unreadable: SafeLoader says so below
                    continue
                line = key_node.start_mark.line + 1
                if key in first:
                    raise _DuplicateKey(
                        problem=f"key {key!r} appears twice in one mapping (lines {first[key]} and {line})",
                        problem_mark=key_node.start_mark)
                first[key] = line
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)


class _Unusual(Exception):
    """A document `_plain` leaves to PyYAML's own constructor."""


_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
#: scalar tags whose SafeConstructor functions return the value (not a generator)
_SCALARS = ("tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float", "tag:yaml.org,2002:binary", "tag:yaml.org,2002:timestamp")


def _plain(loader: _Loader, node: yaml.Node, made: dict, open_: set):
    """The object PyYAML's SafeLoader makes of `node`, made directly: strings, the plain
    scalars, mappings and sequences, aliases (`made`: by node). Anything else (merge
    keys, !!set, !!omap, a recursive alias) raises _Unusual, and so does any error,
    a key written twice among them. A topology file of 5,000 floating IPs is built
    ~2x faster so (docs/performance.md)."""
    if node.tag == _STR and type(node) is yaml.ScalarNode:
        return node.value
    got = made.get(id(node))
    if got is not None:
        return got[1]
    if id(node) in open_:
        raise _Unusual()  # an alias to a collection being built: PyYAML's generators do that
    if type(node) is yaml.ScalarNode:
        if node.tag not in _SCALARS:
            raise _Unusual()
        value = loader.yaml_constructors[node.tag](loader, node)
    elif type(node) is yaml.MappingNode and node.tag == _MAP:
        open_.add(id(node))
        value = {}
        for key_node, value_node in node.value:
            if key_node.tag in ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"):
                raise _Unusual()
            key = _plain(loader, key_node, made, open_)
            if key in value:  # unhashable: TypeError
                raise _Unusual()
            value[key] = _plain(loader, value_node, made, open_)
        open_.discard(id(node))
    elif type(node) is yaml.SequenceNode and node.tag == _SEQ:
        open_.add(id(node))
        value = [_plain(loader, child, made, open_) for child in node.value]
        open_.discard(id(node))
    else:
        raise _Unusual()
    made[id(node)] = (node, value)  # the node is kept so that its id stays its own
    return value


def _construct_document(self: _Loader, node: yaml.Node):
    """SafeLoader's document, made by `_plain`; what it leaves, and every error, by
    PyYAML's own constructor (with the duplicate-key check above), as before: the
    errors are PyYAML's, in PyYAML's order."""
    try:
        return _plain(self, node, {}, set())
    except Exception:  # noqa: BLE001  (made again, the PyYAML way, which names the problem)
        return yaml.SafeLoader.construct_document(self, node)


_Loader.construct_document = _construct_document


def read_yaml(text: str) -> Any:
    """`yaml.safe_load(text)`, but a key written twice in a mapping is an error."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)


# --------------------------------------------------------------------------- errors


_TAGS = ("IPv4Address", "IPv4Interface", "IPv4Network", "IPv6Address", "IPv6Interface", "IPv6Network", "str", "int")


def _loc(loc: tuple, data: Any = None) -> str:
    """A pydantic error location as a field path (``routers[0].external.address``).

    pydantic puts the names of union members and validators into locations
    too; they are left out, unless the input has a key of that name (a user
    may well write a field called ``str``). A key that isn't a plain name
    (empty, with dots, spaces or newlines) is shown quoted, so the path
    stays one line and names the key exactly.
    """
    out = ""
    cur = data
    for part in loc:
        if isinstance(part, int) and not (isinstance(cur, dict) and part in cur):
            out += f"[{part}]"
            cur = cur[part] if isinstance(cur, (list, tuple)) and -len(cur) <= part < len(cur) else None
            continue
        present = isinstance(cur, dict) and part in cur
        if not present and isinstance(part, str) and (
                part.startswith(("function-", "literal[", "is-instance[", "lax-or-strict[", "json-or-python["))
                or part in _TAGS):
            continue
        if isinstance(part, str) and re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += ("." if out else "") + part
        else:
            out += f"[{part!r}]"
        cur = cur[part] if present else None
    return out


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model whose keys the mapping at `loc` holds (`loc` from Topology down), or None."""
    model: type[BaseModel] = Topology
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        if part not in fields:
            return None
        inner = _inner_model(fields[part].annotation)
        if inner is None:
            return None
        model = inner
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model in ``M``, ``list[M]`` or ``M | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _suggestion(loc: tuple) -> str:
    """``; did you mean 'address'?`` for an unknown key close to a known one of its mapping."""
    key = loc[-1] if loc else None
    model = _model_at(loc[:-1])
    if not isinstance(key, str) or model is None:
        return ""
    close = _close(key, [f.alias or name for name, f in model.model_fields.items()])
    return f"; did you mean {close!r}?" if close else ""


def _close(key: str, known: list[str]) -> str | None:
    """The known key `key` is most likely a misspelling of, if any (difflib's ratio >= 0.75)."""
    found = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    return found[0] if found else None


def _first_error(exc: ValidationError, data: Any = None) -> tuple[str, str]:
    errs = exc.errors(include_url=False)
    err = errs[0]
    if err["type"] == "missing" and isinstance(err["loc"][-1], str):
        # A required key missing next to an unknown key much like it: the same key, misspelt.
        parent, wanted = err["loc"][:-1], err["loc"][-1]
        model = _model_at(parent)
        wanted = next((f.alias or n for n, f in model.model_fields.items() if n == wanted), wanted) if model else wanted
        err = next((e for e in errs if e["type"] == "extra_forbidden" and e["loc"][:-1] == parent
                    and isinstance(e["loc"][-1], str) and _close(e["loc"][-1], [wanted])), err)
    path = _loc(err["loc"], data)
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field" + _suggestion(err["loc"])
    elif err["type"] == "missing":
        msg = "required field is missing"
    msg = msg.removeprefix("Value error, ")
    return path, msg


# --------------------------------------------------------------------------- loading


def parse(data: Any, file: str = "<topology>") -> Topology:
    """Validate already-parsed YAML data; raise TopologyError on the first problem."""
    if not isinstance(data, dict):
        raise TopologyError(file, "", "a topology must be a mapping with name, routers, networks")
    try:
        topo = Topology.model_validate(data)
    except ValidationError as exc:
        path, msg = _first_error(exc, data)
        raise TopologyError(file, path, msg) from None
    cross_check(topo, file)
    return topo


def load(path: str) -> Topology:
    """Read and validate the topology file at `path`."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise TopologyError(path, "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise TopologyError(path, "", f"not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})") from None
    return loads(text, path)


def loads(text: str, file: str = "<topology>") -> Topology:
    """Validate a topology given as YAML text."""
    try:
        data = read_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "maximum nesting depth" in problem:  # libyaml's words for what RecursionError is below
            problem = "nested too deeply"
        raise TopologyError(file, where, f"not valid YAML: {problem}") from None
    except RecursionError:  # PyYAML builds nested collections recursively
        raise TopologyError(file, "", "not valid YAML: nested too deeply") from None
    except Exception as exc:  # `!!int x`, `!!bool maybe`: PyYAML's constructors raise plain errors
        problem = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise TopologyError(file, "", f"not valid YAML: a value cannot be read ({problem})") from None
    return parse(data, file)
