"""Clip glob semantics: `**` spans zero or more directories, components match case-sensitively."""

from __future__ import annotations

import os

import pytest
from dockd.devices.globs import GlobError, GlobSet


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        # `**` matches zero directories...
        ("DCIM/**/*.MP4", "DCIM/A.MP4", True),
        ("**/*.mp4", "a.mp4", True),
        # ...one, or many.
        ("DCIM/**/*.MP4", "DCIM/100GOPRO/A.MP4", True),
        ("DCIM/**/*.MP4", "DCIM/a/b/c/d/A.MP4", True),
        ("**/*.mp4", "x/y/z/a.mp4", True),
        ("**/x/**/*.MP4", "x/A.MP4", True),
        ("**/x/**/*.MP4", "a/b/x/c/d/A.MP4", True),
        ("**/x/**/*.MP4", "a/b/c/A.MP4", False),
        # The literal prefix still has to match.
        ("DCIM/**/*.MP4", "A.MP4", False),
        ("DCIM/**/*.MP4", "DCIMX/A.MP4", False),
        ("DCIM/**/*.MP4", "MISC/DCIM/A.MP4", False),
        # `*` stays within one component.
        ("DCIM/*.MP4", "DCIM/100/A.MP4", False),
        ("*.json", "a.json", True),
        ("*.json", "sub/a.json", False),
        # Case-sensitive, on every platform.
        ("**/*.mp4", "a.MP4", False),
        ("DCIM/**/*.MP4", "dcim/A.MP4", False),
        # fnmatch semantics: `*` matches a leading dot, `?` and classes work.
        ("*.MP4", ".hidden.MP4", True),
        ("CLIP_??.MP4", "CLIP_01.MP4", True),
        ("CLIP_??.MP4", "CLIP_001.MP4", False),
        ("CLIP_[0-9].MP4", "CLIP_7.MP4", True),
        # A name with a newline is just a name.
        ("*.MP4", "evil\nname.MP4", True),
    ],
)
def test_glob_matching(glob: str, path: str, expected: bool) -> None:
    assert GlobSet([glob]).matches(path) is expected


def test_several_globs_match_as_a_union() -> None:
    globs = GlobSet(["DCIM/**/*.MP4", "*.json"])
    assert globs.matches("DCIM/1/A.MP4")
    assert globs.matches("meta.json")
    assert not globs.matches("DCIM/meta.json")


def test_non_utf8_names_match_through_surrogateescape() -> None:
    name = os.fsdecode(b"\xff\xfeclip.MP4")
    globs = GlobSet(["DCIM/**/*.MP4"])
    assert globs.matches("DCIM/" + name)
    # `?` is one undecodable byte, like any one character.
    assert GlobSet(["?clip.MP4"]).matches(os.fsdecode(b"\xffclip.MP4"))
    assert not GlobSet(["?clip.MP4"]).matches(name)


def test_alive_prunes_directories_that_cannot_hold_a_match() -> None:
    globs = GlobSet(["DCIM/**/*.MP4"])
    start = globs.start()
    assert globs.alive(globs.step(start, "DCIM"))
    assert not globs.step(start, "MISC")  # nothing under MISC can match: not worth opening
    deep = globs.step(globs.step(start, "DCIM"), "100GOPRO")
    assert globs.alive(deep) and not globs.accepts(deep)


@pytest.mark.parametrize("bad", ["", "/DCIM/*.MP4", "DCIM/../*.MP4", "DCIM//*.MP4", "./*.MP4"])
def test_malformed_globs_are_refused(bad: str) -> None:
    with pytest.raises(GlobError):
        GlobSet([bad])


def test_a_bare_string_is_not_a_list_of_globs() -> None:
    with pytest.raises(TypeError):
        GlobSet("*.MP4")
