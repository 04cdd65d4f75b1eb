"""Tolerant ABI decoding: every string the chain hands back is untrusted data.

An ABI ``string`` is only bytes: any member can put invalid UTF-8 in ``publishPeer``, a commit's
``cid`` or a submission's ``cid``. web3's default codec raises ``UnicodeDecodeError`` on such a
string, and one such log would stop every reader at its block for good. Here a string always
decodes: valid UTF-8 as itself, invalid bytes kept visible as ``\\xNN`` escapes (never raised, never
silently replaced by U+FFFD, so an auditor sees exactly what was sent). Characters that are not
printable (newlines, terminal escapes, bidi overrides) are escaped the same way, so a member's
string can neither forge a line in a node's log nor restyle an operator's terminal. No honest
field (a CID, a peer id, a multiaddr, a reason) contains either.
"""

from __future__ import annotations

from eth_abi import decoding, encoding
from eth_abi.codec import ABICodec
from eth_abi.registry import ABIRegistry, BaseEquals
from web3._utils.abi import build_strict_registry

STRING_ERRORS = "backslashreplace"


def chain_text(raw: bytes) -> str:
    """Bytes from the chain as printable text: UTF-8 where valid and printable, escapes for the rest."""
    text = bytes(raw).decode("utf-8", errors=STRING_ERRORS)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


class TolerantStringDecoder(decoding.StringDecoder):
    """eth_abi's string decoder with invalid UTF-8 escaped instead of raised."""

    def __init__(self) -> None:
        super().__init__(handle_string_errors=STRING_ERRORS)

    @staticmethod
    def decoder_fn(data: bytes, handle_string_errors: str = STRING_ERRORS) -> str:
        return chain_text(data)


def tolerant_registry() -> ABIRegistry:
    """web3's strict registry (the one a plain Web3 uses) with the tolerant string decoder."""
    registry = build_strict_registry()
    registry.unregister("string")
    registry.register(
        BaseEquals("string"),
        encoding.TextStringEncoder,
        TolerantStringDecoder,
        label="string",
    )
    return registry


TOLERANT_CODEC = ABICodec(tolerant_registry())
