"""Client connection checks, revert surfacing, nonces and time units against a real anvil."""

from __future__ import annotations

import logging
import socket

import pytest
from chain_testkit import CID, INITIAL_SHA, PARAMS, Base, Fed, sha
from eth_account import Account

from chain.client import CoordinatorClient
from chain.deploy import deploy_federation
from chain.errors import ChainError, ContractRevert, NoContract, RpcUnreachable, TransactionFailed, WrongChain
from chain.profile import CYPHERIUM, DEVNET, get_profile
from chain.tx import TxSender
from chain.wallet import Wallet
from localnet.anvil import set_balance


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_wrong_chain_id_names_both_ids(base: Base) -> None:
    with pytest.raises(WrongChain, match=r"answers chain id 16166, expected 1\b"):
        CoordinatorClient(base.anvil.rpc_url, base.deployment.coordinator, None, DEVNET.replace(chain_id=1))


def test_no_contract_at_address(base: Base) -> None:
    with pytest.raises(NoContract, match="no contract at"):
        CoordinatorClient(base.anvil.rpc_url, base.admin.address, None, DEVNET)
    with pytest.raises(NoContract, match="not an address"):
        CoordinatorClient(base.anvil.rpc_url, "0x1234", None, DEVNET)


def test_unreachable_rpc() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RpcUnreachable, match="unreachable"):
        CoordinatorClient(url, "0x" + "11" * 20, None, DEVNET.replace(rpc_timeout_s=2.0))


def test_views_work_without_wallet_but_transactions_do_not(fed: Fed) -> None:
    assert fed.view.params().contributor_reward == PARAMS.contributor_reward
    assert fed.view.base_model() == "tiny"
    assert fed.view.deployer() == fed.base.admin.address
    assert fed.view.global_adapter().sha256 == INITIAL_SHA
    with pytest.raises(Exception, match="no wallet"):
        fed.view.open_round()


def test_revert_reason_from_a_mined_failed_transaction(fed: Fed) -> None:
    """Past the preflight, a refused call is mined without its event: an error with the reason."""
    r = fed.open_and_commit([0])
    fed.m[0].preflight = False
    with pytest.raises(ContractRevert, match="already committed this round") as exc:
        fed.m[0].commit_update(r, sha("again"), CID, 1)
    assert exc.value.tx_hash is not None  # mined (and paid for), yet not done
    assert fed.view.committers() == [fed.addr(0)]


def test_preflight_refuses_before_sending(fed: Fed) -> None:
    r = fed.open_and_commit([0])
    nonce = fed.base.w3.eth.get_transaction_count(fed.addr(0))
    with pytest.raises(ContractRevert, match="already committed this round") as exc:
        fed.m[0].commit_update(r, sha("again"), CID, 1)
    assert exc.value.tx_hash is None
    assert fed.base.w3.eth.get_transaction_count(fed.addr(0)) == nonce  # nothing was sent


def test_sender_returns_failed_receipts_for_the_caller_to_judge(fed: Fed) -> None:
    """TxSender does not trust receipt status either way; with a reason, the replay reads it."""
    sender = TxSender(fed.base.w3, fed.base.outsider, DEVNET)
    tx = {
        "to": fed.view.address,
        "data": fed.view.contract.encode_abi("commitUpdate", args=[1, sha("x"), CID, 1]),
    }
    receipt = sender.send(tx, "commitUpdate", gas=200_000)
    assert not receipt["logs"]
    assert sender.replay_reason(tx, receipt["blockNumber"]) == "not a member"


def test_back_to_back_transactions_and_nonce_resync(fed: Fed, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chain.tx")
    a = fed.m[0]
    b = fed.client(fed.base.members[0])  # a second client on the same key: a's nonce goes stale
    a.publish_peer("p1", ["/ip4/127.0.0.1/tcp/1"])
    b.publish_peer("p2", ["/ip4/127.0.0.1/tcp/2"])
    b.publish_peer("p3", ["/ip4/127.0.0.1/tcp/3"])
    a.publish_peer("p4", ["/ip4/127.0.0.1/tcp/4"])  # 'nonce too low' -> resync -> sent
    peer = fed.view.member_peer(fed.addr(0))
    assert peer is not None and peer.peer_id == "p4"
    assert any("resyncing" in r.getMessage() for r in caplog.records)


def test_unfunded_sender_gets_a_clear_error(fed: Fed) -> None:
    acct = Account.create()
    poor = fed.client(Wallet(acct.address, bytes(acct.key)))
    with pytest.raises(TransactionFailed, match=r"too little ETH.*fund the account"):
        poor.open_round()


def test_time_unit_detection_and_conversion(fed: Fed) -> None:
    assert fed.view.time_unit_ms is False
    assert fed.view.seconds_to_chain(60) == 60
    detecting = CoordinatorClient(
        fed.url, fed.view.address, None, DEVNET.replace(time_unit_ms=None), w3=fed.base.w3
    )
    assert detecting.time_unit_ms is False
    assert fed.view.params().commit_duration == PARAMS.commit_duration_s


def test_millisecond_chain_gets_durations_in_ms(fed: Fed) -> None:
    acct = Account.create()
    deployer = Wallet(acct.address, bytes(acct.key))
    set_balance(fed.url, deployer.address, 10**20)
    ms_profile = DEVNET.replace(time_unit_ms=True)
    dep = deploy_federation(fed.url, deployer, PARAMS, INITIAL_SHA, "cid", "m", sha("c"), ms_profile)
    assert dep.time_unit_ms
    client = CoordinatorClient(fed.url, dep.coordinator, None, ms_profile)
    p = client.params()
    assert (p.commit_duration, p.aggregate_duration, p.verify_duration) == (100_000, 100_000, 100_000)
    assert client.seconds_to_chain(1.5) == 1500 and client.chain_to_seconds(2500) == 2.5


def test_profiles() -> None:
    assert get_profile("cypherium") is CYPHERIUM
    assert CYPHERIUM.chain_id == 16166 and CYPHERIUM.poa_extra_data and CYPHERIUM.time_unit_ms
    with pytest.raises(ValueError, match="devnet"):
        get_profile("mainnet")


def test_bad_sha_length_refused_before_sending(fed: Fed) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        fed.m[0].commit_update(1, b"short", CID, 1)


def test_keepalive_is_a_zero_value_self_transfer_that_makes_a_block(fed: Fed) -> None:
    before, made = fed.m[0].latest_block()
    assert made == float(fed.view.chain_time())  # anvil stamps in seconds
    tx = fed.m[0].send_keepalive()
    assert tx.block_number > before and tx.gas_used == 21_000 and not tx.events
    sent = fed.view.w3.eth.get_transaction(tx.tx_hash)  # type: ignore[arg-type]
    assert sent["from"] == sent["to"] == fed.addr(0) and sent["value"] == 0
    assert sent["gasPrice"] == DEVNET.gas_price_wei and sent["type"] == 0  # legacy, explicit price
    assert fed.view.latest_block()[0] == tx.block_number
    with pytest.raises(ChainError, match="no wallet"):
        fed.view.send_keepalive()
