"""YAML, JSON and TOML text to plain data, and field paths back to lines of that text.

Duplicate keys are errors in every format (YAML and JSON would silently keep the last one). A
YAML document is checked before it is built: how deeply it nests and how many values its
anchors and aliases expand to (a 700-byte "billion laughs" file is refused in milliseconds).
Syntax errors name the file and the line.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any, Protocol

import yaml

from tunlab.errors import TopologyError
from tunlab.topologies._limits import Limits, describe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: much faster


_STR = "tag:yaml.org,2002:str"
# how a plain scalar resolves under the safe resolver: a function of its text alone (no path
# resolvers), so it is remembered; bounded, as a long-lived process reads many files
_PLAIN_TAGS: dict[str, str] = {}
_PLAIN_TAGS_MAX = 50_000


class UniqueKeyLoader(_Base):  # type: ignore[misc]
    """SafeLoader that refuses duplicate keys (YAML would silently keep the last one)."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        """The safe resolver's tag, sooner for scalars (libyaml asks for every one of them).

        A quoted scalar is a string; a plain one with two dots or more (an address: 198.18.0.1)
        is one too — every implicit type's pattern (int, float, bool, null, timestamp) allows
        one dot at most; any other plain scalar is resolved once and remembered."""
        if kind is yaml.ScalarNode and not self.yaml_path_resolvers:
            if not implicit[0]:
                return _STR
            if value.count(".") > 1:
                return _STR
            tag = _PLAIN_TAGS.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_PLAIN_TAGS) < _PLAIN_TAGS_MAX:
                    _PLAIN_TAGS[value] = tag
            return tag
        return super().resolve(kind, value, implicit)


_MERGE = "tag:yaml.org,2002:merge"
_VALUE = "tag:yaml.org,2002:value"  # a plain `=` key, which PyYAML reads as the string "="


def _note_key(key: Any, key_node: yaml.Node, seen: dict[Any, int]) -> None:
    """Record a mapping key's line in seen; refuse a key that cannot be one (a mapping, a list)
    or that the mapping already has."""
    try:
        first = seen.get(key)
    except TypeError:
        raise yaml.constructor.ConstructorError(
            None, None, "a mapping key must be a plain value (an unrendered {{ }}?)", key_node.start_mark
        ) from None
    if first is not None:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate key {key!r} (first on line {first + 1})", key_node.start_mark
        )
    seen[key] = key_node.start_mark.line


def _construct_mapping(loader: Any, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE:  # `<<: *base` — merged keys may be overridden, as YAML says
            continue
        key = key_node.value if key_node.tag == _VALUE else loader.construct_object(key_node, deep=deep)
        _note_key(key, key_node, seen)
    result: dict[Any, Any] = loader.construct_mapping(node, deep=deep)
    return result


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


_MAP = yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG
_SEQ = yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG
_SCALARS = {
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}


class _Unusual(Exception):
    """The document uses a tag or a merge key the fast construction leaves to PyYAML."""


def _construct_fast(loader: Any, root: yaml.Node) -> Any:
    """Plain data from a composed document in one recursive pass: the tags a topology uses
    (str, int, float, bool, null, mappings and sequences) built directly, duplicate keys
    refused as _construct_mapping does. Three times faster than PyYAML's general constructor
    on a 10,000-node lab; anything else (timestamps, sets, merge keys, custom tags) raises
    _Unusual and the caller constructs the document the general way."""
    built: dict[int, Any] = {}  # aliases are shared nodes: shared objects, as PyYAML makes

    def build(node: yaml.Node) -> Any:
        done = built.get(id(node))
        if done is not None:
            return done
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag in _SCALARS:
            return loader.yaml_constructors[tag](loader, node)
        if tag == _MAP:
            out: dict[Any, Any] = {}
            built[id(node)] = out
            pairs = node.value
            for key_node, value_node in pairs:  # strings, most of them: no call for those
                key_tag = key_node.tag
                if key_tag in (_MERGE, _VALUE):
                    raise _Unusual
                key = key_node.value if key_tag == _STR else build(key_node)
                try:
                    out[key] = value_node.value if value_node.tag == _STR else build(value_node)
                except TypeError:  # an unhashable key: _note_key says so, with its line
                    _note_key(key, key_node, {})
                    raise
            if len(out) != len(pairs):  # a key given twice: find it, and say where
                lines: dict[Any, int] = {}
                for key_node, _ in pairs:
                    _note_key(out_key(key_node), key_node, lines)
            return out
        if tag == _SEQ:
            items: list[Any] = []
            built[id(node)] = items
            items.extend(child.value if child.tag == _STR else build(child) for child in node.value)
            return items
        raise _Unusual

    def out_key(key_node: yaml.Node) -> Any:
        return key_node.value if key_node.tag == _STR else build(key_node)

    return build(root)


def _check_graph(root: yaml.Node, limits: Limits, path: str) -> None:
    """Depth and expanded size of a composed YAML graph (aliases are shared nodes)."""
    sizes: dict[int, int] = {}
    # iterative post-order walk: (node, depth, children visited?)
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if key in sizes and not done:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                children += [k, v]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if not done:
            if children and depth > limits.depth:
                line = node.start_mark.line + 1
                raise TopologyError(
                    f"{path}:{line}: nested more than {limits.depth} levels deep, "
                    f"{describe('depth', limits.depth)}"
                )
            stack.append((node, depth, True))
            stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(c), 1) for c in children)
        if total > limits.values:
            raise TopologyError(
                f"{path}: the document expands to more than {limits.values} values (YAML anchors "
                f"and aliases count each time they are used), {describe('values', limits.values)}"
            )
        sizes[key] = total


class TextStream(Protocol):
    """Text read as it comes (a render in progress): read() pieces, '' at the end."""

    def read(self, size: int = -1) -> str: ...

    def text_so_far(self) -> str: ...


def parse_yaml(text: str, path: str, limits: Limits) -> Any:
    return _parse_yaml(text, lambda: text, path, limits)


def parse_yaml_stream(stream: TextStream, path: str, limits: Limits) -> Any:
    """parse_yaml of text read from stream as it comes (libyaml asks for it piece by piece)."""
    return _parse_yaml(stream, stream.text_so_far, path, limits)


def _parse_yaml(source: str | TextStream, text_of: Callable[[], str], path: str, limits: Limits) -> Any:
    loader = UniqueKeyLoader(source)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise TopologyError(
                f"{path}: nested too deeply to read, {describe('depth', limits.depth)}"
            ) from None
        if node is None:
            return None
        if "&" in text_of():  # anchors (and so aliases) may be used: bound what they expand to
            _check_graph(node, limits, path)
        try:
            return _construct_fast(loader, node)
        except (_Unusual, RecursionError):
            return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}" if mark else ""
        problem = str(exc.problem or exc.context)
        if "nesting depth" in problem:
            problem += f", {describe('depth', limits.depth)}"
        raise TopologyError(f"{path}{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: {exc}") from None
    finally:
        loader.dispose()


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # rare: find the first key seen twice
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return out


def parse_json(text: str, path: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_json_pairs)
    except json.JSONDecodeError as exc:
        raise TopologyError(f"{path}:{exc.lineno}: {exc.msg} (column {exc.colno})") from None
    except ValueError as exc:  # a duplicate key: find its line
        match = re.search(r"duplicate key '(.*)'", str(exc))
        line = _first_line_of_key(text, match.group(1), second=True) if match else None
        at = f":{line}" if line else ""
        raise TopologyError(f"{path}{at}: {exc}") from None
    except RecursionError:
        raise TopologyError(f"{path}: nested too deeply to read (thousands of levels)") from None


def _first_line_of_key(text: str, key: str, *, second: bool = False) -> int | None:
    pattern = re.compile(r'"' + re.escape(key) + r'"\s*:')
    hits = [text.count("\n", 0, m.start()) + 1 for m in pattern.finditer(text)]
    if not hits:
        return None
    return hits[1] if second and len(hits) > 1 else hits[0]


_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def parse_toml(text: str, path: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = _TOML_AT.search(message)
        if m:
            message = _TOML_AT.sub(f"(column {m.group(2)})", message)
            raise TopologyError(f"{path}:{m.group(1)}: {message}") from None
        raise TopologyError(f"{path}: {message}") from None
    except RecursionError:
        raise TopologyError(f"{path}: nested too deeply to read") from None


def parse(text: str, fmt: str, path: str, limits: Limits) -> Any:
    """Plain data from the text of a topology (fmt: yaml, json or toml)."""
    if fmt == "yaml":
        return parse_yaml(text, path, limits)
    if fmt == "toml":
        return parse_toml(text, path)
    return parse_json(text, path)


# ---- field paths back to lines ------------------------------------------------------------------
def compose(text: str, fmt: str) -> Any:
    """The node tree of YAML or JSON text (JSON is YAML), for finding lines; None if unparsable."""
    if fmt not in ("yaml", "json"):
        return None
    try:
        return yaml.compose(text, Loader=_Base)
    except (yaml.YAMLError, RecursionError):
        return None


def yaml_line(document: Any, loc: tuple[Any, ...]) -> int | None:
    """1-based line of a field path in a composed document (None when unknown)."""
    if document is None:
        return None
    node = document
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def toml_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best line of a field path in TOML: the key under its table, else the table header."""
    if not loc:
        return None
    lines = text.splitlines()
    strings = [str(p) for p in loc if not isinstance(p, int)]
    best: int | None = None
    # a table header naming the longest prefix of the path, then the key after it
    for n in range(len(strings), 0, -1):
        header = re.compile(
            r"^\s*\[\[?\s*" + r"\s*\.\s*".join(re.escape(s) for s in strings[:n]) + r"\s*\]\]?\s*$"
        )
        for i, line in enumerate(lines):
            if header.match(line):
                best = i + 1
                rest = strings[n:]
                if rest:
                    key = re.compile(r"^\s*" + re.escape(rest[0]) + r"\s*=")
                    for j in range(i + 1, len(lines)):
                        if lines[j].lstrip().startswith("["):
                            break
                        if key.match(lines[j]):
                            return j + 1
                return best
    if strings:
        last = re.compile(r"(^|[{,\s])" + re.escape(strings[-1]) + r"\s*=")
        for i, line in enumerate(lines):
            if last.search(line):
                return i + 1
    return best
