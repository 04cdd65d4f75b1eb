"""`medfed-node propose | proposals | vote-proposal`: the members decide membership, parameters and
a hand-over by vote (issue 21; docs/contract.md, Governance).

Every refusal is explained before anything is sent (chain.diagnose preflight, the same reasons as
the contract's), so it surfaces as one line and exit code 2, also on Cypherium where a mined
refusal is invisible.
"""

from __future__ import annotations

import re
import time

from eth_utils import to_checksum_address

from chain.client import CoordinatorClient
from chain.types import (
    DURATION_PARAMS,
    PARAM_NAMES,
    ProposalCreated,
    ProposalExecuted,
    ProposalPassed,
    ProposalRejected,
    ProposalStatus,
    ProposalVoid,
    ProposalVoted,
    Successor,
    TxResult,
)
from node.errors import ConfigError

ACTIONS = ("add-member", "remove-member", "set", "successor")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_BOOL = {"1": 1, "true": 1, "on": 1, "yes": 1, "0": 0, "false": 0, "off": 0, "no": 0}


def parse_address(text: str, what: str = "address") -> str:
    if not _ADDRESS.fullmatch(text):
        raise ConfigError(f"{what} {text[:60]!r} is not an address: give 0x followed by 40 hex digits")
    return str(to_checksum_address(text.lower()))


def parse_param(name: str) -> str:
    """A parameter name, `commit-duration` or `commit_duration`."""
    key = name.strip().lower().replace("-", "_")
    if key not in PARAM_NAMES:
        names = ", ".join(n.replace("_", "-") for n in PARAM_NAMES)
        raise ConfigError(f"unknown parameter {name[:40]!r}: choose one of {names}")
    return key


def parse_value(client: CoordinatorClient, param: str, text: str) -> int:
    """The chain value of `text`: seconds for durations (converted to the chain's time unit),
    on/off for open-membership, a whole number otherwise (rewards in the token's smallest unit)."""
    raw = text.strip().lower()
    if param == "open_membership":
        if raw not in _BOOL:
            raise ConfigError(f"open-membership {text[:20]!r}: give on or off")
        return _BOOL[raw]
    if not re.fullmatch(r"[0-9]{1,78}", raw):
        raise ConfigError(f"{param.replace('_', '-')} {text[:40]!r}: give a whole number")
    value = int(raw)
    return client.seconds_to_chain(value) if param in DURATION_PARAMS else value


def propose(client: CoordinatorClient, action: str, args: list[str]) -> list[str]:
    """Send one proposal; lines saying what happened to it."""
    if action == "set":
        if len(args) != 2:
            raise ConfigError("propose set takes PARAM VALUE, e.g. `propose set commit-duration 120`")
        param = parse_param(args[0])
        res = client.propose_param(param, parse_value(client, param, args[1]))
    else:
        if len(args) != 1:
            raise ConfigError(f"propose {action} takes one ADDRESS")
        target = parse_address(args[0])
        if action == "add-member":
            res = client.propose_add_member(target)
        elif action == "remove-member":
            res = client.propose_remove_member(target)
        else:
            res = client.propose_successor(target)
    created = res.first(ProposalCreated)
    assert isinstance(created, ProposalCreated)
    lines = [f"proposal {created.id} sent in block {res.block_number} (tx {res.tx_hash})"]
    return lines + outcome_lines(client, int(created.id), res)


def vote(client: CoordinatorClient, proposal_id: int, choice: str) -> list[str]:
    """Cast one ballot; lines saying where the proposal stands."""
    support = {"yes": True, "no": False}.get(choice.lower())
    if support is None:
        raise ConfigError(f"vote {choice[:20]!r}: give yes or no")
    res = client.vote_proposal(proposal_id, support)
    lines = [
        f"voted {choice.lower()} on proposal {proposal_id} in block {res.block_number} (tx {res.tx_hash})"
    ]
    return lines + outcome_lines(client, proposal_id, res)


def outcome_lines(client: CoordinatorClient, proposal_id: int, res: TxResult) -> list[str]:
    """What the transaction did to the proposal (passed, applied, queued, rejected) and the tally."""
    out = []
    voted = res.first(ProposalVoted)
    if isinstance(voted, ProposalVoted):
        out.append(f"tally: {voted.yes} yes, {voted.no} no, {voted.required} needed")
    passed = res.first(ProposalPassed)
    if isinstance(passed, ProposalPassed):
        out.append(
            "passed: queued, applied when the next round opens"
            if passed.queued
            else "passed and applied (no round was live)"
        )
    if isinstance(res.first(ProposalExecuted), ProposalExecuted):
        out.append(f"applied: {client.proposal(proposal_id).describe()}")
    void = res.first(ProposalVoid)
    if isinstance(void, ProposalVoid):
        out.append(f"passed but void: {void.reason}")
    if isinstance(res.first(ProposalRejected), ProposalRejected):
        out.append("rejected: the remaining members can no longer reach the quorum")
    succ = res.first(Successor)
    if isinstance(succ, Successor):
        out.append(f"the federation moved to coordinator {succ.coordinator}: set [chain] coordinator to it")
    return out


def proposal_lines(client: CoordinatorClient, me: str | None = None) -> list[str]:
    """One line per proposal, newest first, with the tally over the current members."""
    succ = client.successor()
    lines = [f"the federation moved to coordinator {succ}"] if succ else []
    proposals = client.proposals()
    if not proposals:
        return [*lines, "no proposals yet (`medfed-node propose ...`)"]
    for p in reversed(proposals):
        status = p.status.name.lower()
        line = f"#{p.id} {p.describe()}: {status}, {p.yes} yes / {p.no} no of {p.required} needed"
        if p.status == ProposalStatus.OPEN:
            left = client.chain_to_seconds(p.deadline) - time.time()
            line += f", voting closes in {max(0, int(left))} s"
        if me is not None:
            ballot = client.ballot_of(p.id, me)
            line += f", you: {'not voted' if ballot is None else 'yes' if ballot else 'no'}"
        lines.append(line)
    return lines
