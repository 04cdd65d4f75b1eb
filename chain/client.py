"""CoordinatorClient: one typed method per coordinator call and view; no raw ABI outside this module."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import requests
from eth_utils import to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError

from chain import diagnose, peer_record
from chain.abi_text import TOLERANT_CODEC
from chain.artifacts import load_artifact
from chain.errors import ChainError, ContractRevert, NotACoordinator
from chain.events import EventDecoder, decode_or_skip
from chain.gas import gas_limit
from chain.profile import DEVNET, ChainProfile
from chain.rpc import MS_THRESHOLD, connect, detect_time_unit_ms, require_code, unreachable
from chain.tx import TxSender, decode_revert
from chain.types import (
    PARAM_NAMES,
    ChainEvent,
    ChainParams,
    GlobalAdapter,
    PeerRecord,
    Phase,
    Proposal,
    ProposalKind,
    ProposalStatus,
    RoundInfo,
    TxResult,
)
from chain.wallet import Wallet

log = logging.getLogger(__name__)

ZERO_ADDRESS = "0x" + "00" * 20
KEEPALIVE_GAS = 21_000  # a plain transfer: the cheapest transaction there is

# The events each state-changing call owes. A transaction counts as done only when one of them,
# from this coordinator, is in its receipt: receipt status alone proves nothing on Cypherium.
EXPECTED_EVENTS: dict[str, tuple[str, ...]] = {
    "join": ("MemberAdded",),
    "publishPeer": ("PeerPublished",),
    "openRound": ("RoundOpened", "Successor"),  # issue 21: a queued hand-over retires instead
    "propose": ("ProposalCreated",),
    "voteProposal": ("ProposalVoted",),
    "commitUpdate": ("UpdateCommitted",),
    "serveRound": ("ServingOnly",),
    "submitAggregate": ("AggregateSubmitted",),
    "vote": ("VoteCast",),
    "finalize": ("RoundFinalized", "AttemptFailed"),
    "advance": ("AggregatorElected", "AttemptFailed", "RoundFailed", "RoundFinalized"),
    "reportMetrics": ("MetricsReported",),
}


def _bytes32(value: bytes | str, what: str) -> bytes:
    """32 bytes from raw bytes or a hex string (with or without 0x)."""
    raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ValueError(f"{what} must be 32 bytes (a sha256), got {len(raw)}")
    return raw


def _addr_or_none(a: str) -> str | None:
    return None if int(a, 16) == 0 else to_checksum_address(a)


class CoordinatorClient:
    """A connection to one Coordinator deployment.

    Connecting checks the chain id (WrongChain), reachability (RpcUnreachable) and that code
    exists at the address (NoContract). Transactions need a wallet; views do not. Transaction
    methods return a `TxResult` with the decoded coordinator events, and count as done only when
    the event the call owes is among them (receipt status is never trusted). A refusal, before
    sending (views) or once mined (no event), raises `ContractRevert` with the contract's reason.
    """

    def __init__(
        self,
        rpc_url: str,
        coordinator_address: str,
        wallet: Wallet | None = None,
        profile: ChainProfile = DEVNET,
        *,
        w3: Web3 | None = None,
    ) -> None:
        self.rpc_url = rpc_url
        self.profile = profile
        self.w3 = w3 if w3 is not None else connect(rpc_url, profile)
        self.w3.codec = TOLERANT_CODEC  # view results are member-written strings too (chain.abi_text)
        self.address = require_code(self.w3, coordinator_address, rpc_url)
        self.contract = self.w3.eth.contract(address=self.address, abi=load_artifact("Coordinator").abi)  # type: ignore[call-overload]
        if w3 is None:  # a new connection: make sure the address is ours before anything else
            self._require_coordinator()
        self._token_abi = load_artifact("RewardToken").abi
        self.decoder = EventDecoder(self.contract)
        self.wallet = wallet
        self._sender = TxSender(self.w3, wallet, profile) if wallet is not None else None
        self._time_unit_ms = profile.time_unit_ms
        self._token: str | None = None
        # check each call against the views before sending it (tests turn this off to exercise
        # the mined-without-effect path)
        self.preflight = True

    # ---------------------------------------------------------------- plumbing

    def with_wallet(self, wallet: Wallet) -> CoordinatorClient:
        """Another client on the same connection, sending from `wallet`."""
        return CoordinatorClient(self.rpc_url, self.address, wallet, self.profile, w3=self.w3)

    @property
    def sender_address(self) -> str:
        if self.wallet is None:
            raise ChainError("this client has no wallet: load one with --key to send transactions")
        return self.wallet.address

    def first_code_block(self, head: int | None = None) -> int | None:
        """The first block at which the coordinator has code (its deployment block), by binary
        search on eth_getCode up to ``head`` (default: the latest block); None where the node keeps
        no historical state (a pruned node)."""
        lo, hi = 0, self.block_number() if head is None else head
        try:
            while lo < hi:
                mid = (lo + hi) // 2
                if len(self.w3.eth.get_code(to_checksum_address(self.address), block_identifier=mid)) > 0:
                    hi = mid
                else:
                    lo = mid + 1
        except Exception as exc:
            log.info("cannot probe the coordinator's historical code (%s)", exc)
            return None
        return lo

    def _require_coordinator(self) -> None:
        """NotACoordinator unless the code at the address answers the Coordinator's identity views
        (another contract, e.g. the reward token, reverts or answers nothing)."""
        try:
            bytes(self.contract.functions.loraConfigHash().call())
            str(self.contract.functions.baseModel().call())
        except (requests.exceptions.RequestException, OSError) as exc:
            raise unreachable(self.rpc_url, exc) from None
        except Exception as exc:
            raise NotACoordinator(
                f"the contract at {self.address} on {self.rpc_url} is not a medfed Coordinator "
                f"({type(exc).__name__}): fix the coordinator address ([chain] coordinator, "
                "--coordinator; deployment.json has it)"
            ) from None

    def _call(self, fn: str, *args: Any) -> Any:
        try:
            return getattr(self.contract.functions, fn)(*args).call()
        except ContractLogicError as exc:
            raise ContractRevert(fn, decode_revert(exc.data, str(exc.message or exc))) from None

    def _transact(self, fn: str, *args: Any) -> TxResult:
        """Send `fn(*args)`: preflight against the views, fixed gas limit, done = its event.

        Raises ContractRevert with the contract's reason when the views show the call would be
        refused (nothing sent) or when the mined transaction lacks its event (tx_hash set).
        """
        if self._sender is None:
            raise ChainError("this client has no wallet: load one with --key to send transactions")
        sender = self._sender.wallet.address
        if self.preflight:
            now = self.earliest_chain_time()
            reason = diagnose.check(self.contract, fn, args, sender, now, preflight=True)
            if reason is not None:
                raise ContractRevert(fn, reason)
        data = self.contract.encode_abi(fn, args=list(args))
        # openRound first applies the changes the members passed during the last round (issue 21)
        queued = int(self._call("queuedCount")) if fn == "openRound" else 0
        gas = gas_limit(fn, len(self._call("members")), len(data) // 2 - 1, queued)
        tx = {"to": self.address, "data": data}
        receipt = self._sender.send(tx, fn, gas=gas)
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        events = self.decode_receipt(receipt)
        if not any(type(e).__name__ in EXPECTED_EVENTS[fn] for e in events):
            raise ContractRevert(fn, self._why_failed(fn, args, tx, receipt, gas), tx_hash)
        log.debug("%s mined in block %d (%d gas)", fn, receipt["blockNumber"], receipt["gasUsed"])
        return TxResult(
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            events=tuple(events),
        )

    def _why_failed(self, fn: str, args: Sequence[Any], tx: dict[str, Any], receipt: Any, gas: int) -> str:
        """The reason a mined call had no effect: the replay's revert reason, else the views."""
        assert self._sender is not None
        block = int(receipt["blockNumber"])
        used = int(receipt["gasUsed"])
        reason = self._sender.replay_reason(tx, block)
        if reason is None:
            ts = int(self.w3.eth.get_block(block)["timestamp"])
            for at in (block, "latest"):  # "latest" where the node keeps no state for old blocks
                try:
                    reason = diagnose.check(self.contract, fn, args, self._sender.wallet.address, ts, at)
                    break
                except Exception as exc:  # state at that block pruned, or the node hiccuped
                    log.debug("diagnosing %s at block %s failed: %s", fn, at, exc)
        if reason is None:
            reason = f"no {'/'.join(EXPECTED_EVENTS[fn])} event; used {used} of {gas} gas " + (
                "(out of gas, or refused without a reason)"
                if used >= gas * 0.95
                else "(state changed before it was mined?)"
            )
        log.info("%s mined in block %d without effect: %s", fn, block, reason)
        return reason

    def earliest_chain_time(self) -> int:
        """A lower bound of the next block's timestamp, in chain units: the latest block's, or,
        on a chain that makes blocks on demand (Cypherium) and has been quiet, the wall clock
        less the profile's clock-skew allowance."""
        latest = self.chain_time()
        if not self.profile.blocks_on_demand:
            return latest  # anvil: tests warp and revert its clock, the wall clock proves nothing
        wall = time.time() - self.profile.clock_skew_s
        return max(latest, int(wall * 1000) if self.time_unit_ms else int(wall))

    def decode_receipt(self, receipt: Any) -> list[ChainEvent]:
        """The coordinator events in a receipt."""
        out = []
        for raw in receipt["logs"]:
            if to_checksum_address(raw["address"]) != self.address:
                continue
            event = decode_or_skip(self.decoder, raw)
            if event is not None:
                out.append(event)
        return out

    # ---------------------------------------------------------------- membership

    def join(self) -> TxResult:
        return self._transact("join")

    def publish_peer(self, peer_id: str, multiaddrs: Sequence[str], display_name: str = "") -> TxResult:
        """Publish this member's libp2p PeerID, listen multiaddrs and optional display name
        (encoded into the one multiaddrs string by chain.peer_record)."""
        if any("," in a for a in multiaddrs):
            raise ValueError("a multiaddr cannot contain a comma")
        return self._transact("publishPeer", peer_id, peer_record.encode(multiaddrs, display_name))

    # ---------------------------------------------------------------- governance (issue 21)

    def propose(
        self, kind: ProposalKind, target: str | None = None, param: int = 0, value: int = 0
    ) -> TxResult:
        """Propose a change (the proposer's yes is counted); see `propose_*` for each kind."""
        addr = to_checksum_address(target) if target else ZERO_ADDRESS
        return self._transact("propose", int(kind), int(param), addr, int(value))

    def propose_add_member(self, member: str) -> TxResult:
        return self.propose(ProposalKind.ADD_MEMBER, member)

    def propose_remove_member(self, member: str) -> TxResult:
        return self.propose(ProposalKind.REMOVE_MEMBER, member)

    def propose_param(self, name: str, value: int) -> TxResult:
        """`name` one of chain.types.PARAM_NAMES; `value` in chain units (durations: see
        `seconds_to_chain`; open_membership: 0 or 1)."""
        if name not in PARAM_NAMES:
            raise ValueError(f"unknown parameter {name!r}: choose one of {', '.join(PARAM_NAMES)}")
        return self.propose(ProposalKind.SET_PARAM, None, PARAM_NAMES.index(name), value)

    def propose_successor(self, coordinator: str) -> TxResult:
        return self.propose(ProposalKind.HAND_OVER, coordinator)

    def vote_proposal(self, proposal_id: int, support: bool) -> TxResult:
        return self._transact("voteProposal", int(proposal_id), bool(support))

    def proposal_count(self) -> int:
        return int(self._call("proposalCount"))

    def proposal(self, proposal_id: int) -> Proposal:
        r = self._call("proposal", int(proposal_id))
        return Proposal(
            id=int(proposal_id),
            kind=ProposalKind(int(r[0])),
            param=int(r[1]),
            target=_addr_or_none(r[2]),
            value=int(r[3]),
            deadline=int(r[4]),
            status=ProposalStatus(int(r[5])),
            yes=int(r[6]),
            no=int(r[7]),
            required=int(r[8]),
        )

    def proposals(self) -> list[Proposal]:
        return [self.proposal(i) for i in range(1, self.proposal_count() + 1)]

    def ballot_of(self, proposal_id: int, address: str) -> bool | None:
        """True yes, False no, None not voted."""
        b = int(self._call("ballotOf", int(proposal_id), to_checksum_address(address)))
        return None if b == 0 else b == 1

    def queued_count(self) -> int:
        return int(self._call("queuedCount"))

    def successor(self) -> str | None:
        """The coordinator the members handed the federation over to, or None."""
        return _addr_or_none(self._call("successor"))

    # ---------------------------------------------------------------- round

    def open_round(self) -> TxResult:
        return self._transact("openRound")

    def commit_update(self, round_: int, sha256: bytes | str, cid: str, num_samples: int) -> TxResult:
        return self._transact("commitUpdate", int(round_), _bytes32(sha256, "sha256"), cid, int(num_samples))

    def serve_round(self, round_: int) -> TxResult:
        """Take part in ``round_`` without an update (issue 20: a spent privacy budget): this
        member may be elected aggregator, votes, and is paid as verifier/aggregator only."""
        return self._transact("serveRound", int(round_))

    def submit_aggregate(
        self,
        round_: int,
        sha256: bytes | str,
        cid: str,
        included: Sequence[str],
        invalid: Sequence[str] = (),
    ) -> TxResult:
        """Submit the aggregate of the `included` committers' updates, naming the committers whose
        updates were found `invalid` (issue 12: they forfeit the round if it is accepted); both are
        sorted into the ascending address order the contract wants."""

        def ordered(addrs: Sequence[str]) -> list[str]:
            return sorted({to_checksum_address(a) for a in addrs}, key=lambda a: int(a, 16))

        return self._transact(
            "submitAggregate",
            int(round_),
            _bytes32(sha256, "sha256"),
            cid,
            ordered(included),
            ordered(invalid),
        )

    def vote(self, round_: int, approve: bool) -> TxResult:
        return self._transact("vote", int(round_), bool(approve))

    def finalize(self, round_: int) -> TxResult:
        return self._transact("finalize", int(round_))

    def advance(self, round_: int) -> TxResult:
        return self._transact("advance", int(round_))

    def report_metrics(self, round_: int, eval_set_hash: bytes | str, accuracy_ppm: int, n: int) -> TxResult:
        return self._transact(
            "reportMetrics", int(round_), _bytes32(eval_set_hash, "eval_set_hash"), int(accuracy_ppm), int(n)
        )

    def send_eth(self, to: str, wei: int) -> TxResult:
        """Plain value transfer (devnet funding)."""
        if self._sender is None:
            raise ChainError("this client has no wallet: load one with --key to send transactions")
        receipt = self._sender.send(
            {"to": to_checksum_address(to), "value": int(wei)}, "send_eth", gas=21_000
        )
        if receipt.get("status") == 0:
            raise ChainError(f"send_eth to {to} failed in block {receipt['blockNumber']}")
        return TxResult(
            "0x" + bytes(receipt["transactionHash"]).hex(),
            int(receipt["blockNumber"]),
            int(receipt["gasUsed"]),
            (),
        )

    def send_keepalive(self) -> TxResult:
        """One cheap legacy transaction (a 0-value transfer to ourselves, 21,000 gas at the
        profile's gasPrice) so that a chain which makes blocks only on demand makes one.

        Waits for the receipt (its block proves the chain is live). Who sends when is the node's
        decision (node/keepalive.py); this only sends.
        """
        if self._sender is None:
            raise ChainError("this client has no wallet: load one with --key to send transactions")
        me = self._sender.wallet.address
        receipt = self._sender.send({"to": me, "value": 0}, "keepalive", gas=KEEPALIVE_GAS)
        return TxResult(
            "0x" + bytes(receipt["transactionHash"]).hex(),
            int(receipt["blockNumber"]),
            int(receipt["gasUsed"]),
            (),
        )

    # ---------------------------------------------------------------- views

    def deployer(self) -> str:
        """Who deployed (and admitted the first members); it has no power left (issue 21)."""
        return str(self._call("deployer"))

    def token_address(self) -> str:
        if self._token is None:
            self._token = to_checksum_address(self._call("token"))
        return self._token

    def base_model(self) -> str:
        return str(self._call("baseModel"))

    def lora_config_hash(self) -> bytes:
        return bytes(self._call("loraConfigHash"))

    def params(self) -> ChainParams:
        p = self._call("params")
        return ChainParams(
            commit_duration=int(p[0]),
            aggregate_duration=int(p[1]),
            verify_duration=int(p[2]),
            max_attempts=int(p[3]),
            min_committers=int(p[4]),
            contributor_reward=int(p[5]),
            aggregator_reward=int(p[6]),
            verifier_reward=int(p[7]),
            open_membership=bool(p[8]),
            voting_period=int(p[9]),
        )

    def is_member(self, address: str) -> bool:
        return bool(self._call("isMember", to_checksum_address(address)))

    def members(self) -> list[str]:
        return [to_checksum_address(a) for a in self._call("members")]

    def member_peer(self, address: str) -> PeerRecord | None:
        """What `address` published with publish_peer, or None."""
        peer_id, addrs = self._call("memberPeer", to_checksum_address(address))
        if not peer_id:
            return None
        multiaddrs, display_name = peer_record.decode(addrs)
        return PeerRecord(to_checksum_address(address), peer_id, multiaddrs, display_name)

    def current_round(self) -> int:
        return int(self._call("currentRound"))

    def round_info(self) -> RoundInfo:
        r = self._call("roundInfo")
        return RoundInfo(
            round=int(r[0]),
            phase=Phase(int(r[1])),
            attempt=int(r[2]),
            n_committers=int(r[3]),
            commit_deadline=int(r[4]),
            aggregate_deadline=int(r[5]),
            verify_deadline=int(r[6]),
            aggregator=_addr_or_none(r[7]),
            approvals=int(r[8]),
            rejections=int(r[9]),
        )

    def aggregator_of(self, round_: int) -> str | None:
        """The live round's aggregator: None for another round, before the commit phase closes
        (deadline, or every member committed), and in the last commit's own block (the election
        needs a later block); between the close and the election, the latest block's prediction."""
        return _addr_or_none(self._call("aggregatorOf", int(round_)))

    def rotation_aggregator(self, round_: int, attempt: int) -> str | None:
        """The aggregator of ``(round, attempt)`` computed here, as the contract's election does:
        seed = keccak256(blockhash(b) || round || n), b = the block of the round's last commit
        (or the latest of b + 256k that blockhash still reaches), first = seed % n, attempt k
        aggregated by committers[(first + k) % n].

        For chains whose latest block lags the wall clock (Cypherium mines only on demand), where
        `aggregator_of` still sees a time before the commit deadline; and for anyone who wants to
        check the election independently. The live round only (None for another).
        """
        committers = self.committers()
        if not committers or round_ != self.current_round():
            return None
        n = len(committers)
        # the draw of the block the election transaction would land in
        return committers[(diagnose.next_block_draw(self.contract, round_, n) + attempt) % n]

    def current_aggregator(self) -> str | None:
        return self.aggregator_of(self.current_round())

    def committers(self) -> list[str]:
        """The live round's committers in commit order."""
        return [to_checksum_address(a) for a in self._call("committers")]

    def servers(self) -> list[str]:
        """The live round's serving-only committers (issue 20), from the contract's storage (no
        view: `ServingOnly` events are the record)."""
        return diagnose.serving_committers(self.contract, len(self._call("committers")))

    def included_members(self) -> list[str]:
        """The members the live attempt's aggregate includes (ascending)."""
        members = (to_checksum_address(a) for a in self._call("includedMembers"))
        return sorted(members, key=lambda a: int(a, 16))

    def has_voted(self, address: str) -> bool:
        return bool(self._call("hasVoted", to_checksum_address(address)))

    def global_adapter(self) -> GlobalAdapter:
        sha, cid, rnd = self._call("globalAdapter")
        return GlobalAdapter(bytes(sha), str(cid), int(rnd))

    def is_finalized(self, round_: int) -> bool:
        return bool(self._call("isFinalized", int(round_)))

    def token_balance(self, address: str) -> int:
        token = self.w3.eth.contract(address=self.token_address(), abi=self._token_abi)  # type: ignore[call-overload]
        return int(token.functions.balanceOf(to_checksum_address(address)).call())

    def eth_balance(self, address: str) -> int:
        return int(self.w3.eth.get_balance(to_checksum_address(address)))

    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

    # ---------------------------------------------------------------- time

    @property
    def time_unit_ms(self) -> bool:
        """True when block.timestamp is in milliseconds (profile setting, else detected once)."""
        if self._time_unit_ms is None:
            self._time_unit_ms = detect_time_unit_ms(self.w3)
        return self._time_unit_ms

    def latest_block(self) -> tuple[int, float]:
        """The latest block's number and when it was made, in unix seconds (whatever the unit:
        Cypherium stamps its genesis block in seconds and produced blocks in milliseconds)."""
        block = self.w3.eth.get_block("latest")
        stamp = int(block["timestamp"])
        return int(block["number"]), stamp / 1000.0 if stamp > MS_THRESHOLD else float(stamp)

    def chain_time(self) -> int:
        """The latest block's timestamp, in chain units."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def seconds_to_chain(self, seconds: float) -> int:
        return round(seconds * 1000) if self.time_unit_ms else round(seconds)

    def chain_to_seconds(self, value: int) -> float:
        return value / 1000.0 if self.time_unit_ms else float(value)
