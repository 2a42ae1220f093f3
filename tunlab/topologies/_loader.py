"""Read a topology file: render it with jinja2 (sandboxed), parse YAML/TOML/JSON, validate.

Every error becomes a TopologyError whose lines read `file:line: field.path: message` and echo
the offending value, so a person can act on it. Reading is bounded (limits.py): hostile input
costs seconds and little memory, and the error names the limit that stopped it.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tunlab.errors import TopologyError
from tunlab.topologies import _parsing as parsing
from tunlab.topologies._fieldpath import format_path
from tunlab.topologies._gcpause import gc_paused
from tunlab.topologies._limits import DEFAULT_LIMITS, Limits, check_shape, describe
from tunlab.topologies._models import (
    IMPAIR_FORMS,
    KINDS,
    LINK_CLASSES,
    LINK_TYPES,
    NODE_CLASSES,
    Topology,
    kinds_with_field,
    types_with_field,
)
from tunlab.topologies._templating import render, render_stream
from tunlab.topologies._validate import Issue, check_topology

FORMATS = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}


@dataclass
class Source:
    """Where a topology came from, to point errors at lines (text is the rendered text)."""

    path: str
    text: str
    fmt: str
    templated: bool = False
    original_lines: int = 0


def _file_vars(text: str, fmt: str, limits: Limits) -> dict[str, Any]:
    """The file's own `vars:` (which is not itself templated), read before rendering."""
    try:
        doc = parsing.parse(text, fmt, "<vars>", limits)
    except TopologyError:
        doc = None
    if isinstance(doc, dict):
        found = doc.get("vars")
        return found if isinstance(found, dict) else {}
    if fmt == "yaml":  # the document only parses once rendered: cut the vars block out
        match = re.search(r"^vars:([^\n]*)\n((?:[ \t]+.*\n|[ \t]*\n)*)", text, re.MULTILINE)
        if match:
            try:
                block = parsing.parse_yaml(f"vars:{match.group(1)}\n{match.group(2)}", "<vars>", limits)
            except TopologyError:
                return {}
            found = block.get("vars") if isinstance(block, dict) else None
            if isinstance(found, dict):
                return found
    return {}


def _issues_error(issues: list[Issue], source: Source | None) -> TopologyError:
    """One line per issue: the file (and line), the field path, the message.

    Lines point into the user's file; when a template changed the line count the line is the
    rendered one, tagged (rendered), and the rendered text is shown.
    """
    lines = []
    where = source.path if source else "topology"
    document = parsing.compose(source.text, source.fmt) if source else None  # once for all issues
    shifted = source is not None and source.templated and source.original_lines != source.text.count("\n")
    rendered = source.text.splitlines() if source else []
    for issue in issues:
        line = None
        if source is not None:
            if source.fmt == "toml":
                line = parsing.toml_line(source.text, issue.loc)
            else:
                line = parsing.yaml_line(document, issue.loc)
        if line is None:
            at = f"{where}: "
        elif shifted:
            shown = rendered[line - 1].strip()[:80] if 0 < line <= len(rendered) else ""
            at = f"{where}:{line} (rendered: {shown!r}): "
        else:
            at = f"{where}:{line}: "
        lines.append(f"{at}{format_path(issue.loc)}: {issue.message}")
    error = TopologyError("\n".join(lines))
    error.issues = issues  # type: ignore[attr-defined]
    return error


def _either(names: tuple[str, ...]) -> str:
    return f"{', '.join(repr(k) for k in names[:-1])} or {names[-1]!r}" if len(names) > 1 else repr(names[0])


def _pydantic_issues(exc: ValidationError) -> list[Issue]:
    issues = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # drop pydantic's union/tag noise such as 'list[...]' or 'bool'
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("bool", "int", "str"))))
        kind = link = None
        if len(loc) >= 3 and loc[0] == "nodes" and loc[2] in KINDS:  # the discriminator's tag
            kind = str(loc[2])
            loc = loc[:2] + loc[3:]
        if len(loc) >= 3 and loc[0] == "links" and loc[2] in LINK_TYPES:
            link = str(loc[2])
            loc = loc[:2] + loc[3:]
        if len(loc) >= 4 and loc[0] == "links" and loc[2] == "impair" and loc[3] in IMPAIR_FORMS:
            loc = loc[:3] + loc[4:]  # the impairment's form (both / per-direction) is not a key
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag")
            if loc and loc[0] == "links":
                loc, msg = (*loc, "type"), f"Input should be {_either(LINK_TYPES)}; got {tag!r}"
            else:
                loc, msg = (*loc, "kind"), f"Input should be {_either(KINDS)}; got {tag!r}"
        elif err["type"] == "extra_forbidden":
            msg = _unknown_field(loc, kind, link)
        else:
            msg = _with_value(msg, err.get("input"))
        issues.append(Issue(loc, msg))
    return issues


def _with_value(msg: str, value: Any) -> str:
    """The message, echoing the offending value when it is a plain one not already quoted."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        if shown not in msg:
            return f"{msg}; got {shown}"
    return msg


def _descend(cls: Any, rest: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model reached from cls along a field path (dict keys and list indexes stepped over)."""
    current: Any = cls
    skip = False
    for part in rest:
        if skip:  # a key of a dict or an index of a list: the element type stays
            skip = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        origin = typing.get_origin(_unannotated(field.annotation))
        skip = origin in (dict, list, tuple, set)
        current = _element(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unannotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unannotated(args[0])
    return annotation


def _element(annotation: Any) -> Any:
    """The model inside list[...], dict[..., X], X | None, Annotated[X, ...], or None."""
    seen = 0
    while annotation is not None and seen < 8:
        seen += 1
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin is typing.Annotated:
            annotation = args[0]
        elif origin in (list, tuple, set):
            annotation = args[0] if args else None
        elif origin is dict:
            annotation = args[1] if len(args) > 1 else None
        elif origin in (typing.Union, types.UnionType):
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            annotation = models[0] if models else None
        else:
            return None
    return None


def _unknown_field(loc: tuple[Any, ...], kind: str | None, link: str | None = None) -> str:
    """What to say about a key the schema does not know (a field of another kind, a typo)."""
    field = str(loc[-1]) if loc else ""
    if kind is not None and len(loc) == 3:
        others = kinds_with_field(field)
        if others:
            return f"'{field}' is for kind: {' or '.join(others)} nodes (this node is kind: {kind})"
    if link is not None and len(loc) == 3:
        others = types_with_field(field)
        if others:
            return f"'{field}' is for type: {' or '.join(others)} links (this link is type: {link})"
    if kind is not None:
        model = _descend(NODE_CLASSES[kind], loc[2:-1])
    elif link is not None:
        model = _descend(LINK_CLASSES[link], loc[2:-1])
    else:
        model = _descend(Topology, loc[:-1])
    if model is not None:
        names = [f.alias or n for n, f in model.model_fields.items()]
        close = difflib.get_close_matches(field, names, n=1, cutoff=0.6)
        if close:
            return f"unknown field {field!r}: did you mean {close[0]!r}?"
    return f"unknown field {field!r} (check the spelling; `tunlab schema` lists every field)"


def model_from_data(data: Any, source: Source | None = None) -> Topology:
    """Validate parsed data: field types first, then the cross-reference rules."""
    if not isinstance(data, dict):
        where = source.path if source else "topology"
        raise TopologyError(f"{where}: the top level must be a mapping with name, nodes and links")
    nul = _nul_issues(data, source.text if source else None)
    if nul:
        raise _issues_error(nul, source)
    try:
        topo = Topology.model_validate(data)
    except ValidationError as exc:
        raise _issues_error(_pydantic_issues(exc), source) from None
    issues = check_topology(topo)
    if issues:
        raise _issues_error(issues, source)
    return topo


def _nul_issues(data: Any, text: str | None = None) -> list[Issue]:
    """Strings with a NUL byte, anywhere: the kernel and docker would cut them short.

    Parsed from text, a NUL comes from the text itself or from an escape (YAML's \\0, JSON's and
    TOML's \\u0000): text with neither leaves only the variables given with it to look at."""
    if text is not None and "\x00" not in text and "\\" not in text and isinstance(data, dict):
        return _nul_issues({"vars": data["vars"]}) if "vars" in data else []
    try:
        if "\\u0000" not in json.dumps(data, default=str):  # the C encoder: one fast look first
            return []
    except (TypeError, ValueError):
        pass  # not plain JSON data: walk it
    issues = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, str) and "\x00" in value:
            issues.append(Issue(loc, f"{value!r} contains a NUL byte (\\x00): remove it"))
        elif isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and "\x00" in k:
                    issues.append(Issue((*loc, k), "this key contains a NUL byte (\\x00): remove it"))
                stack.append((v, (*loc, k)))
        elif isinstance(value, list):
            stack.extend((v, (*loc, i)) for i, v in enumerate(value))
    return sorted(issues, key=lambda i: str(i.loc))


def parse_var(assignment: str, limits: Limits = DEFAULT_LIMITS) -> tuple[str, Any]:
    """--var NAME=VALUE; VALUE is read as YAML (so 3 is a number and [a, b] a list).

    A value that is not valid YAML is an error about this --var (not about the file).
    """
    name, sep, raw = assignment.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise TopologyError(f"--var {assignment!r}: write it as NAME=VALUE (NAME like node_count)")
    if not raw:
        return name, ""
    try:
        value = parsing.parse_yaml(raw, f"--var {name}", limits)
    except TopologyError as exc:
        detail = str(exc).split(": ", 1)[-1]
        raise TopologyError(
            f"--var {assignment!r}: the value is not valid YAML ({detail}); quote it, like {name}='\"...\"'"
        ) from None
    return name, value


def load_text(
    text: str,
    fmt: str,
    path: str = "<string>",
    variables: Mapping[str, Any] | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Topology:
    """Render, parse and validate topology text (fmt: yaml, toml or json)."""
    with gc_paused():
        return _load_text(text, fmt, path, variables, limits)


def _load_text(
    text: str, fmt: str, path: str, variables: Mapping[str, Any] | None, limits: Limits
) -> Topology:
    if fmt not in ("yaml", "toml", "json"):
        raise TopologyError(f"{path}: unknown format {fmt!r}: use yaml, toml or json")
    text = text.removeprefix("\ufeff")  # a UTF-8 byte order mark, in any format
    if len(text) > limits.file_size:
        raise TopologyError(
            f"{path}: the text is {len(text)} characters, over {describe('file-size', limits.file_size)}"
        )
    if "{{" in text or "{%" in text or "{#" in text:
        context = {**_file_vars(text, fmt, limits), **(variables or {})}
        if fmt == "yaml":
            rendered, data = _render_and_parse_yaml(text, context, path, limits)
        else:
            rendered = render(text, context, path, limits)
            data = parsing.parse(rendered, fmt, path, limits)
    else:  # nothing to render
        rendered = text
        data = parsing.parse(rendered, fmt, path, limits)
    check_shape(data, limits, path)
    if isinstance(data, dict) and variables:
        data["vars"] = {**(data.get("vars") or {}), **variables}
    source = Source(path, rendered, fmt, templated=rendered != text, original_lines=text.count("\n"))
    try:
        return model_from_data(data, source)
    except RecursionError:
        raise TopologyError(
            f"{path}: nested too deeply to validate, {describe('depth', limits.depth)}"
        ) from None


def _render_and_parse_yaml(
    text: str, context: Mapping[str, Any], path: str, limits: Limits
) -> tuple[str, Any]:
    """The rendered text and its data, parsed as the render streams in (render and parse run
    on two cores at once). Whatever the parser makes of a render that failed half-way, the
    template's own error is the one reported, as if the render had finished first."""
    with render_stream(text, context, path, limits) as stream:
        try:
            data = parsing.parse_yaml_stream(stream, path, limits)
        except TopologyError:
            stream.finish()  # raises the template's error, if it had one
            raise
        return stream.finish(), data


def load_file(
    path: str | os.PathLike[str],
    variables: Mapping[str, Any] | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Topology:
    """A topology from a .yaml/.yml, .toml or .json file (UTF-8, a byte order mark allowed)."""
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise TopologyError(f"{p}: unknown extension {p.suffix!r}: use .yaml, .yml, .toml or .json")
    try:
        with open(p, "rb") as f:
            raw = f.read(limits.file_size + 1)
    except FileNotFoundError:
        raise TopologyError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise TopologyError(f"{p}: is a directory, not a topology file") from None
    except OSError as exc:
        raise TopologyError(f"{p}: cannot read it: {exc.strerror}") from None
    if len(raw) > limits.file_size:
        raise TopologyError(f"{p}: the file is larger than {describe('file-size', limits.file_size)}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise TopologyError(
            f"{p}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): "
            "save the file as UTF-8"
        ) from None
    return load_text(text, fmt, str(p), variables, limits=limits)
