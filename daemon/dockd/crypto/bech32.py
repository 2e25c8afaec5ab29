"""Bech32 (BIP 173) encoding, as age uses it for `age1…` recipients and `AGE-SECRET-KEY-…` identities.

Hand-written because it is thirty lines and the PyPI reference package is unmaintained; age differs
from BIP 173 only in having no 90-character limit, which does not matter at age's key sizes.
"""

from __future__ import annotations

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


class Bech32Error(ValueError):
    """The string is not valid bech32, or not for the expected human-readable part."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_GENERATOR):
            chk ^= gen if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or ((acc << (to_bits - bits)) & maxv):
        raise Bech32Error("invalid padding")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Encode `data` under the lowercase human-readable part `hrp`."""
    values = _convert_bits(data, 8, 5, pad=True)
    checksum_input = _hrp_expand(hrp) + values + [0] * 6
    polymod = _polymod(checksum_input) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[v] for v in values + checksum)


def decode(text: str, expected_hrp: str) -> bytes:
    """Decode a bech32 string; all-lowercase or all-uppercase, the hrp compared case-insensitively."""
    if text.lower() != text and text.upper() != text:
        raise Bech32Error("mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise Bech32Error("missing separator or checksum")
    hrp, payload = text[:pos], text[pos + 1 :]
    if hrp != expected_hrp.lower():
        raise Bech32Error(f"expected prefix {expected_hrp!r}, got {hrp!r}")
    try:
        values = [_CHARSET.index(c) for c in payload]
    except ValueError:
        raise Bech32Error("character outside the bech32 alphabet") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise Bech32Error("bad checksum")
    return bytes(_convert_bits(values[:-6], 5, 8, pad=False))
