"""tus `Upload-Metadata` encoding (creation extension): keys bare, values base64."""

from __future__ import annotations

import base64

import pytest
from dockd.transport.tus import encode_metadata


def _decode(header: str) -> dict[str, bytes]:
    pairs = {}
    for pair in header.split(","):
        key, _, value = pair.partition(" ")
        pairs[key] = base64.b64decode(value, validate=True)
    return pairs


def test_values_are_base64_of_utf8_or_raw_bytes_and_empty_values_are_bare_keys() -> None:
    header = encode_metadata({"officer": "Zoë Ødegård", "sha": b"\x00\xff\x10", "note": ""})
    assert header is not None
    assert "note" in header.split(",")  # the spec lets an empty value drop the space
    assert _decode(header) == {
        "officer": "Zoë Ødegård".encode(),
        "sha": b"\x00\xff\x10",
        "note": b"",
    }


def test_empty_metadata_means_no_header_at_all() -> None:
    assert encode_metadata({}) is None


@pytest.mark.parametrize("key", ["", "has space", "has,comma", "tëst", "tab\there", "nl\n"])
def test_keys_that_cannot_travel_unencoded_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="metadata key"):
        encode_metadata({key: "x"})


def test_values_of_other_types_are_refused() -> None:
    with pytest.raises(TypeError):
        encode_metadata({"n": 5})  # type: ignore[dict-item]
