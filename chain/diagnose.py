"""Why the Coordinator refuses (or refused) a call, worked out from its views.

Cypherium receipts always say `status: 1`, and under its official genesis (pre-Byzantium rules)
a failing `require` is an invalid opcode with no reason string. So the client checks a call
against the contract's own rules before sending it (`preflight`, no gas spent) and, when a mined
transaction lacks the event it owes, works out the reason from the state at that block
(`diagnose`). The checks mirror Coordinator.sol's `require`s, in the same order and with the
same strings, so anvil's revert reason and this module's answer read the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_utils import to_checksum_address
from web3 import Web3

# Phases, as in Coordinator.sol.
NONE, COMMIT, AGGREGATE, VERIFY, FINALIZED, FAILED = range(6)
# Verdicts of Coordinator._decision (0 = undecided).
APPROVED, REJECTED, DISPUTED = 1, 2, 3
MAX_COMMITTERS = 96
ZERO = "0x" + "00" * 20


class _Views:
    """Coordinator views read at one block (cached for one diagnosis)."""

    def __init__(self, contract: Any, block: int | str) -> None:
        self._c = contract
        self._block = block
        self._cache: dict[tuple[Any, ...], Any] = {}

    def __call__(self, fn: str, *args: Any) -> Any:
        key = (fn, *args)
        if key not in self._cache:
            self._cache[key] = getattr(self._c.functions, fn)(*args).call(block_identifier=self._block)
        return self._cache[key]

    def round(self) -> tuple[int, int, int, int, int, int, int, int, int]:
        """(id, phase, attempt, nCommitters, commitDl, aggregateDl, verifyDl, approvals, rejections)"""
        r = self("roundInfo")
        return tuple(int(r[i]) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9))  # type: ignore[return-value]

    def committers(self) -> list[str]:
        return [to_checksum_address(a) for a in self("committers")]

    def params(self) -> Any:
        return self("params")

    def servers(self) -> list[str]:
        """The live round's serving-only committers (issue 20)."""
        key = ("servers",)
        if key not in self._cache:
            self._cache[key] = serving_committers(self._c, self.round()[3], self._block)
        return list(self._cache[key])


def _decision(n_committers: int, approvals: int, rejections: int, past_deadline: bool) -> int:
    """0 undecided, APPROVED, REJECTED or DISPUTED (Coordinator._decision, issue 12 B3)."""
    eligible = n_committers - 1
    a, r = approvals, rejections
    if eligible == 0:
        return APPROVED  # a lone committer: nobody to verify
    if a * 3 >= eligible * 2 and a > 0:
        return APPROVED
    if r >= 2 and r * 3 > eligible:
        return REJECTED
    votes = a + r
    if not past_deadline and votes < eligible:
        return 0
    if r >= 2 and a * 3 < votes * 2:
        return REJECTED
    if a > 0:
        return APPROVED
    return DISPUTED


def _commits_closed(v: _Views, now: int) -> bool:
    """Coordinator._commitsClosed: the commit deadline has passed, or every member committed
    (the last commit moves the deadline to its own block's timestamp)."""
    _, _, _, n, cdl, _, _, _, _ = v.round()
    return now >= cdl or (n > 0 and n >= len(v("members")))


# Storage slot of Coordinator._committerSlot (state variables in declaration order: baseModel,
# _p (5 slots: durations and attempts, three rewards, openMembership and votingPeriod), _members,
# _memberList, _peers, _times, _state, _extra, _committerSlot; immutables and constants take
# none). Its entry i is committer address | commit block << 160 | SERVING (bit 255, issue 20: a
# serving-only member). No view gives the last commit's block, which the election needs, nor which
# committers serve only; tests/chain/test_chain_diagnose.py checks the slot.
COMMITTER_SLOT = 12
SERVING = 1 << 255
BLOCK_BITS = (1 << 64) - 1


def _committer_slot(contract: Any, i: int, block: int | str = "latest") -> int:
    key = Web3.solidity_keccak(["uint256", "uint256"], [i, COMMITTER_SLOT])
    raw = contract.w3.eth.get_storage_at(contract.address, int.from_bytes(key, "big"), block_identifier=block)
    return int.from_bytes(bytes(raw), "big")


def last_commit_block(contract: Any, n: int, block: int | str = "latest") -> int:
    """The block of the live round's n-th (last) commit, read from the contract's storage."""
    return (_committer_slot(contract, n - 1, block) >> 160) & BLOCK_BITS


def serving_committers(contract: Any, n: int, block: int | str = "latest") -> list[str]:
    """The live round's serving-only committers (issue 20) among its first ``n``, from storage."""
    out: list[str] = []
    for i in range(n):
        slot = _committer_slot(contract, i, block)
        if slot & SERVING:
            out.append(to_checksum_address((slot & ((1 << 160) - 1)).to_bytes(20, "big")))
    return out


def next_block_draw(contract: Any, round_: int, n: int) -> int:
    """The first aggregator's index that the election would draw in the next block, as the
    contract's `_electionSeed` does: keccak256(blockhash(b) || round || n) % n, b = the block of
    the round's last commit (or the latest of b + 256k that blockhash still reaches)."""
    w3 = contract.w3
    last, nxt = last_commit_block(contract, n), int(w3.eth.block_number) + 1
    seed_block = last + ((nxt - 1 - last) // 256) * 256 if nxt > last + 1 else last
    block_hash = bytes(w3.eth.get_block(seed_block)["hash"])
    seed = Web3.solidity_keccak(["bytes32", "uint256", "uint256"], [block_hash, round_, n])
    return int.from_bytes(seed, "big") % n


def _drawable(v: _Views, block: int | str) -> bool:
    """The election may run in the transaction's block: one after the last commit's (its hash seeds
    the election, and is unreadable inside it). A transaction still to be sent ("latest") lands
    after every mined commit."""
    n = v.round()[3]
    return block == "latest" or n == 0 or int(block) > last_commit_block(v._c, n, block)


def _elected(v: _Views, block: int | str) -> str | None:
    """The aggregator of the live attempt, or the one the (lazy) election would draw in the
    transaction's block: `aggregatorOf` at a mined block; for "latest", the draw of the next block
    (the views may still see the commit phase open on a quiet chain whose latest block is stale)."""
    rid, phase, _, n, _, _, _, _, _ = v.round()
    a = to_checksum_address(v("aggregatorOf", rid))
    if int(a, 16) != 0 or block != "latest" or n == 0 or phase != COMMIT:
        return None if int(a, 16) == 0 else a
    return v.committers()[next_block_draw(v._c, rid, n)]


def _due(v: _Views, now: int, block: int | str) -> bool:
    """True when `advance` would perform at least one transition at time `now`."""
    _, phase, _, n, _, adl, vdl, a, r = v.round()
    if phase == COMMIT:
        return _commits_closed(v, now) and (n == 0 or _drawable(v, block))
    if phase == AGGREGATE:
        return now >= adl
    if phase == VERIFY:
        return _decision(n, a, r, now >= vdl) != 0
    return False


def check(
    contract: Any,
    fn: str,
    args: Sequence[Any],
    sender: str,
    now: int,
    block: int | str = "latest",
    *,
    preflight: bool = False,
) -> str | None:
    """The contract's reason for refusing `fn(*args)` from `sender` at chain time `now`, or None.

    `preflight`: `now` is only a lower bound of the time the transaction will be mined at, so
    conditions that time can still fulfil ("not due yet") are not reported; those that time
    can only make worse ("deadline passed") are.
    """
    v = _Views(contract, block)
    sender = to_checksum_address(sender)
    if fn in ("propose", "voteProposal"):
        return _check_governance(v, fn, args, sender, now)
    if fn in ("join", "openRound") and int(v("successor"), 16) != 0:
        return RETIRED
    if fn == "join":
        if not v("openMembership"):
            return "membership is not open: ask the members to vote you in"
        return _check_add(v, sender)
    if fn in ("publishPeer", "commitUpdate", "serveRound", "reportMetrics") and not v("isMember", sender):
        return "not a member"
    if fn == "publishPeer":
        return None
    if fn == "openRound":
        return None if v.round()[1] in (NONE, FINALIZED, FAILED) else "previous round not final"
    if fn == "reportMetrics":
        if not v("isFinalized", int(args[0])):
            return "round is not finalized"
        if int(args[2]) > 1_000_000:
            return "accuracyPpm must be <= 1000000"
        return None
    rid, phase, _, n, cdl, _, vdl, approvals, rejections = v.round()
    round_ = int(args[0])
    if fn in ("commitUpdate", "serveRound"):  # Coordinator._enter, then commitUpdate's own checks
        if round_ != rid or phase != COMMIT:
            return "round is not open for commits"
        if now >= cdl:
            return "commit deadline passed"
        if sender in v.committers():
            return "already committed this round"
        if n >= MAX_COMMITTERS:
            return "too many committers"
        if fn == "serveRound":
            return None
        if bytes(args[1]) == bytes(32):
            return "empty hash"
        if int(args[3]) <= 0:
            return "numSamples must be > 0"
        return None
    if round_ == 0 or round_ != rid:
        return "not the live round"
    if fn == "submitAggregate":
        return _check_submit(v, args, sender, now, block, preflight)
    if fn == "vote":
        if phase != VERIFY:
            return "round is not in the verification phase"
        if now >= vdl:
            return "verify deadline passed"
        committers = v.committers()
        if sender not in committers or not v("isMember", sender):
            return "only this round's committers vote"
        if _elected(v, block) == sender:
            return "the aggregator does not vote"
        if v("hasVoted", sender):
            return "already voted this attempt"
        return None
    if fn == "finalize":
        if phase != VERIFY:
            return "no aggregate awaiting a decision"
        if preflight and now < vdl:
            return None  # votes or the deadline may still make it decidable
        if _decision(n, approvals, rejections, now >= vdl) == 0:
            return "not decidable yet: wait for votes or the verify deadline"
        return None
    if fn == "advance":
        if preflight or _due(v, now, block):
            return None
        return "nothing to advance yet"
    return None


RETIRED = "the federation moved to its successor"
PARAM_COUNT = 10  # Coordinator.N_PARAMS
ADD_MEMBER, REMOVE_MEMBER, SET_PARAM, HAND_OVER = 1, 2, 3, 4
P_OPEN = 1


def valid_param(param: int, value: int) -> bool:
    """Coordinator._validParam: the range each parameter may take."""
    if param <= 2 or param == 9:
        return 0 < value < 2**63
    if param == 3:
        return 1 <= value <= 16
    if param == 4:
        return 1 <= value <= MAX_COMMITTERS
    if param <= 7:
        return 0 <= value < 2**128
    return value in (0, 1)


def _check_governance(v: _Views, fn: str, args: Sequence[Any], sender: str, now: int) -> str | None:
    """Coordinator.propose / voteProposal (issue 21)."""
    if not v("isMember", sender):
        return "not a member"
    if int(v("successor"), 16) != 0:
        return RETIRED
    if fn == "voteProposal":
        pid = int(args[0])
        if pid == 0 or pid > int(v("proposalCount")):
            return "no such proposal"
        kind, _, target, _, deadline, status, _, _, _ = v("proposal", pid)
        if int(status) not in (P_OPEN, 6):  # 6: EXPIRED, reported by the view only
            return "the proposal is decided"
        if now >= int(deadline):
            return "voting on the proposal closed"
        if int(kind) == REMOVE_MEMBER and to_checksum_address(target) == sender:
            return "the target of a removal does not vote"
        if int(v("ballotOf", pid, sender)) != 0:
            return "already voted on this proposal"
        return None
    kind, param, target, value = int(args[0]), int(args[1]), to_checksum_address(args[2]), int(args[3])
    if kind == ADD_MEMBER:
        return _check_add(v, target)
    if kind == REMOVE_MEMBER:
        if not v("isMember", target):
            return "target is not a member"
        if len(v("members")) < 3:
            return "a removal needs two other members to vote"
        return None
    if kind == SET_PARAM:
        if param >= PARAM_COUNT:
            return "unknown parameter"
        return None if valid_param(param, value) else "value out of range for this parameter"
    if kind != HAND_OVER:
        return "unknown proposal kind"
    if target == to_checksum_address(v._c.address) or len(v._c.w3.eth.get_code(target)) == 0:
        return "no other coordinator at the successor address"
    return None


def _check_add(v: _Views, who: str) -> str | None:
    if int(who, 16) == 0:
        return "zero address"
    if v("isMember", who):
        return "already a member"
    return None


def _check_submit(
    v: _Views, args: Sequence[Any], sender: str, now: int, block: int | str, preflight: bool
) -> str | None:
    _, phase, _, n, cdl, adl, _, _, _ = v.round()
    if phase == COMMIT:
        # the contract elects lazily once the commit phase has closed (deadline, or every member
        # committed) and the block is a later one than the last commit's
        if not _commits_closed(v, now) or not _drawable(v, block):
            return None if preflight else "round is not in the aggregation phase"
        if n - len(v.servers()) < int(v.params()[4]):  # minCommitters counts updates (issue 20)
            return "round is not in the aggregation phase"
        phase, adl = AGGREGATE, min(now, cdl) + int(v.params()[1])
    if phase != AGGREGATE:
        return "round is not in the aggregation phase"
    if now >= adl:
        return "aggregate deadline passed"
    if _elected(v, block) != sender:
        return "not the elected aggregator"
    committers = v.committers()
    if bytes(args[1]) == bytes(32):
        return "empty hash"
    included = [to_checksum_address(a) for a in args[3]]
    if not included:
        return "included is empty"
    invalid = [to_checksum_address(a) for a in args[4]] if len(args) > 4 else []
    servers = v.servers()
    for what, addrs in (("included", included), ("invalid", invalid)):
        prev = 0
        for a in addrs:
            if int(a, 16) <= prev:
                return f"{what} must be ascending committer addresses"
            if a not in committers:
                return f"{what} address did not commit this round"
            if a in servers:
                return "a serving-only committer has no update"
            prev = int(a, 16)
    if set(included) & set(invalid):
        return "an address is both included and invalid"
    return None
