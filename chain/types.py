"""Typed records of the chain package: round state, parameters, transactions and events."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Phase(enum.IntEnum):
    """Phase of the live round as stored on-chain."""

    NONE = 0
    COMMIT = 1
    AGGREGATE = 2
    VERIFY = 3
    FINALIZED = 4
    FAILED = 5


@dataclass(frozen=True)
class DeployParams:
    """Deployment parameters; durations in SECONDS (converted to the chain's unit at deployment)."""

    commit_duration_s: int = 60
    aggregate_duration_s: int = 60
    verify_duration_s: int = 60
    max_attempts: int = 3
    min_committers: int = 1
    contributor_reward: int = 10 * 10**18
    aggregator_reward: int = 5 * 10**18
    verifier_reward: int = 1 * 10**18
    open_membership: bool = False
    voting_period_s: int = 3600  # issue 21: how long a governance proposal is open for votes


@dataclass(frozen=True)
class ChainParams:
    """Parameters as the contract stores them; durations in chain time units."""

    commit_duration: int
    aggregate_duration: int
    verify_duration: int
    max_attempts: int
    min_committers: int
    contributor_reward: int
    aggregator_reward: int
    verifier_reward: int
    open_membership: bool
    voting_period: int = 0


# issue 21: governance. Proposal kinds and the parameters SET_PARAM may change, in the contract's
# order (the Params fields); the statuses as `proposal(id)` reports them.
class ProposalKind(enum.IntEnum):
    ADD_MEMBER = 1
    REMOVE_MEMBER = 2
    SET_PARAM = 3
    HAND_OVER = 4


PARAM_NAMES: tuple[str, ...] = (
    "commit_duration",
    "aggregate_duration",
    "verify_duration",
    "max_attempts",
    "min_committers",
    "contributor_reward",
    "aggregator_reward",
    "verifier_reward",
    "open_membership",
    "voting_period",
)
DURATION_PARAMS = frozenset({"commit_duration", "aggregate_duration", "verify_duration", "voting_period"})


class ProposalStatus(enum.IntEnum):
    OPEN = 1
    QUEUED = 2  # passed while a round was live: applied by the next openRound
    EXECUTED = 3
    REJECTED = 4
    VOID = 5  # passed, no longer applicable when applied
    EXPIRED = 6


@dataclass(frozen=True)
class Proposal:
    """A governance proposal as the contract reports it (counts over the current members)."""

    id: int
    kind: ProposalKind
    param: int
    target: str | None
    value: int
    deadline: int
    status: ProposalStatus
    yes: int
    no: int
    required: int

    @property
    def param_name(self) -> str:
        return PARAM_NAMES[self.param] if self.param < len(PARAM_NAMES) else str(self.param)

    def describe(self) -> str:
        """One line: what it would do."""
        if self.kind == ProposalKind.ADD_MEMBER:
            return f"add-member {self.target}"
        if self.kind == ProposalKind.REMOVE_MEMBER:
            return f"remove-member {self.target}"
        if self.kind == ProposalKind.SET_PARAM:
            return f"set {self.param_name} {self.value}"
        return f"successor {self.target}"


@dataclass(frozen=True)
class RoundInfo:
    """The live round (`round` 0 = none opened yet). Deadlines in chain time units."""

    round: int
    phase: Phase
    attempt: int
    n_committers: int
    commit_deadline: int
    aggregate_deadline: int
    verify_deadline: int
    aggregator: str | None
    approvals: int
    rejections: int


@dataclass(frozen=True)
class GlobalAdapter:
    """The current global adapter and the round that produced it (0 = the initial adapter)."""

    sha256: bytes
    cid: str
    round: int


@dataclass(frozen=True)
class PeerRecord:
    """What a member published: its libp2p PeerID, multiaddrs and display name (chain.peer_record)."""

    member: str
    peer_id: str
    multiaddrs: tuple[str, ...]
    display_name: str = ""


@dataclass(frozen=True)
class Deployment:
    """A deployed federation."""

    rpc_url: str
    chain_id: int
    coordinator: str
    token: str
    deploy_block: int
    deployer: str  # issue 21: bootstraps the first members, no power afterwards
    time_unit_ms: bool
    members: tuple[str, ...] = ()  # admitted at deployment


# ---------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class ChainEvent:
    """Base of every decoded contract event: where it sits in the chain."""

    block_number: int
    log_index: int
    tx_hash: str

    @property
    def name(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class Deployed(ChainEvent):
    deployer: str
    token: str
    initial_sha256: bytes
    initial_cid: str
    base_model: str
    lora_config_hash: bytes


@dataclass(frozen=True)
class OpenMembershipSet(ChainEvent):
    open: bool


@dataclass(frozen=True)
class MemberAdded(ChainEvent):
    member: str


@dataclass(frozen=True)
class MemberRemoved(ChainEvent):
    member: str


@dataclass(frozen=True)
class PeerPublished(ChainEvent):
    member: str
    peer_id: str
    multiaddrs: tuple[str, ...]
    display_name: str = ""  # from the record's name= entry (chain.peer_record)


@dataclass(frozen=True)
class RoundOpened(ChainEvent):
    round: int
    base_sha256: bytes
    base_cid: str
    commit_deadline: int


@dataclass(frozen=True)
class UpdateCommitted(ChainEvent):
    round: int
    member: str
    sha256: bytes
    cid: str
    num_samples: int


@dataclass(frozen=True)
class ServingOnly(ChainEvent):
    """issue 20: a member takes part in the round without an update (verifier/aggregator only)."""

    round: int
    member: str


@dataclass(frozen=True)
class AggregatorElected(ChainEvent):
    round: int
    attempt: int
    aggregator: str
    aggregate_deadline: int


@dataclass(frozen=True)
class ElectionSeed(ChainEvent):
    """The round's election seed (hash of the last commit's block, mixed with round and count)."""

    round: int
    seed: bytes
    seed_block: int
    first_index: int


@dataclass(frozen=True)
class UpdateExcluded(ChainEvent):
    """A committer the accepted aggregate of ``round`` left out, the aggregator that did, and why:
    "invalid" (claimed in the submission, checked by the verifiers; the member forfeited the round)
    or "unavailable" (not obtained by the aggregator in time; only its contributor reward lost)."""

    round: int
    member: str
    aggregator: str
    reason: str


@dataclass(frozen=True)
class AggregateSubmitted(ChainEvent):
    round: int
    attempt: int
    aggregator: str
    sha256: bytes
    cid: str
    included: tuple[str, ...]
    invalid: tuple[str, ...]  # issue 12: committers the aggregator found invalid (they forfeit)
    verify_deadline: int


@dataclass(frozen=True)
class VoteCast(ChainEvent):
    round: int
    attempt: int
    voter: str
    approve: bool


@dataclass(frozen=True)
class AttemptFailed(ChainEvent):
    round: int
    attempt: int
    reason: str


@dataclass(frozen=True)
class RoundFinalized(ChainEvent):
    round: int
    attempt: int
    global_sha256: bytes
    global_cid: str


@dataclass(frozen=True)
class RoundFailed(ChainEvent):
    round: int
    attempts: int
    reason: str


@dataclass(frozen=True)
class RewardPaid(ChainEvent):
    round: int
    to: str
    amount: int
    role: str


@dataclass(frozen=True)
class MetricsReported(ChainEvent):
    round: int
    member: str
    eval_set_hash: bytes
    accuracy_ppm: int
    n: int


@dataclass(frozen=True)
class ProposalCreated(ChainEvent):
    id: int
    proposer: str
    kind: int
    param: int
    target: str
    value: int
    deadline: int


@dataclass(frozen=True)
class ProposalVoted(ChainEvent):
    id: int
    voter: str
    support: bool
    yes: int
    no: int
    required: int


@dataclass(frozen=True)
class ProposalPassed(ChainEvent):
    id: int
    queued: bool


@dataclass(frozen=True)
class ProposalRejected(ChainEvent):
    id: int
    yes: int
    no: int


@dataclass(frozen=True)
class ProposalExecuted(ChainEvent):
    id: int


@dataclass(frozen=True)
class ProposalVoid(ChainEvent):
    id: int
    reason: str


@dataclass(frozen=True)
class ParamChanged(ChainEvent):
    param: int
    value: int


@dataclass(frozen=True)
class Successor(ChainEvent):
    """The members handed the federation over to `coordinator`; this one is retired."""

    coordinator: str
    proposal: int


EVENT_TYPES: dict[str, type[ChainEvent]] = {
    cls.__name__: cls
    for cls in (
        Deployed,
        OpenMembershipSet,
        MemberAdded,
        MemberRemoved,
        PeerPublished,
        RoundOpened,
        UpdateCommitted,
        ServingOnly,
        AggregatorElected,
        ElectionSeed,
        AggregateSubmitted,
        VoteCast,
        AttemptFailed,
        RoundFinalized,
        RoundFailed,
        RewardPaid,
        UpdateExcluded,
        MetricsReported,
        ProposalCreated,
        ProposalVoted,
        ProposalPassed,
        ProposalRejected,
        ProposalExecuted,
        ProposalVoid,
        ParamChanged,
        Successor,
    )
}


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction and the coordinator events it emitted."""

    tx_hash: str
    block_number: int
    gas_used: int
    events: tuple[ChainEvent, ...]

    def first(self, event_type: type[ChainEvent]) -> ChainEvent | None:
        """The first emitted event of that type, if any."""
        return next((e for e in self.events if isinstance(e, event_type)), None)
