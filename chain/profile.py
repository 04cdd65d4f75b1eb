"""Chain profiles: what differs between the anvil devnet and Cypherium."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ChainProfile:
    """Connection and transaction settings for one kind of chain.

    `time_unit_ms`: True/False pins the unit of `block.timestamp`; None detects it from the
    latest block. `poa_extra_data` injects web3's extra-data middleware (Cypherium's genesis block
    carries extraData longer than 32 bytes; produced blocks carry none). Gas is always set
    explicitly: coordinator calls use the fixed limits of chain/gas.py (an estimate at a stale
    block would refuse due transitions); only the deployment estimates (`gas_margin`,
    `gas_extra`), with the single argument Cypherium's eth_estimateGas accepts.
    """

    name: str
    chain_id: int
    gas_price_wei: int
    poa_extra_data: bool
    time_unit_ms: bool | None
    # The chain makes blocks only while transactions are pending, stamped by the producer's wall
    # clock (Cypherium): the latest block can lag far behind, and the next one will be stamped
    # about now. The client's preflight then takes the wall clock, less `clock_skew_s`, as the
    # earliest time the next block can have. Off for anvil, whose clock tests warp and revert.
    blocks_on_demand: bool = False
    clock_skew_s: float = 2.0
    gas_margin: float = 1.3
    gas_extra: int = 30_000
    tx_timeout_s: float = 60.0
    poll_interval_s: float = 0.05
    log_page_size: int = 2_000
    rpc_timeout_s: float = 10.0

    def replace(self, **changes: object) -> ChainProfile:
        """A copy with some fields changed (e.g. another gas price)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


DEVNET = ChainProfile(
    name="devnet",
    chain_id=16166,
    gas_price_wei=1_000_000_000,
    poa_extra_data=False,
    time_unit_ms=False,
)

CYPHERIUM = ChainProfile(
    name="cypherium",
    chain_id=16166,
    gas_price_wei=1_000_000_000,
    poa_extra_data=True,
    time_unit_ms=True,
    blocks_on_demand=True,
    tx_timeout_s=120.0,
    poll_interval_s=0.5,
    log_page_size=1_000,
    rpc_timeout_s=30.0,
)

PROFILES: dict[str, ChainProfile] = {"devnet": DEVNET, "cypherium": CYPHERIUM}


def get_profile(name: str) -> ChainProfile:
    """The profile called `name`; ValueError naming the choices otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown chain profile {name!r}: choose one of {', '.join(sorted(PROFILES))}"
        ) from None
