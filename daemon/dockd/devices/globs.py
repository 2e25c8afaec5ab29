"""Clip globs: `/`-separated patterns relative to the camera root, matched one name at a time.

Each component is matched with `fnmatch.fnmatchcase` semantics (case-sensitive; `*` also matches
a leading dot, unlike shell globbing), and a component that is exactly `**` matches zero or more
path components. Examples: `DCIM/**/*.MP4`, `**/*.mp4`, `*.json`.

The matcher is an NFA over path components so that the directory walk can (a) decide whether a
directory could hold a match at all before opening it, and (b) match 100 000 names without
re-matching whole paths. Names are matched as `os.fsdecode` (surrogateescape) strings, so
non-UTF-8 names match `*` like any other name. Python 3.11 has no `glob.translate`, hence this.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

RECURSIVE = "**"
_MAGIC = re.compile(r"[*?\[]")

# A state is (pattern index, component index within that pattern).
State = tuple[int, int]
States = frozenset[State]


class GlobError(ValueError):
    """A configured glob is malformed (empty, absolute, or has empty/`.`/`..` components)."""


@dataclass(frozen=True)
class _Component:
    text: str
    recursive: bool
    match: Callable[[str], bool]


def _compile_component(text: str) -> _Component:
    if text == RECURSIVE:
        return _Component(text, True, lambda _name: True)
    if _MAGIC.search(text) is None:
        # Literal names are the common case for directory prefixes (DCIM); compare directly.
        return _Component(text, False, text.__eq__)
    regex = re.compile(fnmatch.translate(text), re.DOTALL)
    return _Component(text, False, lambda name: regex.match(name) is not None)


def _split(glob: str) -> list[str]:
    if not glob:
        raise GlobError("empty glob")
    if "\0" in glob:
        raise GlobError(f"glob contains NUL: {glob!r}")
    if glob.startswith("/"):
        raise GlobError(f"glob must be relative to the camera root: {glob!r}")
    parts = glob.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise GlobError(f"glob has an empty, '.' or '..' component: {glob!r}")
    return parts


class GlobSet:
    """Several globs matched together, component by component.

    Usage from a walk: `states = g.start()`; for each directory descended, `states = g.step(states,
    dirname)` and descend only if `g.alive(states)`; a file `name` in that directory matches iff
    `g.accepts(g.step(states, name))`.
    """

    def __init__(self, globs: Sequence[str]) -> None:
        if isinstance(globs, str):
            raise TypeError("globs must be a sequence of strings, not a single string")
        self.globs = tuple(globs)
        self._patterns = [[_compile_component(p) for p in _split(g)] for g in self.globs]
        self._start = self._closure((i, 0) for i in range(len(self._patterns)))
        # A walk meets only a handful of distinct state sets: remember their verdicts.
        self._verdicts: dict[States, tuple[bool, bool]] = {}

    def _closure(self, states: Iterable[State]) -> States:
        """Add the states reachable without consuming a name (a `**` may match zero components)."""
        result: set[State] = set()
        pending = list(states)
        while pending:
            state = pending.pop()
            if state in result:
                continue
            result.add(state)
            pattern_index, position = state
            pattern = self._patterns[pattern_index]
            if position < len(pattern) and pattern[position].recursive:
                pending.append((pattern_index, position + 1))
        return frozenset(result)

    def start(self) -> States:
        """States before any name is consumed (at the camera root)."""
        return self._start

    def step(self, states: States, name: str) -> States:
        """States after consuming one path component `name`."""
        advanced: list[State] = []
        for pattern_index, position in states:
            pattern = self._patterns[pattern_index]
            if position >= len(pattern):
                continue
            component = pattern[position]
            if component.recursive:
                advanced.append((pattern_index, position))  # `**` swallows the name and stays
            elif component.match(name):
                advanced.append((pattern_index, position + 1))
        return self._closure(advanced) if advanced else frozenset()

    def accepts(self, states: States) -> bool:
        """True if some glob has matched every one of its components."""
        return self._verdict(states)[0]

    def alive(self, states: States) -> bool:
        """True if a longer path could still match (worth descending into this directory)."""
        return self._verdict(states)[1]

    def _verdict(self, states: States) -> tuple[bool, bool]:
        verdict = self._verdicts.get(states)
        if verdict is None:
            ends = [position - len(self._patterns[i]) for i, position in states]
            verdict = (0 in ends, any(end < 0 for end in ends))
            if len(self._verdicts) < 4096:
                self._verdicts[states] = verdict
        return verdict

    def matches(self, rel_path: str) -> bool:
        """Match a whole `/`-separated relative path (convenience for tests and callers)."""
        states = self.start()
        for name in rel_path.split("/"):
            states = self.step(states, name)
            if not states:
                return False
        return self.accepts(states)
