"""Read a topology file: render it with jinja2 (sandboxed), parse YAML/TOML/JSON, validate.

Every error becomes a TopologyError whose lines read `path: message` (with the file line where
it can be found), so a person can act on it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import ValidationError

from tunlab.errors import TopologyError
from tunlab.topologies.models import KINDS, Topology, kinds_with_field
from tunlab.topologies.validate import Issue, check_topology, format_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FORMATS = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}


@dataclass
class Source:
    """Where a topology came from, to point errors at lines."""

    path: str
    text: str
    fmt: str
    templated: bool = False


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would silently keep the last one)."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "a mapping key must be a plain value (an unrendered {{ }}?)",
                key_node.start_mark,
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _template_env() -> ImmutableSandboxedEnvironment:
    """Sandboxed: no attribute access to Python internals, no file access; undefined = error."""
    return ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        loader=None,
    )


def _file_vars(text: str, fmt: str) -> dict[str, Any]:
    """The file's own `vars:` (which is not itself templated), read before rendering."""
    try:
        doc = _parse(text, fmt, "<vars>")
    except TopologyError:
        doc = None
    if isinstance(doc, dict):
        found = doc.get("vars")
        return found if isinstance(found, dict) else {}
    if fmt == "yaml":  # the document only parses once rendered: cut the vars block out
        match = re.search(r"^vars:([^\n]*)\n((?:[ \t]+.*\n|[ \t]*\n)*)", text, re.MULTILINE)
        if match:
            try:
                block = yaml.load(f"vars:{match.group(1)}\n{match.group(2)}", Loader=_UniqueKeyLoader)  # noqa: S506
            except yaml.YAMLError:
                return {}
            found = block.get("vars") if isinstance(block, dict) else None
            if isinstance(found, dict):
                return found
    return {}


def render(text: str, variables: Mapping[str, Any], path: str) -> str:
    env = _template_env()
    try:
        return env.from_string(text).render(**variables)
    except jinja2.UndefinedError as exc:
        raise TopologyError(
            f"{path}: template: {exc.message}; define it under vars: or pass --var NAME=VALUE"
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise TopologyError(f"{path}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise TopologyError(f"{path}: template: {exc} (templates cannot reach Python internals)") from None
    except jinja2.TemplateError as exc:
        raise TopologyError(f"{path}: template: {exc}") from None
    except TypeError as exc:
        if "no loader" in str(exc):
            raise TopologyError(f"{path}: template: templates cannot include or import files") from None
        raise TopologyError(f"{path}: template: {exc}") from None


def _parse(text: str, fmt: str, path: str) -> Any:
    if fmt == "yaml":
        try:
            return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f":{mark.line + 1}" if mark else ""
            raise TopologyError(f"{path}{where}: {exc.problem or exc.context}") from None
        except yaml.YAMLError as exc:
            raise TopologyError(f"{path}: {exc}") from None
    if fmt == "toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise TopologyError(f"{path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TopologyError(f"{path}:{exc.lineno}: {exc.msg}") from None


def _document(source: Source | None) -> Any:
    """The node tree of a YAML or JSON source, for finding lines (None when there is none)."""
    if source is None or source.fmt not in ("yaml", "json"):
        return None
    try:
        return yaml.compose(source.text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def _line_of(document: Any, loc: tuple[Any, ...]) -> int | None:
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


def _issues_error(issues: list[Issue], source: Source | None) -> TopologyError:
    lines = []
    where = source.path if source else "topology"
    note = " (rendered)" if source and source.templated else ""
    document = _document(source)  # composed once for all issues
    for issue in issues:
        line = _line_of(document, issue.loc)
        at = f"{where}{note}:{line}: " if line else ""
        lines.append(f"{at}{format_path(issue.loc)}: {issue.message}")
    error = TopologyError("\n".join(lines))
    error.issues = issues  # type: ignore[attr-defined]
    return error


def _pydantic_issues(exc: ValidationError) -> list[Issue]:
    issues = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # drop pydantic's union/tag noise such as 'list[...]' or 'bool'
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("bool", "int", "str"))))
        kind = None
        if len(loc) >= 3 and loc[0] == "nodes" and loc[2] in KINDS:  # the discriminator's tag
            kind = str(loc[2])
            loc = loc[:2] + loc[3:]
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag")
            loc = (*loc, "kind")
            msg = f"Input should be {', '.join(repr(k) for k in KINDS[:-1])} or {KINDS[-1]!r}; got {tag!r}"
        elif err["type"] == "extra_forbidden":
            msg = _unknown_field(loc, kind)
        issues.append(Issue(loc, msg))
    return issues


def _unknown_field(loc: tuple[Any, ...], kind: str | None) -> str:
    """What to say about a key the schema does not know (a field of another kind, a typo)."""
    field = str(loc[-1]) if loc else ""
    if kind is not None and len(loc) == 3:
        others = kinds_with_field(field)
        if others:
            return f"'{field}' is for kind: {' or '.join(others)} nodes (this node is kind: {kind})"
    return "unknown field (check the spelling; `tunlab schema` lists every field)"


def model_from_data(data: Any, source: Source | None = None) -> Topology:
    """Validate parsed data: field types first, then the cross-reference rules."""
    if not isinstance(data, dict):
        where = source.path if source else "topology"
        raise TopologyError(f"{where}: the top level must be a mapping with name, nodes and links")
    try:
        topo = Topology.model_validate(data)
    except ValidationError as exc:
        raise _issues_error(_pydantic_issues(exc), source) from None
    issues = check_topology(topo)
    if issues:
        raise _issues_error(issues, source)
    return topo


def parse_var(assignment: str) -> tuple[str, Any]:
    """--var NAME=VALUE; VALUE is read as YAML (so 3 is a number and [a, b] a list)."""
    name, sep, raw = assignment.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise TopologyError(f"--var {assignment!r}: write it as NAME=VALUE (NAME like node_count)")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return name, value


def load_text(
    text: str, fmt: str, path: str = "<string>", variables: Mapping[str, Any] | None = None
) -> Topology:
    """Render, parse and validate topology text (fmt: yaml, toml or json)."""
    if fmt not in ("yaml", "toml", "json"):
        raise TopologyError(f"{path}: unknown format {fmt!r}: use yaml, toml or json")
    context = {**_file_vars(text, fmt), **(variables or {})}
    rendered = render(text, context, path)
    data = _parse(rendered, fmt, path)
    if isinstance(data, dict) and variables:
        data["vars"] = {**(data.get("vars") or {}), **variables}
    return model_from_data(data, Source(path, rendered, fmt, templated=rendered != text))


def load_file(path: str | os.PathLike[str], variables: Mapping[str, Any] | None = None) -> Topology:
    """A topology from a .yaml/.yml, .toml or .json file."""
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise TopologyError(f"{p}: unknown extension {p.suffix!r}: use .yaml, .yml, .toml or .json")
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise TopologyError(f"{p}: no such file") from None
    except OSError as exc:
        raise TopologyError(f"{p}: cannot read it: {exc.strerror}") from None
    return load_text(text, fmt, str(p), variables)
