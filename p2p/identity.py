"""The host identity is the institution's wallet key: secp256k1 PeerID <-> Ethereum address."""

from __future__ import annotations

import coincurve
from eth_utils import keccak, to_checksum_address
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.crypto.secp256k1 import Secp256k1PublicKey, create_new_key_pair
from libp2p.peer.id import ID

from p2p.errors import IdentityError


def key_pair_from_private_key(key: bytes) -> KeyPair:
    """libp2p secp256k1 key pair for a 32-byte wallet private key."""
    if not isinstance(key, bytes | bytearray) or len(key) != 32:
        raise IdentityError("private key must be 32 raw bytes (the wallet's secp256k1 key)")
    try:
        return create_new_key_pair(bytes(key))
    except Exception as exc:  # coincurve rejects 0 and values >= the group order
        raise IdentityError(f"private key is not a valid secp256k1 scalar: {exc}") from exc


def peer_id_from_private_key(key: bytes) -> str:
    """Base58 PeerID ('16Uiu2...') of the host whose key is this wallet key."""
    return ID.from_pubkey(key_pair_from_private_key(key).public_key).to_base58()


def address_from_public_key(compressed: bytes) -> str:
    """EIP-55 address of a (compressed or uncompressed) secp256k1 public key."""
    uncompressed = coincurve.PublicKey(compressed).format(compressed=False)
    return to_checksum_address(keccak(uncompressed[1:])[-20:])


def address_from_peer_id(peer_id: str | ID) -> str:
    """EIP-55 wallet address of a secp256k1 PeerID (the key is embedded in its identity multihash)."""
    try:
        pid = peer_id if isinstance(peer_id, ID) else ID.from_base58(peer_id)
        pub = pid.extract_public_key()
    except Exception as exc:
        raise IdentityError(f"not a libp2p PeerID: {peer_id!s:.80} ({exc})") from exc
    if pub is None or pub.get_type() != KeyType.Secp256k1 or not isinstance(pub, Secp256k1PublicKey):
        raise IdentityError(f"PeerID {peer_id!s:.80} has no secp256k1 key; medfed peers use wallet keys")
    return address_from_public_key(pub.to_bytes())
