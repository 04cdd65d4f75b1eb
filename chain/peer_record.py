"""The peer record a member publishes with ``publishPeer(peerId, multiaddrs)``, and its display name.

The contract stores ``multiaddrs`` as one opaque string. medfed writes it as comma-separated
entries: multiaddrs (each starts with ``/``) and, optionally, one ``name=<percent-encoded display
name>`` entry, placed last. Readers take the entries that start with ``/`` as addresses, the first
``name=`` entry as the institution's display name, and ignore anything else (room for later
``key=value`` entries). A record without a name is exactly what older nodes publish; an older node
reading a named record dials the addresses before it reaches (and skips) the name entry.

A display name is at most NAME_MAX characters, printable (no control, format or bidi-override
characters), without leading or trailing spaces. :func:`decode` returns "" for a name that breaks
these rules, so whatever a dishonest member writes on-chain, readers get either a clean name or none.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, unquote

NAME_KEY = "name="
NAME_MAX = 64


def check_name(name: str) -> str:
    """``name`` if it is a valid display name, else ValueError saying why."""
    if name != name.strip():
        raise ValueError("a display name cannot start or end with spaces")
    if len(name) > NAME_MAX:
        raise ValueError(f"a display name has at most {NAME_MAX} characters, got {len(name)}")
    if any(not ch.isprintable() for ch in name):
        raise ValueError("a display name cannot contain control or formatting characters")
    return name


def encode(multiaddrs: Sequence[str], name: str = "") -> str:
    """The ``multiaddrs`` string to publish: addresses, then ``name=...`` when a name is given."""
    for a in multiaddrs:
        if "," in a or not a.startswith("/"):
            raise ValueError(f"{a!r} is not a multiaddr (starts with '/', no commas)")
    entries = list(multiaddrs)
    if name:
        entries.append(NAME_KEY + quote(check_name(name), safe=" "))
    return ",".join(entries)


def decode(raw: str) -> tuple[tuple[str, ...], str]:
    """(multiaddrs, display name or "") from a published ``multiaddrs`` string (any input)."""
    addrs: list[str] = []
    name = ""
    seen_name = False
    for entry in str(raw).split(","):
        entry = entry.strip()
        if entry.startswith("/"):
            addrs.append(entry)
        elif entry.startswith(NAME_KEY) and not seen_name:
            seen_name = True
            text = unquote(entry[len(NAME_KEY) :], errors="replace")
            try:
                name = check_name(text) if "\ufffd" not in text else ""
            except ValueError:
                name = ""
    return tuple(addrs), name
