"""Manual check (issue 12): one round of the coordinator's issue-12 rules on a real Cypherium node.

    ../shared/cypherium/start.sh /tmp/cy --genesis istanbul      # prints rpc=URL
    python scripts/cypherium_dishonest_round.py URL
    ../shared/cypherium/stop.sh /tmp/cy

Two members commit the same hash (no duplicate-hash rule), the election seed is drawn from the
last commit's block hash (recomputed client-side), the aggregate leaves one member out
(UpdateExcluded), one verifier approves and one vetoes (3 members: approved, the vetoer
forfeits). Prints the gas of each call and ends with "CYPHERIUM OK".
"""

from __future__ import annotations

import hashlib
import sys
import time

from chain.client import CoordinatorClient
from chain.deploy import deploy_federation
from chain.errors import ContractRevert
from chain.profile import CYPHERIUM
from chain.types import (
    AggregatorElected,
    DeployParams,
    ElectionSeed,
    RoundFinalized,
    TxResult,
    UpdateExcluded,
)
from chain.wallet import Wallet
from localnet.chain import new_account

# the chain's funded test account (a well-known public test key, see ../shared/cypherium/README.md)
ADMIN = Wallet(
    address="0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    private_key=bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"),
)


def sha(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def main(rpc: str) -> int:
    p = DeployParams(
        commit_duration_s=12,
        aggregate_duration_s=60,
        verify_duration_s=60,
        max_attempts=3,
        min_committers=1,
        contributor_reward=10,
        aggregator_reward=5,
        verifier_reward=1,
    )
    dep = deploy_federation(rpc, ADMIN, p, sha("init"), "cid", "tiny", sha("cfg"), CYPHERIUM)
    boss = CoordinatorClient(rpc, dep.coordinator, ADMIN, CYPHERIUM)
    ws = [new_account() for _ in range(3)]
    for w in ws:
        boss.send_eth(w.address, 10**18)
        boss.add_member(w.address)
    m = [CoordinatorClient(rpc, dep.coordinator, w, CYPHERIUM) for w in ws]
    boss.open_round()
    r = boss.current_round()
    gas: dict[str, object] = {}
    gas["commit"] = [
        m[0].commit_update(r, sha("u0"), "c", 5).gas_used,
        m[1].commit_update(r, sha("u0"), "c", 5).gas_used,  # the same hash: accepted now
        m[2].commit_update(r, sha("u2"), "c", 5).gas_used,
    ]
    time.sleep(13)
    res: TxResult | None = None
    for _ in range(20):
        try:
            boss.send_eth(ws[0].address, 1)  # mine a block: Cypherium views see the latest block only
            res = boss.advance(r)
            break
        except ContractRevert as exc:
            print("advance:", exc)
            time.sleep(1)
    assert res is not None
    seed = res.first(ElectionSeed)
    elected = res.first(AggregatorElected)
    assert isinstance(seed, ElectionSeed) and isinstance(elected, AggregatorElected)
    print("seed", seed.seed.hex()[:16], "block", seed.seed_block, "aggregator", elected.aggregator)
    assert boss.rotation_aggregator(r, 0) == elected.aggregator
    agg = next(c for c in m if c.sender_address == elected.aggregator)
    inc = sorted([w.address for w in ws if w.address != ws[1].address], key=lambda a: int(a, 16))
    gas["submit"] = agg.submit_aggregate(r, sha("agg"), "c", inc).gas_used
    voters = [c for c in m if c is not agg]
    gas["vote"] = [voters[0].vote(r, True).gas_used, voters[1].vote(r, False).gas_used]
    boss.send_eth(ws[0].address, 1)
    fin = boss.finalize(r)
    gas["finalize"] = fin.gas_used
    assert fin.first(RoundFinalized) is not None
    assert [e.member for e in fin.events if isinstance(e, UpdateExcluded)] == [ws[1].address]
    expected = {}
    for c in m:
        a = c.sender_address
        expected[a] = (10 if a in inc else 0) + (5 if c is agg else 0) + (1 if c is voters[0] else 0)
    expected[voters[1].sender_address] = 0  # vetoed the accepted aggregate: forfeits the round
    balances = [boss.token_balance(w.address) for w in ws]
    print("balances", balances, "gas", gas)
    assert balances == [expected[w.address] for w in ws], expected
    print("CYPHERIUM OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
