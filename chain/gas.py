"""Per-function gas limits of the Coordinator, measured by `python bench/gas.py --table`.

Transactions to the coordinator are sent with these limits, never with an `eth_estimateGas`
result: on a chain that makes blocks only while transactions are pending (Cypherium), the
estimate runs against a stale block whose timestamp has not reached the deadline yet, so a due
transition (advance, election, submitAggregate, finalize) would be refused forever and the
chain would never move. A limit is `(base + per_committer * n + per_byte * calldata) * MARGIN`,
where `n` is the number of members (an upper bound of the round's committers). The figures are
the worst of both rule sets (anvil Istanbul, Cypherium pre-Byzantium) with the committed
artifact. On pre-Byzantium rules a refused call consumes its whole limit, so limits are kept
tight rather than huge.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GasRule:
    """Measured worst-case gas of one function: a constant, per committer and per calldata byte."""

    base: int
    per_committer: int = 0
    per_byte: int = 0
    per_item: int = 0  # per queued governance change (openRound applies them, issue 21)
    all_members: bool = False  # per_committer counts every member, not at most MAX_COMMITTERS


MARGIN = 1.25
EXTRA = 25_000
MAX_COMMITTERS = 96  # Coordinator.MAX_COMMITTERS

# Measured with `python bench/gas.py --table --cypherium` on the merged contract (worst over
# anvil istanbul with 3, 8, 16 and 96 members and the real Cypherium node under both geneses with
# 3 and 8; headroom x1.5 or more everywhere, docs/contract.md "Gas limits"); per_byte covers
# calldata plus strings logged or stored.
GAS_RULES: dict[str, GasRule] = {
    "join": GasRule(115_000),
    # issue 21: a ballot tallies the current members and may apply the change at once (an
    # admission is the dearest); openRound applies each queued change (per_item)
    "propose": GasRule(190_000, per_committer=3_000, all_members=True),
    "voteProposal": GasRule(190_000, per_committer=3_500, all_members=True),
    "publishPeer": GasRule(40_000, per_byte=800),
    "openRound": GasRule(80_000, per_item=120_000),
    "commitUpdate": GasRule(65_000, per_byte=100),  # flat: no loop over committers (issue 12)
    "serveRound": GasRule(65_000),  # issue 20: commitUpdate's slot, no strings
    "submitAggregate": GasRule(110_000, per_committer=4_000, per_byte=100),
    "vote": GasRule(40_000),
    "finalize": GasRule(200_000, per_committer=45_000),
    "advance": GasRule(200_000, per_committer=45_000),
    "reportMetrics": GasRule(40_000),
}


def gas_limit(function: str, n_members: int, calldata_bytes: int = 0, items: int = 0) -> int:
    """The gas limit to send `function` with, for a federation of `n_members` (and `items`
    queued governance changes, for openRound)."""
    rule = GAS_RULES[function]
    n = max(n_members, 1) if rule.all_members else min(max(n_members, 1), MAX_COMMITTERS)
    units = rule.base + rule.per_committer * n + rule.per_byte * calldata_bytes + rule.per_item * items
    return int(units * MARGIN) + EXTRA
