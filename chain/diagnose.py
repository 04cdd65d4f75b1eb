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

# Phases, as in Coordinator.sol.
NONE, COMMIT, AGGREGATE, VERIFY, FINALIZED, FAILED = range(6)


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


def _decision(n_committers: int, approvals: int, rejections: int, past_deadline: bool) -> int:
    """0 undecided, 1 approve, 2 reject (Coordinator._decision)."""
    eligible = n_committers - 1
    if approvals * 3 >= eligible * 2 and (approvals > 0 or eligible == 0):
        return 1
    if rejections * 3 > eligible:
        return 2
    if not past_deadline:
        return 0
    votes = approvals + rejections
    return 1 if votes > 0 and approvals * 3 >= votes * 2 else 2


def _commits_closed(v: _Views, now: int) -> bool:
    """Coordinator._commitsClosed: the commit deadline has passed, or every member committed."""
    _, _, _, n, cdl, _, _, _, _ = v.round()
    return now >= cdl or (n > 0 and n >= len(v("members")))


def _due(v: _Views, now: int) -> bool:
    """True when `advance` would perform at least one transition at time `now`."""
    _, phase, _, n, _, adl, vdl, a, r = v.round()
    if phase == COMMIT:
        return _commits_closed(v, now)
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
    if fn in ("addMember", "removeMember", "setOpenMembership"):
        if to_checksum_address(v("admin")) != sender:
            return "only the admin"
        if fn == "addMember":
            return _check_add(v, to_checksum_address(args[0]))
        if fn == "removeMember" and not v("isMember", to_checksum_address(args[0])):
            return "not a member"
        return None
    if fn == "join":
        if not v("openMembership"):
            return "membership is not open: ask the admin to add you"
        return _check_add(v, sender)
    if fn in ("publishPeer", "commitUpdate", "reportMetrics") and not v("isMember", sender):
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
    rid, phase, attempt, n, cdl, _, vdl, approvals, rejections = v.round()
    round_ = int(args[0])
    if fn == "commitUpdate":
        if round_ != rid or phase != COMMIT:
            return "round is not open for commits"
        if now >= cdl:
            return "commit deadline passed"
        if sender in v.committers():
            return "already committed this round"
        if bytes(args[1]) == bytes(32):
            return "empty hash"
        if int(args[3]) <= 0:
            return "numSamples must be > 0"
        return None
    if round_ == 0 or round_ != rid:
        return "not the live round"
    if fn == "submitAggregate":
        return _check_submit(v, args, sender, now, preflight)
    if fn == "vote":
        if phase != VERIFY:
            return "round is not in the verification phase"
        if now >= vdl:
            return "verify deadline passed"
        committers = v.committers()
        if sender not in committers or not v("isMember", sender):
            return "only this round's committers vote"
        if committers.index(sender) == (round_ + attempt) % n:
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
        if preflight or _due(v, now):
            return None
        return "nothing to advance yet"
    return None


def _check_add(v: _Views, who: str) -> str | None:
    if int(who, 16) == 0:
        return "zero address"
    if v("isMember", who):
        return "already a member"
    return None


def _check_submit(v: _Views, args: Sequence[Any], sender: str, now: int, preflight: bool) -> str | None:
    rid, phase, attempt, n, cdl, adl, _, _, _ = v.round()
    if phase == COMMIT:
        # the contract elects lazily once the commit phase has closed (deadline, or all committed)
        if not _commits_closed(v, now):
            return None if preflight else "round is not in the aggregation phase"
        if n < int(v.params()[4]):
            return "round is not in the aggregation phase"
        phase, adl = AGGREGATE, min(now, cdl) + int(v.params()[1])
    if phase != AGGREGATE:
        return "round is not in the aggregation phase"
    if now >= adl:
        return "aggregate deadline passed"
    committers = v.committers()
    if committers[(rid + attempt) % n] != sender:
        return "not the elected aggregator"
    if bytes(args[1]) == bytes(32):
        return "empty hash"
    included = [to_checksum_address(a) for a in args[3]]
    if not included:
        return "included is empty"
    prev = 0
    for a in included:
        if int(a, 16) <= prev:
            return "included must be ascending committer addresses"
        if a not in committers:
            return "included address did not commit this round"
        prev = int(a, 16)
    return None
