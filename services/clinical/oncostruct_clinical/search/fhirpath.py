"""A compiler for the FHIRPath subset that search parameter definitions use, into plain dict walks.

Nearly every R4/mCODE SearchParameter expression is a path (``Observation.subject``), a
union of paths, a choice-type filter (``Observation.value.ofType(Quantity)``,
``(Condition.onset as dateTime)``), a ``where`` on one element
(``telecom.where(system='phone')``, ``subject.where(reference.startsWith('Patient/'))``)
or an index (``Bundle.entry[0].resource``). Walking FHIR JSON for those directly is
an order of magnitude faster than a general FHIRPath interpreter, and indexing runs
on every write. :func:`compile_path` returns ``None`` for anything outside the
subset, and an evaluator raises :class:`Unsupported` when the data leaves it (a
type filter on an element whose type it cannot tell); callers then use fhirpathpy,
which stays the reference (tests compare both on every shipped definition).

Semantics follow FHIRPath N1 as fhirpathpy implements it with the R4 model: a
leading type name selects the resource only if it is of that type (``Resource`` and
``DomainResource`` match any); choice elements (``value[x]``) are found under their
typed JSON names; ``|`` removes duplicates; ``as``/``ofType`` keep the items of one type.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Node", "Unsupported", "compile_nodes", "compile_path", "compile_relative"]


class Unsupported(Exception):
    """The data needs FHIRPath features this compiler does not have."""


@dataclass(frozen=True, slots=True)
class _Item:
    value: Any
    path: str | None  # model path of the value's element (for choice lookups), when known
    type: str | None  # the choice type it was found under (``Quantity``, ``DateTime``), when one


Step = Callable[[list[_Item]], list[_Item]]
Evaluator = Callable[[_Item], list[_Item]]
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+)|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>!=|[.()|\[\]=]))"
)
_SUPERTYPES = ("Resource", "DomainResource")


def _tokens(expression: str) -> list[tuple[str, str]] | None:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(expression):
        if expression[position:].strip() == "":
            break
        match = _TOKEN.match(expression, position)
        if match is None:
            return None
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], model: Mapping[str, Any]) -> None:
        self.tokens = tokens
        self.position = 0
        self.choices: Mapping[str, list[str]] = model["choiceTypePaths"]
        self.types: Mapping[str, str] = model["path2Type"]
        self.elsewhere: Mapping[str, str] = model["pathsDefinedElsewhere"]

    # --- token helpers ----------------------------------------------------------------
    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self, kind: str, text: str | None = None) -> str:
        token = self.peek()
        if token is None or token[0] != kind or (text is not None and token[1] != text):
            raise SyntaxError
        self.position += 1
        return token[1]

    def accept(self, kind: str, text: str) -> bool:
        if self.peek() == (kind, text):
            self.position += 1
            return True
        return False

    # --- grammar ----------------------------------------------------------------------
    def union(self) -> Evaluator:
        terms = [self.term()]
        while self.accept("op", "|"):
            terms.append(self.term())
        if len(terms) == 1:
            return terms[0]

        def evaluate(root: _Item) -> list[_Item]:
            result: list[_Item] = []
            seen: list[Any] = []
            for term in terms:
                for item in term(root):
                    if item.value not in seen:
                        seen.append(item.value)
                        result.append(item)
            return result

        return evaluate

    def term(self) -> Evaluator:
        if self.accept("op", "("):
            start = self.union()
            self.take("op", ")")
        else:
            start = self.leading(self.take("id"))
        steps: list[Step] = []
        while True:
            if self.accept("op", "."):
                steps.append(self.step())
            elif self.accept("op", "["):
                steps.append(_index(int(self.take("num"))))
                self.take("op", "]")
            elif self.peek() == ("id", "as"):
                self.position += 1
                steps.append(_of_type(self.take("id")))
            else:
                break

        def evaluate(root: _Item) -> list[_Item]:
            items = start(root)
            for step in steps:
                if not items:
                    break
                items = step(items)
            return items

        return evaluate

    def leading(self, name: str) -> Evaluator:
        if name[0].isupper():

            def select(root: _Item) -> list[_Item]:
                kind = root.value.get("resourceType") if isinstance(root.value, dict) else None
                if kind == name or (kind is not None and name in _SUPERTYPES):
                    return [root]
                return []

            return select
        member = self.member(name)
        return lambda root: member([root])

    def step(self) -> Step:
        name = self.take("id")
        if self.peek() != ("op", "("):
            return self.member(name)
        self.take("op", "(")
        if name == "ofType":
            step = _of_type(self.take("id"))
        elif name == "where":
            step = self.condition()
        else:
            raise SyntaxError
        self.take("op", ")")
        return step

    def condition(self) -> Step:
        field = self.take("id")
        if self.accept("op", "="):
            wanted = _string(self.take("str"))
            return lambda items: [i for i in items if isinstance(i.value, dict) and i.value.get(field) == wanted]
        self.take("op", ".")
        self.take("id", "startsWith")
        self.take("op", "(")
        prefix = _string(self.take("str"))
        self.take("op", ")")

        def starts(item: _Item) -> bool:
            value = item.value.get(field) if isinstance(item.value, dict) else None
            return isinstance(value, str) and value.startswith(prefix)

        return lambda items: [item for item in items if starts(item)]

    def member(self, name: str) -> Step:
        choices, types, elsewhere = self.choices, self.types, self.elsewhere

        paths: dict[str | None, str | None] = {None: None}

        def child_path(path: str | None) -> str | None:
            found = paths.get(path, "")
            if found != "":
                return found
            full = f"{path}.{name}"
            full = elsewhere.get(full, full)
            kind = types.get(full)
            # Continue from a data type's own paths (HumanName.family), not the element's.
            result = kind if kind and kind[0].isupper() and kind not in ("BackboneElement", "Element") else full
            paths[path] = result
            return result

        def navigate(items: list[_Item]) -> list[_Item]:
            result: list[_Item] = []
            for item in items:
                node = item.value
                if not isinstance(node, dict):
                    continue
                full = f"{item.path}.{name}" if item.path else None
                suffixes = choices.get(full) if full else None
                if suffixes:
                    for suffix in suffixes:
                        _extend(result, node.get(name + suffix), suffix, suffix)
                else:
                    if item.path is None and name not in node and any(key.startswith(name) for key in node):
                        raise Unsupported(name)  # maybe a choice element under an unknown path
                    _extend(result, node.get(name), child_path(item.path), None)
            return result

        return navigate


def _extend(result: list[_Item], value: Any, path: str | None, kind: str | None) -> None:
    if value is None:
        return
    values: Iterable[Any] = value if isinstance(value, list) else (value,)
    result.extend(_Item(v, path, kind) for v in values if v is not None)


def _index(index: int) -> Step:
    return lambda items: items[index : index + 1]


def _of_type(name: str) -> Step:
    wanted = name[0].upper() + name[1:]

    def keep(items: list[_Item]) -> list[_Item]:
        if any(item.type is None for item in items):
            raise Unsupported(f"type of a non-choice element ({name})")
        return [item for item in items if item.type == wanted]

    return keep


def _string(literal: str) -> str:
    body = literal[1:-1]
    if "\\" in body:
        raise SyntaxError
    return body


def _compile(expression: str, model: Mapping[str, Any]) -> Evaluator | None:
    tokens = _tokens(expression)
    if not tokens:
        return None
    parser = _Parser(tokens, model)
    try:
        evaluate = parser.union()
    except (SyntaxError, ValueError):
        return None
    if parser.position != len(tokens):
        return None
    return evaluate


def compile_path(expression: str, model: Mapping[str, Any]) -> Callable[[dict[str, Any]], list[Any]] | None:
    """Compile ``expression`` for the R4 ``model`` (fhirpathpy's), or ``None`` if outside the subset."""
    evaluate = _compile(expression, model)
    if evaluate is None:
        return None
    return lambda resource: [item.value for item in evaluate(_Item(resource, resource.get("resourceType"), None))]


#: An element found by :func:`compile_nodes`, and the model path that typed navigation from it needs.
Node = tuple[Any, str | None]


def compile_nodes(expression: str, model: Mapping[str, Any]) -> Callable[[dict[str, Any]], list[Node]] | None:
    """Like :func:`compile_path`, keeping each element's model path (for :func:`compile_relative`)."""
    evaluate = _compile(expression, model)
    if evaluate is None:
        return None

    def nodes(resource: dict[str, Any]) -> list[Node]:
        return [(item.value, item.path) for item in evaluate(_Item(resource, resource.get("resourceType"), None))]

    return nodes


def compile_relative(expression: str, model: Mapping[str, Any]) -> Callable[[Node], list[Any]] | None:
    """Compile ``expression`` to evaluate on a :data:`Node` (a composite parameter's component)."""
    evaluate = _compile(expression, model)
    if evaluate is None:
        return None
    return lambda node: [item.value for item in evaluate(_Item(node[0], node[1], None))]
