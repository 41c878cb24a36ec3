"""Topology file -> ``model.Topology``, with FILE:LINE:COL on every error.

The entry of the pipeline. YAML is composed into nodes (never constructed
into arbitrary objects: only the core scalar tags are accepted), converted into
plain data while recording where each value and key stood, then parsed by the
pydantic model and checked by ``rules``. All problems are collected, sorted by
position and raised together as one ``TopologyError``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from umlstate.errors import Diagnostic, TopologyError, UmlstateError
from umlstate.model import rules
from umlstate.model.guest import GUEST_FILE_MAX
from umlstate.model.topology import Topology

Loc = tuple[str | int, ...]

_CORE_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_STR = "tag:yaml.org,2002:str"
# libyaml's composer is ~10x faster on large topologies, with the same marks.
_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Aliases can expand a small file into a huge tree ("billion laughs").
_MAX_NODES = 100_000
_MAX_DEPTH = 64
_MAX_BYTES = 4 << 20


@dataclass
class _Doc:
    file: str
    read_from: ReadFrom | None = None
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    problems: list[Diagnostic] = field(default_factory=list)
    nodes: int = 0
    constructor: yaml.constructor.SafeConstructor = field(default_factory=yaml.constructor.SafeConstructor)

    def error(self, mark: Any, message: str) -> None:
        """At a YAML mark (pure-Python or libyaml: both have .line and .column) or a (line, col)."""
        line, col = mark if isinstance(mark, tuple) else (mark.line + 1, mark.column + 1)
        self.problems.append(Diagnostic(line, col, message, self.file))

    def where(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        """The position of ``loc``, or of its nearest ancestor that was written."""
        if key and loc in self.keys:
            return self.keys[loc]
        while loc not in self.values and loc:
            loc = loc[:-1]
        return self.values.get(loc, (1, 1))


# Reads a guest file's `from`: (the topology's folder, a path below it). The CLI's walks it one folder at a
# time, never through a link, and reads a bounded regular file.
ReadFrom = Callable[[str, str], bytes]


def load_file(path: str | os.PathLike[str], read_from: ReadFrom | None = None,
              noted: Callable[[bytes], None] | None = None) -> Topology:
    """Read and validate a topology file; raise TopologyError listing every problem. With ``read_from``,
    each guest file's ``from`` (relative to the topology's folder) is read into its ``content``; ``noted`` is
    given the file's bytes as read."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except FileNotFoundError:
        raise TopologyError([Diagnostic(1, 1, "no such file; pass a topology path or set "
                                              "UMLSTATE_TOPOLOGY", name)]) from None
    except IsADirectoryError:
        raise TopologyError([Diagnostic(1, 1, "this is a folder, not a topology file", name)]) from None
    except OSError as exc:
        raise TopologyError([Diagnostic(1, 1, f"cannot read the file: {exc.strerror}", name)]) from None
    if noted is not None:
        noted(raw)
    return load_bytes(raw, name, read_from)


def load_bytes(raw: bytes, file: str = "<topology>", read_from: ReadFrom | None = None) -> Topology:
    doc = _Doc(file, read_from)
    if len(raw) > _MAX_BYTES:
        doc.error((1, 1), f"the file is {len(raw)} bytes; a topology is at most {_MAX_BYTES}")
        raise TopologyError(doc.problems)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        doc.error((line, col), f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x})")
        raise TopologyError(doc.problems) from None
    return load_text(text, file, doc)


def load_text(text: str, file: str = "<topology>", doc: _Doc | None = None) -> Topology:
    doc = doc or _Doc(file)
    data = _compose(text, doc)
    if doc.problems:
        raise TopologyError(doc.problems)
    return _validate(data, doc)


def load_document(data: Any, file: str) -> Topology:
    """A topology already parsed (a saved plan carries one): the same model and rules as a file."""
    return _validate(data, _Doc(file))


def _validate(data: Any, doc: _Doc) -> Topology:
    if not isinstance(data, dict):
        kind = "nothing" if data is None else type(data).__name__
        doc.error(doc.where(()), f"the top level must be a mapping with at least 'name', found {kind}")
        raise TopologyError(doc.problems)
    _read_guest_files(data, doc)
    try:
        topology = Topology.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            _report_pydantic(err, doc)
        # One wrong object must not hide the other problems of the file: check the rules on
        # what remains once the objects that did not parse are left out.
        rest = _without_broken(data, exc.errors())
        if rest is not None:
            _check_rules(rest, doc)
        raise TopologyError(doc.problems) from None
    _check_rules(_Rest(topology, {}, set()), doc)
    if doc.problems:
        raise TopologyError(doc.problems)
    return topology


def _read_guest_files(data: dict[str, Any], doc: _Doc) -> None:
    """Each guest file's ``from``, read into its ``content`` (in place), where the file says it is."""
    guests = data.get("guests")
    for g, guest in enumerate(guests if isinstance(guests, list) else []):
        files = guest.get("files") if isinstance(guest, dict) else None
        for f, entry in enumerate(files if isinstance(files, list) else []):
            if not isinstance(entry, dict) or not isinstance(entry.get("from"), str):
                continue
            loc: Loc = ("guests", g, "files", f, "from")
            if "content" in entry:
                doc.error(doc.where(loc, key=True), "a file takes exactly one of 'content' and 'from', not both")
                continue
            below = entry["from"]
            parts = below.split("/")
            if below.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in below:
                doc.error(doc.where(loc), f"'from' must be a path below the topology file's folder, without '..' "
                                          f"or '//', not {below!r}")
                continue
            if doc.read_from is None:
                continue
            folder = os.path.dirname(os.path.abspath(doc.file))
            path = os.path.join(folder, below)
            try:
                raw = doc.read_from(folder, below)
            except (OSError, UmlstateError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
                doc.error(doc.where(loc), f"cannot read {path}: {why}")
                continue
            if len(raw) > GUEST_FILE_MAX:
                doc.error(doc.where(loc), f"{path} is larger than {GUEST_FILE_MAX} bytes, the most a guest file "
                                          "may be (give the guest a disk for more)")
                continue
            try:
                entry["content"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                doc.error(doc.where(loc), f"{path} is not UTF-8 text")


@dataclass(frozen=True)
class _Rest:
    """What parsed of a file with broken objects: positions map back, references to the broken are moot."""

    topology: Topology
    index: dict[tuple[str | int, ...], list[int]]  # list path -> original index of each kept item
    broken: set[str]  # names of the objects left out


_LISTS: tuple[tuple[str | int, ...], ...] = (("subnets",), ("taps",), ("switches",), ("guests",), ("checks",),
                                           ("host", "groups"), ("host", "routes"))


def _without_broken(data: dict[str, Any], errors: list[ErrorDetails]) -> _Rest | None:
    """The document without the list items that failed to parse; None when the failure is elsewhere."""
    bad: dict[tuple[str | int, ...], set[int]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        where = next((path for path in _LISTS if loc[:len(path)] == path and len(loc) > len(path)
                      and isinstance(loc[len(path)], int)), None)
        if where is None:
            return None
        bad.setdefault(where, set()).add(int(loc[len(where)]))
    pruned = dict(data)
    index: dict[tuple[str | int, ...], list[int]] = {}
    broken: set[str] = set()
    for path, indices in bad.items():
        parent = pruned if len(path) == 1 else dict(pruned.get("host") or {})
        items = parent.get(str(path[-1])) or []
        broken |= {str(items[i].get("name")) for i in indices if isinstance(items[i], dict)}
        index[path] = [i for i in range(len(items)) if i not in indices]
        parent[str(path[-1])] = [items[i] for i in index[path]]
        if len(path) > 1:
            pruned["host"] = parent
    try:
        return _Rest(Topology.model_validate(pruned), index, broken)
    except ValidationError:
        return None


def _check_rules(rest: _Rest, doc: _Doc) -> None:
    for problem in rules.check(rest.topology):
        if any(f"{name!r}, which is not defined" in problem.message for name in rest.broken):
            continue  # the broken object's own error says it all
        loc = problem.loc
        for path, kept in rest.index.items():
            if loc[:len(path)] == path and len(loc) > len(path) and isinstance(loc[len(path)], int):
                loc = (*path, kept[int(loc[len(path)])], *loc[len(path) + 1:])
        doc.error(doc.where(loc), problem.message)


def _compose(text: str, doc: _Doc) -> Any:
    try:
        node = yaml.compose(text, Loader=_SAFE_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = (exc.problem or "invalid YAML").strip()
        if exc.context:
            message = f"{exc.context.strip()}: {message}"
        if mark is not None and _char_at(text, mark.line, mark.column) == "\t":
            message += " (YAML indents with spaces, not tabs)"
        elif any(s in message for s in ("expected <block end>", "mapping values are not allowed",
                                        "did not find expected")):
            message += " (check this line's indentation against the lines above)"
        doc.error(mark if mark else (1, 1), f"invalid YAML: {message}")
        return None
    except yaml.YAMLError as exc:  # ReaderError: control characters and the like
        position = getattr(exc, "position", 0)
        line = text.count("\n", 0, position) + 1
        col = position - (text.rfind("\n", 0, position) + 1) + 1
        reason = getattr(exc, "reason", str(exc))
        doc.error((line, col), f"invalid YAML: {reason}")
        return None
    if node is None:
        doc.error((1, 1), "the file is empty; a topology needs at least 'name'")
        return None
    return _convert(node, (), doc, 0)


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    return lines[line][column] if line < len(lines) and column < len(lines[line]) else ""


def _convert(node: yaml.Node, loc: Loc, doc: _Doc, depth: int) -> Any:
    doc.nodes += 1
    if doc.nodes > _MAX_NODES or depth > _MAX_DEPTH:
        if doc.nodes == _MAX_NODES + 1 or depth == _MAX_DEPTH + 1:
            doc.error(node.start_mark, "the document is too large or too deeply nested "
                                       "(aliases expand beyond what a topology needs)")
        return None
    doc.values.setdefault(loc, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        if node.tag != "tag:yaml.org,2002:map":
            doc.error(node.start_mark, f"tag {node.tag} is not allowed here")
        out: dict[str, Any] = {}
        first: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                doc.error(key_node.start_mark, "keys must be plain words, not lists or mappings")
                continue
            key = key_node.value
            if key == "<<" and key_node.tag == "tag:yaml.org,2002:merge":
                doc.error(key_node.start_mark, "merge keys (<<) are not supported; write the keys out")
                continue
            if key in first:
                prev = first[key].start_mark
                doc.error(key_node.start_mark,
                          f"duplicate key {key!r} (first at line {prev.line + 1}, "
                          f"column {prev.column + 1}); each key may appear once")
                continue
            first[key] = key_node
            doc.keys[(*loc, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _convert(value_node, (*loc, key), doc, depth + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        if node.tag != "tag:yaml.org,2002:seq":
            doc.error(node.start_mark, f"tag {node.tag} is not allowed here")
        return [_convert(item, (*loc, i), doc, depth + 1) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    if node.tag == _TIMESTAMP:
        return node.value  # a date-like string stays a string
    if node.tag == _STR:
        return node.value  # most values: what construct_object would return, without its bookkeeping
    if node.tag not in _CORE_TAGS:
        doc.error(node.start_mark, f"tag {node.tag} is not allowed; only plain values are")
        return None
    try:
        return doc.constructor.construct_object(node)
    except (ValueError, yaml.YAMLError) as exc:
        doc.error(node.start_mark, f"cannot read value {node.value[:40]!r}: {exc}")
        return None


def _report_pydantic(err: ErrorDetails, doc: _Doc) -> None:
    loc: Loc = tuple(err["loc"])
    kind = err["type"]
    label = _label(loc)
    value = err.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(loc[:-1])
        hint = difflib.get_close_matches(key, allowed, n=1)
        message = f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        if allowed:
            message += f"; allowed here: {', '.join(allowed)}"
        doc.error(doc.where(loc, key=True), message)
    elif kind == "missing":
        doc.error(doc.where(loc), f"missing required key {str(loc[-1])!r}" + _in(loc[:-1]))
    elif kind == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern", "")
        doc.error(doc.where(loc), f"{label} {value!r} does not match {pattern}")
    elif kind == "literal_error":
        expected = (err.get("ctx") or {}).get("expected", "")
        doc.error(doc.where(loc), f"{label} {value!r} is not one of {expected}")
    elif kind in ("value_error", "assertion_error"):
        doc.error(doc.where(loc), str(err["msg"]).removeprefix("Value error, "))
    elif kind.endswith("_type") or kind.endswith("_parsing"):
        doc.error(doc.where(loc), f"{label}: {err['msg'].lower()}, found {_describe(value)}")
    else:
        doc.error(doc.where(loc), f"{label}: {err['msg']}")


def _label(loc: Loc) -> str:
    named = [p for p in loc if isinstance(p, str)]
    return named[-1] if named else "value"


def _in(loc: Loc) -> str:
    if not loc:
        return " at the top level"
    parts = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    return f" in {parts.lstrip('.')}"


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"[:80]


def _allowed_keys(loc: Loc) -> list[str]:
    """The keys the model accepts at ``loc``, for 'did you mean' hints."""
    model: type[BaseModel] | None = Topology
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        model = _model_in(info.annotation) if info else None
    return sorted(model.model_fields) if model else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found:
            return found
    return None
