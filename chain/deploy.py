"""Deploying a federation: one Coordinator (which deploys its RewardToken)."""

from __future__ import annotations

import logging

from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address
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

_PARAMS_TYPE = "(uint64,uint64,uint64,uint8,uint8,uint256,uint256,uint256,bool)"


def _check_params(p: DeployParams) -> None:
    if min(p.commit_duration_s, p.aggregate_duration_s, p.verify_duration_s) <= 0:
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
    w3: Web3 | None = None,
) -> Deployment:
    """Deploy the Coordinator with `params` (durations in seconds, converted to the chain's time unit).

    The deployer becomes the admin. Returns the addresses and the deployment block.
    """
    _check_params(params)
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
    )
    args = abi_encode(
        [_PARAMS_TYPE, "bytes32", "string", "string", "bytes32"],
        [chain_params, bytes(initial_sha256), initial_cid, base_model, bytes(lora_config_hash)],
    )
    artifact = load_artifact("Coordinator")
    data = artifact.bytecode + args.hex()
    sender = TxSender(w3, deployer, profile)
    receipt = sender.send({"data": data}, "deploy Coordinator")
    address = receipt.get("contractAddress")
    if not address:
        raise ChainError("deployment mined without a contract address: check the chain's contract size limit")
    coordinator = to_checksum_address(address)
    contract = w3.eth.contract(address=coordinator, abi=artifact.abi)
    token = to_checksum_address(contract.functions.token().call())
    log.info("deployed coordinator %s (token %s) in block %d", coordinator, token, receipt["blockNumber"])
    return Deployment(
        rpc_url=rpc_url,
        chain_id=profile.chain_id,
        coordinator=coordinator,
        token=token,
        deploy_block=int(receipt["blockNumber"]),
        admin=deployer.address,
        time_unit_ms=bool(unit_ms),
    )
