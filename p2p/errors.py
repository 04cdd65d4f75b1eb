"""Exception types raised by p2p/. Each message names what to fix."""

from __future__ import annotations


class P2PError(Exception):
    """Base class for every p2p/ error."""


class IdentityError(P2PError):
    """A private key or PeerID that cannot be used (wrong length, wrong key type)."""


class MessageError(P2PError):
    """A gossip message that does not decode to a valid announcement."""


class ConnectError(P2PError):
    """No listed multiaddr could be dialled."""


class TransferError(P2PError):
    """A transfer failed: timeout, peer hung up, too large, or wrong hash."""


class TransferRefused(TransferError):
    """The provider refused the request (not allowed to us, or it does not hold the file)."""


class NoProviderError(TransferError):
    """Every provider failed; the message lists why each one failed."""


class CidError(P2PError):
    """A content id could not be computed or parsed."""


class IpfsError(P2PError):
    """The Kubo RPC endpoint failed or answered something unexpected."""


class FileTooLarge(TransferError):
    """Every provider asked said the file is larger than the limit (answered ``too_large`` or
    announced an oversize body): final for this sha256, not worth retrying."""


class WireError(P2PError):
    """The installed py-libp2p is not the version p2p/wire.py was written against."""
