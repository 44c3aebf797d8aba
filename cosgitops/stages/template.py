"""The part of Go's text/template (with sprig functions) that yip's cloud-configs use.

yip expands ``{{ ... }}`` in commands, ``if`` conditions, file contents, environment
values and entities with the system's data under ``.Values`` (``.Values.os.name``,
``.Values.node.hostname``, ...), and in ``hostname`` with ``.MachineID``, ``.UUID``,
``.Random`` and ``.ProtectedID``: ``edge-{{ trunc 4 .MachineID }}``. Supported here:
fields, string and integer literals, pipelines (``{{ .MachineID | trunc 4 }}``), trim
markers (``{{-`` and ``-}}``) and the functions below. Anything else (``if``, ``range``,
variables) raises :class:`TemplateError`; the caller decides what that means (yip keeps
the text as written when it cannot render it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

NO_VALUE = "<no value>"  # what Go prints for a missing map key


class TemplateError(ValueError):
    pass


def _trunc(length: int, value: Any) -> str:
    text = str(value)
    return text[:length] if length >= 0 else text[length:]


def _default(fallback: Any, value: Any = None) -> Any:
    return value if value not in (None, "", 0, False, NO_VALUE) else fallback


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "trunc": _trunc,
    "upper": lambda text: str(text).upper(),
    "lower": lambda text: str(text).lower(),
    "title": lambda text: str(text).title(),
    "trim": lambda text: str(text).strip(),
    "trimPrefix": lambda prefix, text: str(text).removeprefix(str(prefix)),
    "trimSuffix": lambda suffix, text: str(text).removesuffix(str(suffix)),
    "replace": lambda old, new, text: str(text).replace(str(old), str(new)),
    "default": _default,
    "quote": lambda text: '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"',
    "squote": lambda text: "'" + str(text) + "'",
}

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r'\s*(?:"((?:[^"\\]|\\.)*)"|`([^`]*)`|(-?\d+)|(\.[A-Za-z0-9_.]*)|([A-Za-z_]\w*)|(\|))'
)
_CONTROL = frozenset(("if", "else", "end", "range", "with", "define", "template", "block"))


def has_template(text: str) -> bool:
    return "{{" in text


def render(text: str, data: Mapping[str, Any]) -> str:
    """Expand the actions in ``text``; :class:`TemplateError` for anything unsupported."""
    if "{{" not in text:
        return text
    out: list[str] = []
    position = 0
    for match in _ACTION.finditer(text):
        before = text[position : match.start()]
        if match.group(1):
            before = before.rstrip()
        out.append(before)
        out.append(_evaluate(match.group(2).strip(), data))
        position = match.end()
        if match.group(3):
            while position < len(text) and text[position].isspace():
                position += 1
    rest = text[position:]
    if "{{" in rest:
        raise TemplateError("unclosed action: '{{' without '}}'")
    out.append(rest)
    return "".join(out)


def _tokens(source: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    position = 0
    source = source.rstrip()
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None or match.end() == position:
            raise TemplateError(f"cannot read {source[position:].strip()!r} in {{{{ {source} }}}}")
        string, raw, number, field, name, pipe = match.groups()
        if string is not None:
            tokens.append(("value", bytes(string, "utf-8").decode("unicode_escape")))
        elif raw is not None:
            tokens.append(("value", raw))
        elif number is not None:
            tokens.append(("value", int(number)))
        elif field is not None:
            tokens.append(("field", field))
        elif name is not None:
            tokens.append(("name", name))
        elif pipe is not None:
            tokens.append(("pipe", "|"))
        position = match.end()
    return tokens


def _field(path: str, data: Mapping[str, Any]) -> Any:
    current: Any = data
    for part in path.split(".")[1:]:
        if not part:
            continue
        if isinstance(current, Mapping):
            if part not in current:
                return NO_VALUE
            current = current[part]
        else:
            raise TemplateError(f"can't evaluate field {part} in {path}")
    return current


def _evaluate(source: str, data: Mapping[str, Any]) -> str:
    if not source or source.startswith("/*"):
        return ""
    tokens = _tokens(source)
    commands: list[list[tuple[str, Any]]] = [[]]
    for token in tokens:
        if token[0] == "pipe":
            commands.append([])
        else:
            commands[-1].append(token)
    result: Any = None
    for index, command in enumerate(commands):
        if not command:
            raise TemplateError(f"missing command in {{{{ {source} }}}}")
        kind, head = command[0]
        args = [_field(v, data) if k == "field" else v for k, v in command[1:] if k != "name"]
        if any(k == "name" for k, _ in command[1:]):
            raise TemplateError(f"nested function calls are not supported: {{{{ {source} }}}}")
        if index:
            args.append(result)
        if kind == "name":
            if head in _CONTROL:
                raise TemplateError(f"{head!r} actions are not supported: {{{{ {source} }}}}")
            function = FUNCTIONS.get(head)
            if function is None:
                raise TemplateError(f"function {head!r} is not supported: {{{{ {source} }}}}")
            try:
                result = function(*args)
            except (TypeError, ValueError) as error:
                raise TemplateError(f"{head}: {error}") from error
        else:
            if args:
                raise TemplateError(f"{head} is not a function: {{{{ {source} }}}}")
            result = _field(head, data) if kind == "field" else head
    if isinstance(result, bool):
        return "true" if result else "false"
    return "" if result is None else str(result)
