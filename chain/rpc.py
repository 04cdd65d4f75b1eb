"""Connecting to a JSON-RPC endpoint with a profile's settings, and the checks that go with it."""

from __future__ import annotations

from typing import Any

import requests
from eth_utils import to_checksum_address
from web3 import HTTPProvider, Web3
from web3.middleware import ExtraDataToPOAMiddleware

from chain.abi_text import TOLERANT_CODEC
from chain.errors import NoContract, RpcUnreachable, WrongChain
from chain.profile import ChainProfile

MS_THRESHOLD = 100_000_000_000  # a seconds timestamp passes this in the year 5138


def connect(rpc_url: str, profile: ChainProfile) -> Web3:
    """A Web3 for `rpc_url` whose chain id was checked against the profile."""
    provider = HTTPProvider(rpc_url, request_kwargs={"timeout": profile.rpc_timeout_s})
    w3 = Web3(provider)
    w3.codec = TOLERANT_CODEC  # a member's invalid UTF-8 in a string must not break a view call
    if profile.poa_extra_data:
        w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    chain_id = rpc_chain_id(w3, rpc_url)
    if chain_id != profile.chain_id:
        raise WrongChain(
            f"RPC {rpc_url} answers chain id {chain_id}, expected {profile.chain_id}: "
            f"point the RPC URL (--rpc, [chain] rpc_url) at the right chain or choose another profile"
        )
    return w3


def unreachable(rpc_url: str, exc: BaseException) -> RpcUnreachable:
    """The one-line error for an RPC endpoint that does not answer."""
    return RpcUnreachable(
        f"RPC {rpc_url} unreachable ({type(exc).__name__}): "
        "start the chain node or fix the RPC URL (--rpc, [chain] rpc_url)"
    )


def rpc_chain_id(w3: Web3, rpc_url: str) -> int:
    """eth_chainId, turning connection failures into RpcUnreachable."""
    try:
        response = w3.provider.make_request("eth_chainId", [])  # type: ignore[arg-type]
    except requests.exceptions.HTTPError as exc:  # a web server, but not a JSON-RPC one
        status = exc.response.status_code if exc.response is not None else "?"
        raise RpcUnreachable(
            f"RPC {rpc_url} answered HTTP {status} to a JSON-RPC request: is it an Ethereum RPC? "
            "fix the RPC URL (--rpc, [chain] rpc_url)"
        ) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, OSError) as exc:
        raise unreachable(rpc_url, exc) from None
    except (requests.exceptions.RequestException, ValueError) as exc:  # not JSON, not JSON-RPC
        raise RpcUnreachable(
            f"RPC {rpc_url} did not answer JSON-RPC ({type(exc).__name__}): is it an Ethereum RPC? "
            "fix the RPC URL (--rpc, [chain] rpc_url)"
        ) from None
    result = response.get("result") if isinstance(response, dict) else None
    if not isinstance(result, str):
        error = response.get("error") if isinstance(response, dict) else response
        raise RpcUnreachable(
            f"RPC {rpc_url} gave no chain id ({str(error)[:120]}): is it an Ethereum RPC? "
            "fix the RPC URL (--rpc, [chain] rpc_url)"
        )
    try:
        return int(result, 16)
    except ValueError:
        raise RpcUnreachable(
            f"RPC {rpc_url} gave a chain id that is not a number ({result[:40]!r}): is it an Ethereum RPC?"
        ) from None


def require_code(w3: Web3, address: str, rpc_url: str, what: str = "coordinator") -> str:
    """The checksummed `address`, after checking that contract code exists there."""
    try:
        addr = to_checksum_address(address)
    except ValueError:
        raise NoContract(f"{address!r} is not an address: fix the {what} address") from None
    if len(w3.eth.get_code(addr)) == 0:
        raise NoContract(
            f"no contract at {addr} on {rpc_url}: check the {what} address (deployment.json) and the chain"
        )
    return addr


def detect_time_unit_ms(w3: Web3) -> bool:
    """True when the latest block's timestamp is in milliseconds (Cypherium), False for seconds."""
    block: Any = w3.eth.get_block("latest")
    return int(block["timestamp"]) > MS_THRESHOLD
