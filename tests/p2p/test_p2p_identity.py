"""PeerID <-> wallet address round trip on real secp256k1 keys."""

from __future__ import annotations

import pytest
from eth_account import Account
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_pair
from libp2p.peer.id import ID

from p2p.errors import IdentityError
from p2p.identity import address_from_peer_id, peer_id_from_private_key


@pytest.mark.parametrize("seed", range(8))
def test_address_recovered_from_peer_id_equals_wallet_address(seed: int) -> None:
    acct = Account.from_key(bytes([seed + 1]) * 32)
    pid = peer_id_from_private_key(bytes(acct.key))
    assert pid.startswith("16Uiu2")  # secp256k1 identity multihash
    assert address_from_peer_id(pid) == acct.address  # EIP-55 checksummed


def test_distinct_keys_give_distinct_peer_ids() -> None:
    a, b = Account.create(), Account.create()
    assert peer_id_from_private_key(bytes(a.key)) != peer_id_from_private_key(bytes(b.key))


def test_bad_private_keys_raise_identity_error() -> None:
    with pytest.raises(IdentityError, match="32 raw bytes"):
        peer_id_from_private_key(b"\x01" * 31)
    with pytest.raises(IdentityError, match="secp256k1"):
        peer_id_from_private_key(b"\x00" * 32)


def test_non_secp256k1_peer_id_is_rejected() -> None:
    ed_pid = ID.from_pubkey(ed25519_pair().public_key).to_base58()
    with pytest.raises(IdentityError, match="secp256k1"):
        address_from_peer_id(ed_pid)
    with pytest.raises(IdentityError, match="not a libp2p PeerID"):
        address_from_peer_id("not-a-peer-id")
