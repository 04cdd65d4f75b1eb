"""Deploying a federation: one Coordinator (which deploys its RewardToken)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import rlp
from eth_abi import encode as abi_encode
from eth_utils import event_abi_to_log_topic, keccak, to_checksum_address
from web3 import Web3

from chain.artifacts import load_artifact
from chain.errors import ChainError
from chain.profile import DEVNET, ChainProfile
from chain.rpc import connect, detect_time_unit_ms
from chain.tx import TxSender
from chain.types import Deployment, DeployParams
from chain.wallet import Wallet

__all__ = ["DeployParams", "Deployment", "deploy_federation"]

log = logging.getLogger(__name__)

_PARAMS_TYPE = "(uint64,uint64,uint64,uint8,uint8,uint256,uint256,uint256,bool,uint64)"


def _check_params(p: DeployParams) -> None:
    if min(p.commit_duration_s, p.aggregate_duration_s, p.verify_duration_s, p.voting_period_s) <= 0:
        raise ValueError("durations must be > 0 seconds")
    if not 1 <= p.max_attempts <= 255:
        raise ValueError("max_attempts must be in 1..255")
    if not 1 <= p.min_committers <= 96:
        raise ValueError("min_committers must be in 1..96")
    if min(p.contributor_reward, p.aggregator_reward, p.verifier_reward) < 0:
        raise ValueError("rewards must be >= 0")


def deploy_federation(
    rpc_url: str,
    deployer: Wallet,
    params: DeployParams,
    initial_sha256: bytes,
    initial_cid: str,
    base_model: str,
    lora_config_hash: bytes,
    profile: ChainProfile = DEVNET,
    *,
    members: Sequence[str] = (),
    w3: Web3 | None = None,
) -> Deployment:
    """Deploy the Coordinator with `params` (durations in seconds, converted to the chain's time unit).

    `members`: the first members, admitted by the constructor (issue 21): after that only the
    members' votes admit or remove anyone, and the deployer has no power left. Empty: the
    deployer alone (a one-member federation that votes the others in). Returns the addresses,
    the deployment block and the admitted members.
    """
    _check_params(params)
    initial = [str(to_checksum_address(a)) for a in members] or [deployer.address]
    if len({a.lower() for a in initial}) != len(initial):
        raise ValueError("the initial members contain a duplicate address")
    if len(initial_sha256) != 32 or len(lora_config_hash) != 32:
        raise ValueError("initial_sha256 and lora_config_hash must be 32 bytes")
    w3 = w3 if w3 is not None else connect(rpc_url, profile)
    unit_ms = profile.time_unit_ms if profile.time_unit_ms is not None else detect_time_unit_ms(w3)
    scale = 1000 if unit_ms else 1
    chain_params = (
        params.commit_duration_s * scale,
        params.aggregate_duration_s * scale,
        params.verify_duration_s * scale,
        params.max_attempts,
        params.min_committers,
        params.contributor_reward,
        params.aggregator_reward,
        params.verifier_reward,
        params.open_membership,
        params.voting_period_s * scale,
    )
    args = abi_encode(
        [_PARAMS_TYPE, "address[]", "bytes32", "string", "string", "bytes32"],
        [chain_params, initial, bytes(initial_sha256), initial_cid, base_model, bytes(lora_config_hash)],
    )
    artifact = load_artifact("Coordinator")
    data = artifact.bytecode + args.hex()
    sender = TxSender(w3, deployer, profile)
    estimate = sender.estimate_gas({"from": deployer.address, "data": data, "value": 0}, "deploy Coordinator")
    # Pre-Homestead rules (Cypherium's official genesis) do not fail a creation that cannot pay for
    # its code: they leave an empty account. The estimate then misses the code deposit (200 gas a
    # byte), so it is added here for both contracts, and the code is checked below.
    deposit = 200 * sum(len(load_artifact(n).deployed_bytecode) // 2 for n in ("Coordinator", "RewardToken"))
    gas = int(estimate * profile.gas_margin) + profile.gas_extra + deposit
    receipt = sender.send({"data": data}, "deploy Coordinator", gas=gas)
    # Done = the Deployed event. Its log address is the coordinator's: under pre-Homestead rules
    # Cypherium's receipt `contractAddress` is not where the contract went (measured), so the
    # receipt field is only a fallback; the address is also checked against sender + nonce.
    deployed_abi = next(e for e in artifact.abi if e.get("name") == "Deployed")
    deployed_topic = bytes(event_abi_to_log_topic(deployed_abi))  # type: ignore[arg-type]
    logs = [lg for lg in receipt["logs"] if lg["topics"] and bytes(lg["topics"][0]) == deployed_topic]
    if not logs:
        raise ChainError(
            f"deployment mined without its Deployed event (used {receipt['gasUsed']} of {gas} gas, "
            f"tx 0x{bytes(receipt['transactionHash']).hex()}): the constructor failed; check the "
            "parameters and the chain's EVM rules (see docs/contract.md)"
        )
    coordinator = to_checksum_address(logs[0]["address"])
    nonce = int(w3.eth.get_transaction(receipt["transactionHash"])["nonce"])
    expected = to_checksum_address(keccak(rlp.encode([bytes.fromhex(deployer.address[2:]), nonce]))[12:])
    if coordinator != expected:
        raise ChainError(f"the Deployed event came from {coordinator}, not from {expected}: wrong chain?")
    if len(w3.eth.get_code(coordinator)) == 0:
        raise ChainError(
            f"deployment mined but no code at {coordinator} ({receipt['gasUsed']} gas used of {gas}): "
            "the chain refused the contract; check its EVM rules (see docs/contract.md)"
        )
    contract = w3.eth.contract(address=coordinator, abi=artifact.abi)
    token = to_checksum_address(contract.functions.token().call())
    log.info("deployed coordinator %s (token %s) in block %d", coordinator, token, receipt["blockNumber"])
    return Deployment(
        rpc_url=rpc_url,
        chain_id=profile.chain_id,
        coordinator=coordinator,
        token=token,
        deploy_block=int(receipt["blockNumber"]),
        deployer=deployer.address,
        time_unit_ms=bool(unit_ms),
        members=tuple(initial),
    )
