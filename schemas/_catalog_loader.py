"""The catalog's YAML loader: PyYAML's safe loader, refusing what YAML allows but a
catalog must not hold (`Refused`, naming the line).

- A key given twice in one mapping (`DuplicateKey`): YAML says keys are unique, and PyYAML
  would keep the last silently (a second `power:` plan replacing the first).
- Nesting deeper than MAX_NESTING: PyYAML composes recursively, and 100,000 `[` would end
  in a RecursionError.
- Aliases that repeat more than MAX_ALIASED_NODES nodes in all, or that sit inside the node
  they name: a "billion laughs" is a few lines that pydantic would walk for hours.
- Scalars its constructors cannot read (`0b_`, `!!int x`, `!!timestamp 2026-13-45`), which
  PyYAML raises as bare Python errors.

Implicit timestamps are off: dates reach pydantic as text, so a bad date is reported with
its field name rather than as a bare YAML error.
"""

from __future__ import annotations

from typing import Any, Final

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "MAP_TAG",
    "MAX_ALIASED_NODES",
    "MAX_NESTING",
    "MERGE_TAG",
    "NULL_TAG",
    "STR_TAG",
    "CatalogLoader",
    "DuplicateKey",
    "Refused",
]


STR_TAG = "tag:yaml.org,2002:str"
NULL_TAG = "tag:yaml.org,2002:null"
MAP_TAG = "tag:yaml.org,2002:map"
MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"

# The deepest catalog is 7 levels (document, plans, a plan, addons, an add-on, capacity, a
# count); PyYAML composes a level with two nested calls, well inside Python's recursion limit.
MAX_NESTING: Final = 16
# Nodes that aliases may repeat in all: plenty to share plan fields or add-ons.
MAX_ALIASED_NODES: Final = 100_000
_QUOTED_CHARS: Final = 40


class Refused(yaml.MarkedYAMLError):
    """YAML that a catalog may not hold; `problem` is one line, `problem_mark` where."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)

    @property
    def line(self) -> int:
        """The line of the problem, counted from 1."""
        return _line(self.problem_mark)


class DuplicateKey(Refused):
    """A key given twice in one mapping."""


def _line(mark: Any) -> int:
    """The line of a mark, counted from 1."""
    return int(mark.line) + 1


def _quoted(text: str) -> str:
    return repr(text if len(text) <= _QUOTED_CHARS else text[:_QUOTED_CHARS] + "…")


class CatalogLoader(yaml.SafeLoader):
    """Safe YAML without implicit timestamps, refusing (`Refused`) duplicate keys, deep
    nesting, aliases that repeat too much and unreadable scalars. A piece cut from a larger
    document reads as it does there: `first_line` is the line it starts on, `depth` the
    levels around it."""

    def __init__(self, stream: str, *, first_line: int = 0, depth: int = 0) -> None:
        super().__init__(stream)
        self.line = first_line  # the reader's line count: every mark follows it
        self._depth = depth
        self._open_anchors: set[str] = set()
        self._aliased = 0  # nodes repeated by the aliases so far
        self._sizes: dict[int, int] = {}  # id of a node -> its nodes, aliases expanded

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self.check_event()  # the next event is now current_event
        event = self.current_event
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            if node is not None:
                self._count_alias(str(event.anchor), node, event.start_mark)
            return node
        if self._depth >= MAX_NESTING:
            raise Refused(f"nested deeper than {MAX_NESTING} levels", event.start_mark)
        anchor = event.anchor
        self._depth += 1
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open_anchors.discard(anchor)
        if isinstance(node, MappingNode):
            self._refuse_duplicate_keys(node)
        return node

    def _count_alias(self, anchor: str, node: Node, mark: Any) -> None:
        if anchor in self._open_anchors:
            raise Refused(f"alias *{anchor} is inside the node it names", mark)
        self._aliased += _expanded_size(node, self._sizes)
        if self._aliased > MAX_ALIASED_NODES:
            raise Refused(f"aliases repeat more than {MAX_ALIASED_NODES} nodes in all", mark)

    def _refuse_duplicate_keys(self, node: MappingNode) -> None:
        marks: dict[Any, Any] = {}  # key -> where it is first given
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == MERGE_TAG:
                continue  # merged keys may be overridden; a collection is no key
            key = (key_node.value if key_node.tag == _VALUE_TAG
                   else self.construct_object(key_node))
            try:
                first = marks.setdefault(key, key_node.start_mark)
            except TypeError:  # unhashable: the constructor says so
                continue
            if first is not key_node.start_mark:
                raise DuplicateKey(f"duplicate key {_quoted(str(key))}, first on line "
                                   f"{_line(first)}", key_node.start_mark)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:  # PyYAML's bare errors
            if not isinstance(node, ScalarNode):
                raise
            kind = str(node.tag).rpartition(":")[2]
            raise Refused(f"{_quoted(str(node.value))} is not a valid {kind}",
                          node.start_mark) from exc


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _expanded_size(node: Node, sizes: dict[int, int]) -> int:
    """Nodes in `node` with every alias in it expanded, remembering each node's count in
    `sizes` (a node's aliases name nodes composed before it: no cycle)."""
    stack = [node]
    while stack:
        top = stack[-1]
        if id(top) in sizes:
            stack.pop()
            continue
        children = _children(top)
        todo = [child for child in children if id(child) not in sizes]
        if todo:
            stack.extend(todo)
            continue
        sizes[id(top)] = 1 + sum(sizes[id(child)] for child in children)
        stack.pop()
    return sizes[id(node)]


CatalogLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
