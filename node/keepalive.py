"""Keep a chain that makes blocks only on demand (Cypherium) live while the federation is idle.

Cypherium makes a block only while a transaction is pending, and a one-member committee that has
made no block for about 3 minutes answers the next transaction with a view change, after which it
makes one block per ~120 s until its operator restarts it: a round opened after a long idle phase
then has its commits mined past the commit deadline and fails "too few commits". A member cannot
restart the chain, and once the slow mode has begun no transaction ends it, so the only remedy a
member has is prevention: when the latest block is older than ``[chain] keepalive_s`` (60 s by
default on such a chain, off on anvil), one member sends one 0-value transfer to itself.

Members take turns without talking to each other: each reads the same latest block, and the
member ``(rank - block number) mod members`` places after the first sends at ``keepalive_s +
place * SPACING_S``, re-reading the latest block right before it sends. The first turn's
keepalive is mined long before the next member's turn (a block takes ~2 s), so one transaction per
idle minute is sent by the whole federation, and the next block number hands the next idle minute
to the next member (the gas is shared); a member that is down only delays the keepalive by
SPACING_S.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import trio

from chain.profile import ChainProfile
from node.outage import OutageLog, rpc_unreachable

if TYPE_CHECKING:
    from node.context import Node

log = logging.getLogger("medfed.node")

DEFAULT_KEEPALIVE_S = 60.0  # well inside the ~180 s after which a one-member committee slows down
SPACING_S = 10.0  # between members' turns: a keepalive is mined in ~2 s on a live chain
SLOW_S = 30.0  # a keepalive mined later than this means the chain is already slow
RETRY_S = 10.0  # after a failed look at the chain or a failed keepalive


def keepalive_interval(configured: float | None, profile: ChainProfile) -> float:
    """Seconds of chain silence after which a keepalive is due; 0 = never.

    ``configured`` is ``[chain] keepalive_s`` (None: "auto" = DEFAULT_KEEPALIVE_S on a chain that
    makes blocks only on demand, off elsewhere: anvil and Ethereum make blocks by themselves)."""
    if configured is None:
        return DEFAULT_KEEPALIVE_S if profile.blocks_on_demand else 0.0
    return max(0.0, configured)


def place(rank: int, members: int, block_number: int) -> int:
    """This member's place in the queue for the idle phase after block ``block_number``."""
    return (rank - block_number) % max(1, members)


def due_after(keepalive_s: float, place_: int, spacing_s: float = SPACING_S) -> float:
    """Age of the latest block (seconds) at which the member at ``place_`` sends a keepalive."""
    return keepalive_s + place_ * spacing_s


async def keep_chain_live(node: Node, keepalive_s: float, spacing_s: float = SPACING_S) -> None:
    """Forever: send a keepalive when it is this member's turn and the chain is still silent."""
    if keepalive_s <= 0:
        return
    log.info("keepalive: a transaction when the chain has made no block for %.0f s", keepalive_s)
    failing = OutageLog(log, "keepalive: sending one", state="failing")  # no ETH for gas: once a minute
    while True:
        try:
            number, made = await node.chain(node.client.latest_block)
        except Exception as exc:  # a hiccup: the round machine reports chain trouble itself
            log.debug("keepalive: cannot read the latest block: %r", exc)
            await trio.sleep(RETRY_S)
            continue
        age = node.now() - made
        due = due_after(keepalive_s, place(node.rank(), len(node.members), number), spacing_s)
        if age < due:
            # look again when it is due (the block may be newer by then); at least every keepalive_s
            await trio.sleep(min(due - age, keepalive_s) + min(0.5, spacing_s / 4))
            continue
        await _send(node, number, age, failing)


async def _send(node: Node, number: int, age: float, failing: OutageLog) -> None:
    """Send one keepalive and wait for its block, outside the node's chain lock (TxSender keeps
    the nonces in order), so the round machine is not held up if the chain is slow."""
    t0 = time.monotonic()
    try:
        tx = await trio.to_thread.run_sync(node.client.send_keepalive)
    except Exception as exc:  # no ETH for gas, node down: said once, then once a minute; retried
        if not rpc_unreachable(exc):  # an outage is the round machine's line to say
            failing.failed(exc)
        await trio.sleep(RETRY_S)
        return
    failing.ok()
    took = time.monotonic() - t0
    if node.monitor is not None:
        node.monitor.kept_alive(took)
    log.info(
        "keepalive: no block for %.0f s after block %d; sent %s, mined in block %d after %.1f s",
        age,
        number,
        tx.tx_hash,
        tx.block_number,
        took,
    )
    if took > SLOW_S:
        log.warning(
            "keepalive: the chain took %.0f s to make a block: it may be in Cypherium's slow-block "
            "mode (a view change after ~3 idle minutes); ask its operators to restart it "
            "(docs/troubleshooting.md)",
            took,
        )
