"""Which kind of chain an RPC URL serves, learned from the chain itself rather than from a flag.

Cypherium stamps produced blocks in milliseconds (its genesis block in seconds), anvil and
Ethereum in seconds. A coordinator is deployed in a produced block, so once one exists the
latest block's timestamp tells the unit: compared with the wall clock, a milliseconds stamp is
about 1000 times too large to be seconds. The client software (`web3_clientVersion`: Cypherium
answers "Geth/...(cypherium-v2.0.0)...") picks the profile's other settings when none is named.
"""

from __future__ import annotations

import logging
import time

import requests

from chain.profile import CYPHERIUM, DEVNET, ChainProfile, get_profile

log = logging.getLogger(__name__)

AUTO = "auto"
PROFILE_CHOICES = (AUTO, "devnet", "cypherium")
# between a seconds stamp (~1.8e9 now) and a milliseconds one (~1.8e12 now), whatever the year
_UNIT_RATIO = 1000.0


def _rpc(rpc_url: str, method: str, params: list[object], timeout_s: float = 10.0) -> object:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    try:
        return requests.post(rpc_url, json=body, timeout=timeout_s).json().get("result")
    except (requests.RequestException, ValueError, AttributeError):
        return None  # the client's own connect() reports an unreachable RPC with the fix


def client_is_cypherium(rpc_url: str) -> bool:
    """True when the node's `web3_clientVersion` names Cypherium."""
    version = _rpc(rpc_url, "web3_clientVersion", [])
    return isinstance(version, str) and "cypherium" in version.lower()


def is_millisecond_stamp(timestamp: int, now_s: float | None = None) -> bool:
    """True when `timestamp` reads as milliseconds: nearer to now*1000 than to now (in ratio)."""
    now_s = time.time() if now_s is None else now_s
    if timestamp <= 0:
        return False
    # geometric midpoint between seconds and milliseconds: sqrt(1000) ~ 31.6 times now
    return timestamp > now_s * _UNIT_RATIO**0.5


def detect_time_unit_ms(rpc_url: str) -> bool | None:
    """The chain's time unit from its latest produced block; None while only the genesis block exists."""
    block = _rpc(rpc_url, "eth_getBlockByNumber", ["latest", False])
    if not isinstance(block, dict):
        return None
    if int(block.get("number", "0x0"), 16) == 0:
        return None  # Cypherium's genesis block is in seconds even though its chain is not
    return is_millisecond_stamp(int(block["timestamp"], 16))


def resolve_profile(rpc_url: str, name: str | None = AUTO) -> ChainProfile:
    """The profile to talk to `rpc_url` with, its time unit taken from the chain.

    `name` "auto" (or None) picks the profile from the node's client version; a named profile
    keeps its connection settings. Either way what the chain itself shows wins: the time unit
    comes from the latest block when there is a produced one (so a forgotten or wrong profile
    cannot show deadlines 1000x off), else from the profile; a Cypherium node always counts as
    making blocks on demand (schedule by the wall clock).
    """
    cypherium = client_is_cypherium(rpc_url)
    if name in (None, AUTO):
        profile = CYPHERIUM if cypherium else DEVNET
    else:
        profile = get_profile(name)
        if cypherium and not profile.blocks_on_demand:
            # a quiet Cypherium chain's latest block lags the wall clock: without this the node
            # would never send a deadline-driven transition (the stall of issue 10)
            log.warning("profile %s on a Cypherium node: scheduling by the wall clock anyway", profile.name)
            profile = profile.replace(blocks_on_demand=True)
    unit_ms = detect_time_unit_ms(rpc_url)
    if unit_ms is None:
        return profile
    if profile.time_unit_ms is not None and unit_ms != profile.time_unit_ms:
        log.info(
            "the chain's blocks are stamped in %s, not as profile %s assumes: using the chain's unit",
            "milliseconds" if unit_ms else "seconds",
            profile.name,
        )
    return profile.replace(time_unit_ms=unit_ms)
