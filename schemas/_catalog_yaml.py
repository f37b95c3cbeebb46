"""The catalog's YAML: a fast reader of the `accounts:` list, and the full loader's way in.

PyYAML's pure-Python loader costs ~100 us per account (minutes for a million), its libyaml
loader still ~70 us. The list is nearly always one layout repeated: a flow mapping per line
(`- {team: a, plan: b, ...}`) or a block mapping of one scalar per line, where a value may
also be a flow mapping of scalars (an address) or a flow sequence of flow mappings on the
same line (`alerts: [{mau: 100}, {estimate: {amount: "9.50", currency: EUR}}]`). This module reads
such an item with one regex per layout (a `Shape`, learned from the first item that has it)
and types plain scalars with the loader's own implicit resolvers and constructors, so what
it reads is what the loader would read. Whatever it does not recognise goes to the loader:
an item it cannot read is loaded alone (items cannot refer to each other once anchors are
ruled out), and a document it cannot cut cleanly is loaded whole (`split_accounts` or
`load_rest` return None, `AccountList.runs` raises `Unrecognised`).

The full loader (schemas/_catalog_loader.py) reads at most MAX_LOADER_CHARS of a catalog:
beyond that, a catalog is read by the fast reader or not at all (`TooLong`).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from schemas._catalog_loader import (
    MAP_TAG,
    MERGE_TAG,
    NULL_TAG,
    STR_TAG,
    CatalogLoader,
    DuplicateKey,
)

__all__ = [
    "MAX_LOADER_CHARS",
    "AccountList",
    "Loaded",
    "MappingEntry",
    "NullEntry",
    "ScalarEntry",
    "SequenceEntry",
    "Shape",
    "Split",
    "TooLong",
    "Unrecognised",
    "load_document",
    "load_rest",
    "plain_tag",
    "scalar",
    "scalar_groups",
    "split_accounts",
]


# Characters the full loader reads for one catalog, at 5-10 s and ~100 MiB of memory a MiB
# (a 50 MB catalog took 4-8 minutes and 4 GiB): all of a document the fast reader cannot
# vouch for, else the rest beside the accounts list and the items it loads alone. A larger
# catalog is read by the fast reader or not at all.
MAX_LOADER_CHARS: Final = 4 * 2**20


class Unrecognised(Exception):
    """The fast reader cannot vouch for this document; the full loader must read it."""


class TooLong(Exception):
    """A document longer than the full loader reads (`limit`, MAX_LOADER_CHARS)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def load_document(text: str) -> Any:
    """The whole document as the catalog loader reads it; raises TooLong beyond
    MAX_LOADER_CHARS, Refused or another YAMLError for what it refuses."""
    if len(text) > MAX_LOADER_CHARS:
        raise TooLong(MAX_LOADER_CHARS)
    return yaml.load(text, Loader=CatalogLoader)  # noqa: S506 - a SafeLoader subclass


# Resolver.resolve for a plain scalar, looked up once per first character instead of per call.
_WILDCARD = list(CatalogLoader.yaml_implicit_resolvers.get(None, []))
_RESOLVERS = {
    first: [*resolvers, *_WILDCARD]
    for first, resolvers in CatalogLoader.yaml_implicit_resolvers.items()
    if first is not None
}
# Only scalar constructors are reached (the reader refuses tags, anchors and collections
# other than mappings), and they keep no state, so one instance serves every load.
_CONSTRUCTOR = CatalogLoader("")

Kind = Literal["plain", "single", "double"]

# --- The recognised YAML, as regex sources. Only spaces separate tokens (no tabs), and the
# characters allowed are printable and never line breaks, so the reader's checks hold.
# Quantifiers are possessive (*+): the loader never backtracks into a token either, and
# a backtracking regex spends most of its time retrying the blank-line and comment checks.
_KEY = r"[A-Za-z_][A-Za-z0-9_]*"
# Never in a token: what is not printable (the reader rejects it), tabs (the loader folds
# them at the ends of quoted lines), line breaks and the byte order mark.
_UNPRINTABLE = r"\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\ufeff\ufffe\uffff"
# A plain scalar: none of YAML's indicators, `:`, `#` or flow punctuation anywhere in it, so
# it ends exactly where the loader ends it, in block and in flow context alike.
_NOT_PLAIN = rf"{_UNPRINTABLE} ,\[\]{{}}#:'\"?&*!|>%`\\"
_WORD = rf"[^{_NOT_PLAIN}]"
_FIRST = rf"[^{_NOT_PLAIN}@<=\-]"
_PLAIN = rf"(?:{_FIRST}|-(?={_WORD})){_WORD}*+(?: ++{_WORD}++)*+"
# Quoted scalars on one line, without escapes.
_SINGLE = rf"'((?:[^'{_UNPRINTABLE}]++|'')*+)'"  # '' stands for '
_DOUBLE = rf'"([^"\\{_UNPRINTABLE}]*+)"'
_COMMENT = rf"#[^{_UNPRINTABLE}]*+"
_TAIL = rf"(?: ++(?:{_COMMENT})?+)?+"
_GAP = rf"(?: *+(?:{_COMMENT})?+\n)*+"  # blank and comment-only lines
_LINE_END = rf"{_TAIL}\n{_GAP}"
_SCALARS: dict[Kind, str] = {"plain": f"({_PLAIN})", "single": _SINGLE, "double": _DOUBLE}
_QUOTES: dict[str, Kind] = {"'": "single", '"': "double"}

_SCALAR_RE = {kind: re.compile(source) for kind, source in _SCALARS.items()}
_GAP_RE = re.compile(_GAP)
_LINE_END_RE = re.compile(_LINE_END)
_ITEM_RE = re.compile(r"( *)-( +)")
_FLOW_OPEN_RE = re.compile(r"\{ *")
_FLOW_KEY_RE = re.compile(rf" *({_KEY}): +")
_FLOW_SEP_RE = re.compile(r" *([,}])")
_SEQ_OPEN_RE = re.compile(r"\[ *")
_SEQ_EMPTY_RE = re.compile(r"\]")
_SEQ_SEP_RE = re.compile(r" *([,\]])")
_SPACES_RE = re.compile(r" *")
_BLOCK_KEY_RE = re.compile(rf"({_KEY}):")
_VALUE_SPACE_RE = re.compile(r" +(?=[^ #\n])")
_INDENTED_KEY_RE = re.compile(rf"( *)(?={_KEY}:)")
_ACCOUNTS_KEY_RE = re.compile(rf"^accounts:{_TAIL}\n", re.MULTILINE)
_FIRST_ITEM_RE = re.compile(r"( *)-[ \n]")
# The list ends at the first line that starts in column 0 with something other than a
# comment (or, for a list written in column 0, other than an item).
_END_RE = re.compile(r"\n(?=[^ #\n])")
_END_INDENTLESS_RE = re.compile(r"\n(?=[^ #\n-]|-[^ \n])")

MAX_SHAPES = 256  # layouts learned per load; a file with more is read item by item
_RECENT = 4  # layouts tried before learning: files mostly alternate between a few
_RUN = 1024  # matches handed on at a time: few enough to be in the CPU's caches still


def plain_tag(value: str) -> str:
    """The tag the catalog loader resolves plain scalar `value` to (Resolver.resolve)."""
    for tag, regexp in _RESOLVERS.get(value[:1], _WILDCARD):
        if regexp.match(value):
            return str(tag)
    return STR_TAG


def scalar(kind: Kind, text: str) -> Any:
    """The value the loader constructs for a scalar token read by this module's regexes."""
    if kind == "single":
        return text.replace("''", "'")
    if kind == "double":
        return text
    tag = plain_tag(text)
    if tag == STR_TAG:
        return text
    try:
        return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, ScalarNode(tag, text))
    except Exception as exc:  # e.g. int("0b_"): the full loader raises it, and must
        raise Unrecognised(text) from exc


@dataclass(frozen=True, kw_only=True)
class Split:
    """A document cut around its `accounts:` list: `rest` has the key with an empty value
    and everything else; the list is `text[start:end]`, items indented by `indent`."""

    rest: str
    text: str
    start: int
    end: int
    indent: int
    key_line: int


def split_accounts(text: str) -> Split | None:
    """Cut out the list under a column-0 `accounts:` line; None when there is none or the
    text has what this reader leaves to the loader (other line breaks, %TAG directives)."""
    if any(brk in text for brk in ("\r", "\x85", "\u2028", "\u2029")):
        return None
    key = _ACCOUNTS_KEY_RE.search(text)
    if key is None or re.search(r"^%TAG", text[: key.start()], re.MULTILINE):
        return None
    start = key.end()
    first = _GAP_RE.match(text, start)
    item = _FIRST_ITEM_RE.match(text, first.end()) if first else None
    if item is None:
        return None
    indent = len(item.group(1))
    end_match = (_END_RE if indent else _END_INDENTLESS_RE).search(text, item.start())
    end = end_match.end() if end_match else len(text)
    rest = text[:start] + text[end:]
    if end_match is None and not text.endswith("\n"):
        text += "\n"  # the list runs to the end: a final line break changes none of it
        end += 1
    return Split(rest=rest, text=text, start=item.start(), end=end, indent=indent,
                 key_line=text.count("\n", 0, key.start()))


def load_rest(split: Split) -> dict[Any, Any] | None:
    """The document without its accounts, as the loader reads it; None unless the cut key is
    provably the top-level `accounts` key (then the list is read in the same context), or
    when it is longer than the full loader reads."""
    if len(split.rest) > MAX_LOADER_CHARS:
        return None
    loader = CatalogLoader(split.rest)
    try:
        node = loader.get_single_node()
        if not _cut_cleanly(node, split.key_line):
            return None
        data = loader.construct_document(node)
    except Exception:  # the full loader reports it, with the whole document
        return None
    finally:
        loader.dispose()
    return data if isinstance(data, dict) else None


def _cut_cleanly(node: Node | None, key_line: int) -> bool:
    if not isinstance(node, MappingNode) or node.tag != MAP_TAG:
        return False
    if any(key.tag == MERGE_TAG for key, _ in node.value):
        return False
    named = [(key, value) for key, value in node.value
             if isinstance(key, ScalarNode) and key.tag == STR_TAG and key.value == "accounts"]
    if len(named) != 1:
        return False
    key, value = named[0]
    return (key.start_mark.line == key_line and key.start_mark.column == 0 and key.style is None
            and isinstance(value, ScalarNode) and value.tag == NULL_TAG and value.value == "")


# --- Shapes: one compiled regex per item layout, one capture group per scalar value.


@dataclass(frozen=True, kw_only=True)
class ScalarEntry:
    key: Hashable
    kind: Kind
    group: int


@dataclass(frozen=True)
class NullEntry:
    key: Hashable


@dataclass(frozen=True)
class MappingEntry:
    key: Hashable
    entries: tuple[Entry, ...]

    def value(self, match: re.Match[str]) -> dict[Any, Any]:
        """The mapping the loader would build for this entry of the matched item."""
        return _mapping(self.entries, match.groups())


@dataclass(frozen=True)
class SequenceEntry:
    """A flow sequence of flow mappings (`[{mau: 100}, {mau: 200}]`), each item's entries."""

    key: Hashable
    items: tuple[tuple[Entry, ...], ...]

    def value(self, match: re.Match[str]) -> list[dict[Any, Any]]:
        """The list the loader would build for this entry of the matched item."""
        groups = match.groups()
        return [_mapping(item, groups) for item in self.items]


Entry = ScalarEntry | NullEntry | MappingEntry | SequenceEntry


def scalar_groups(entry: Entry) -> list[int]:
    """The regex groups of the scalars inside `entry`, in document order."""
    if isinstance(entry, ScalarEntry):
        return [entry.group]
    if isinstance(entry, MappingEntry):
        return [group for sub in entry.entries for group in scalar_groups(sub)]
    if isinstance(entry, SequenceEntry):
        return [group for item in entry.items for sub in item for group in scalar_groups(sub)]
    return []


@dataclass(frozen=True, eq=False)
class Shape:
    """A layout of account item: `pattern` matches one item and the blank or comment lines
    after it; `entries` say what its groups are, in document order."""

    pattern: re.Pattern[str]
    entries: tuple[Entry, ...]

    def value(self, match: re.Match[str]) -> dict[Any, Any]:
        """The mapping the loader would build for the matched item."""
        return _mapping(self.entries, match.groups())


def _mapping(entries: tuple[Entry, ...], groups: tuple[Any, ...]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for entry in entries:  # in order: a repeated key keeps its last value, as in the loader
        if isinstance(entry, ScalarEntry):
            out[entry.key] = scalar(entry.kind, groups[entry.group - 1])
        elif isinstance(entry, NullEntry):
            out[entry.key] = None
        elif isinstance(entry, SequenceEntry):
            out[entry.key] = [_mapping(item, groups) for item in entry.items]
        else:
            out[entry.key] = _mapping(entry.entries, groups)
    return out


class _Learner:
    """Reads one item the slow way and writes down its layout as a regex."""

    def __init__(self, split: Split, pos: int) -> None:
        self.text, self.pos, self.end, self.indent = split.text, pos, split.end, split.indent
        self.pieces: list[str] = []
        self.groups = 0

    def take(self, pattern: re.Pattern[str], *, literal: bool = True) -> re.Match[str]:
        match = pattern.match(self.text, self.pos, self.end)
        if match is None:
            raise Unrecognised(self.pos)
        self.pos = match.end()
        self.pieces.append(re.escape(match.group()) if literal else pattern.pattern)
        return match

    def peek(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        return pattern.match(self.text, self.pos, self.end)

    def key(self, pattern: re.Pattern[str]) -> Hashable:
        key: Hashable = scalar("plain", self.take(pattern).group(1))
        return key

    def scalar(self, key: Hashable) -> ScalarEntry:
        kind = _QUOTES.get(self.text[self.pos : self.pos + 1], "plain")
        self.take(_SCALAR_RE[kind], literal=False)
        self.groups += 1
        return ScalarEntry(key=key, kind=kind, group=self.groups)

    def item(self) -> tuple[Entry, ...]:
        """`- ` and a flow mapping, or a block mapping whose first key follows the dash."""
        lead = self.take(_ITEM_RE)
        if len(lead.group(1)) != self.indent:
            raise Unrecognised(self.pos)
        if self.peek(_FLOW_OPEN_RE):
            entries = self.flow(nested=True, lists=True)
            self.take(_LINE_END_RE, literal=False)
        else:
            entries = self.block(self.indent + 1 + len(lead.group(2)))
        # The item ends where the next begins (or the list does): nothing deeper is left.
        self.pieces.append(rf"(?= {{{self.indent}}}-[ \n]|\Z)")
        if self.pos < self.end and not re.compile(self.pieces[-1]).match(
                self.text, self.pos, self.end):
            raise Unrecognised(self.pos)
        return entries

    def flow(self, *, nested: bool, lists: bool = False) -> tuple[Entry, ...]:
        """`{key: value, ...}` on one line; with `nested`, values may be such mappings, with
        `lists` also flow sequences of mappings (`sequence`)."""
        self.take(_FLOW_OPEN_RE)
        entries: list[Entry] = []
        while True:
            key = self.key(_FLOW_KEY_RE)
            if nested and self.peek(_FLOW_OPEN_RE):
                entries.append(MappingEntry(key, self.flow(nested=False)))
            elif lists and self.peek(_SEQ_OPEN_RE):
                entries.append(self.sequence(key))
            else:
                entries.append(self.scalar(key))
            if self.take(_FLOW_SEP_RE).group(1) == "}":
                return tuple(entries)

    def sequence(self, key: Hashable) -> SequenceEntry:
        """`[{...}, {...}]` on one line, or `[]`: flow mappings whose values may be flow
        mappings of scalars."""
        self.take(_SEQ_OPEN_RE)
        items: list[tuple[Entry, ...]] = []
        if self.peek(_SEQ_EMPTY_RE):
            self.take(_SEQ_EMPTY_RE)
            return SequenceEntry(key, ())
        while True:
            items.append(self.flow(nested=True))
            if self.take(_SEQ_SEP_RE).group(1) == "]":
                return SequenceEntry(key, tuple(items))
            self.take(_SPACES_RE)

    def block(self, column: int) -> tuple[Entry, ...]:
        entries = [self.block_entry(column)]
        while self.at_key(column):
            entries.append(self.block_entry(column))
        return tuple(entries)

    def at_key(self, column: int) -> bool:
        """Whether the next line holds a key at `column` (then past its indentation)."""
        match = self.peek(_INDENTED_KEY_RE)
        if match is None or len(match.group(1)) != column:
            return False
        self.take(_INDENTED_KEY_RE)
        return True

    def block_entry(self, column: int) -> Entry:
        """`key: value` on one line, `key:` alone (null), or `key:` over a deeper mapping
        of one scalar per line."""
        key = self.key(_BLOCK_KEY_RE)
        if self.peek(_VALUE_SPACE_RE):
            self.take(_VALUE_SPACE_RE)
            entry: Entry
            if self.peek(_FLOW_OPEN_RE):
                entry = MappingEntry(key, self.flow(nested=False))
            elif self.peek(_SEQ_OPEN_RE):
                entry = self.sequence(key)
            else:
                entry = self.scalar(key)
            self.take(_LINE_END_RE, literal=False)
            return entry
        self.take(_LINE_END_RE, literal=False)
        deeper = self.peek(_INDENTED_KEY_RE)
        if deeper is None or len(deeper.group(1)) <= column:
            return NullEntry(key)
        inner = len(deeper.group(1))
        values: list[Entry] = []
        while self.at_key(inner):
            values.append(self.block_scalar())
        return MappingEntry(key, tuple(values))

    def block_scalar(self) -> Entry:
        key = self.key(_BLOCK_KEY_RE)
        self.take(_VALUE_SPACE_RE)
        entry = self.scalar(key)
        self.take(_LINE_END_RE, literal=False)
        return entry


def learn(split: Split, pos: int) -> Shape | None:
    """The layout of the item at `pos`, or None when this reader does not recognise it."""
    learner = _Learner(split, pos)
    try:
        entries = learner.item()
    except Unrecognised:
        return None
    if _repeats_a_key(entries):
        return None  # the loader names the key and its lines
    return Shape(re.compile("".join(learner.pieces)), entries)


def _repeats_a_key(entries: tuple[Entry, ...]) -> bool:
    if len({entry.key for entry in entries}) != len(entries):
        return True
    return any(_repeats_a_key(entry.entries) if isinstance(entry, MappingEntry)
               else any(_repeats_a_key(item) for item in entry.items)
               for entry in entries if isinstance(entry, MappingEntry | SequenceEntry))


def _item_end(split: Split, pos: int) -> int:
    """Where the item after the one at `pos` begins (or the list ends)."""
    following = re.compile(rf"\n {{{split.indent}}}-[ \n]").search(split.text, pos, split.end)
    return following.start() + 1 if following else split.end


def _load_alone(split: Split, pos: int, end: int, line: int) -> Any:
    """The item at `pos` (on line `line`, from 0), ending where the next begins at `end`,
    loaded by itself with the full loader. Raises DuplicateKey as the whole document's
    loader would.

    In the whole document it reads the same: it starts at the list's indentation in block
    context with nothing open, and it ends where the next item begins (a construct left
    open there fails here too). Anchors are refused: one here could shadow an anchor that
    the rest of the document refers to.
    """
    piece = split.text[pos:end]
    if "&" in piece:
        raise Unrecognised(pos)
    try:
        # The piece is a list, as the accounts list is, one level inside the document.
        loader = CatalogLoader(piece, first_line=line, depth=1)  # it reads it all at once
        try:
            loaded = loader.get_single_data()
        finally:
            loader.dispose()
    except DuplicateKey:
        raise
    except Exception as exc:
        raise Unrecognised(pos) from exc
    if not isinstance(loaded, list) or len(loaded) != 1:
        raise Unrecognised(pos)
    return loaded[0]


@dataclass(frozen=True)
class Loaded:
    """An item the loader read alone, and its value."""

    value: Any


class AccountList:
    """The items of a cut-out accounts list, in document order and in runs: a list of
    matches for items this reader recognises (`shape(match)` says which layout), a Loaded
    for an item the loader read alone. Raises Unrecognised when the list must be loaded
    whole. An item that repeats a key is left out and the first such is kept in
    `duplicate`: the whole document's loader would refuse it, unless the document is
    refused for something else first (then the list is Unrecognised)."""

    def __init__(self, split: Split) -> None:
        self.split = split
        self.duplicate: DuplicateKey | None = None
        self._budget = MAX_LOADER_CHARS - len(split.rest)  # left for items loaded alone
        self._shapes: dict[int, Shape] = {}  # by id of the pattern: hashing one is slow
        self._known: dict[str, Shape] = {}
        self._recent: list[re.Pattern[str]] = []  # the most recently matched first
        self._counted = (0, 0)  # a position in the text, and its line (from 0)

    def _line(self, pos: int) -> int:
        """The line of `pos`, counting on from the last position asked about."""
        last, line = self._counted
        line += self.split.text.count("\n", last, pos)
        self._counted = (pos, line)
        return line

    def _load_alone(self, pos: int) -> tuple[Loaded | None, int]:
        end = _item_end(self.split, pos)
        self._budget -= end - pos
        if self._budget < 0:
            raise Unrecognised(pos)  # then the whole document is too long for the loader
        try:
            value = _load_alone(self.split, pos, end, self._line(pos))
        except DuplicateKey as exc:
            self.duplicate = self.duplicate or exc
            return None, end
        return Loaded(value), end

    def shape(self, match: re.Match[str]) -> Shape:
        return self._shapes[id(match.re)]

    def runs(self) -> Iterator[list[re.Match[str]] | Loaded]:
        text, pos, end = self.split.text, self.split.start, self.split.end
        run: list[re.Match[str]] = []
        match_at = None  # the most recent shape's, tried first: items mostly repeat it
        while pos < end:
            match = match_at(text, pos, end) if match_at is not None else None
            if match is None:
                match = self._switch(pos, tried=match_at is not None)
                if match is None:
                    if run:
                        yield run
                        run = []
                    loaded, pos = self._load_alone(pos)
                    if loaded is not None:
                        yield loaded
                    match_at = None
                    continue
                match_at = match.re.match
            run.append(match)
            pos = match.end()
            if len(run) == _RUN:
                yield run
                run = []
        if run:
            yield run

    def _switch(self, pos: int, *, tried: bool) -> re.Match[str] | None:
        """The item at `pos` matched by another recent shape (then the most recent), or by
        its own learnt shape; None when it has none."""
        text, end, recent = self.split.text, self.split.end, self._recent
        for index in range(1 if tried else 0, len(recent)):
            match = recent[index].match(text, pos, end)
            if match is not None:
                recent.insert(0, recent.pop(index))
                return match
        learnt = learn(self.split, pos)
        if learnt is None:
            return None
        source = learnt.pattern.pattern
        if source not in self._known:
            if len(self._known) >= MAX_SHAPES:
                return None
            self._known[source] = self._shapes[id(learnt.pattern)] = learnt
        pattern = self._known[source].pattern
        if pattern in recent:
            recent.remove(pattern)
        recent.insert(0, pattern)
        del recent[_RECENT:]
        return pattern.match(text, pos, end)
