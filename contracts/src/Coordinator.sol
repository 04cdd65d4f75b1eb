// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import "./RewardToken.sol";

/// @title Coordinator: membership, rounds, commitments, aggregator election, votes and rewards
/// of one medfed federation. Every state change emits an event (the audit log).
/// @dev Gas notes. Only one round is live at a time, so the live round's state sits in fixed,
/// reused slots (rewriting a non-zero slot costs 5k instead of 20k). A committer slot per
/// member is pre-warmed at admission for the same reason. Strings live in events, except the
/// global adapter CID (double-buffered so finalize flips a selector instead of copying) and
/// the peer records. There is no duplicate-hash rule (issue 12, B6): an update file names its
/// author and round in its fixed metadata, every node checks them against the committer, so a
/// copied hash is worthless and must not block its author; commit gas no longer grows with the
/// number of committers. Threat model: docs/threat-model.md.
contract Coordinator {
    uint8 internal constant NONE = 0;
    uint8 internal constant COMMIT = 1;
    uint8 internal constant AGGREGATE = 2;
    uint8 internal constant VERIFY = 3;
    uint8 internal constant FINALIZED = 4;
    uint8 internal constant FAILED = 5;
    uint256 public constant MAX_COMMITTERS = 96;
    // issue 12 (B3): verdicts of an attempt decided by votes (see _decision)
    uint8 internal constant APPROVED = 1;
    uint8 internal constant REJECTED = 2; // two or more rejections: the aggregator is to blame
    uint8 internal constant DISPUTED = 3; // a single rejection, or no vote: nobody is blamed
    uint256 internal constant MASK96 = (uint256(1) << 96) - 1;
    uint256 internal constant SERVING = uint256(1) << 255; // issue 20: in a committer slot
    // issue 21: proposal kinds, statuses (EXPIRED is computed by the views) and ballots
    uint8 internal constant ADD_MEMBER = 1;
    uint8 internal constant REMOVE_MEMBER = 2;
    uint8 internal constant SET_PARAM = 3;
    uint8 internal constant HAND_OVER = 4;
    uint8 internal constant P_OPEN = 1;
    uint8 internal constant P_QUEUED = 2;
    uint8 internal constant P_EXECUTED = 3;
    uint8 internal constant P_REJECTED = 4;
    uint8 internal constant P_VOID = 5;
    uint8 internal constant P_EXPIRED = 6;
    uint8 internal constant BALLOT_YES = 1;
    uint8 internal constant BALLOT_NO = 2;
    uint8 internal constant N_PARAMS = 10; // Params fields in order: commitDuration .. votingPeriod

    struct Params {
        uint64 commitDuration;
        uint64 aggregateDuration;
        uint64 verifyDuration;
        uint8 maxAttempts;
        uint8 minCommitters;
        uint256 contributorReward;
        uint256 aggregatorReward;
        uint256 verifierReward;
        bool openMembership;
        uint64 votingPeriod; // issue 21: how long a proposal is open for votes (chain time units)
    }

    struct Member {
        bool active;
        uint8 commitIdx;
        uint32 commitRound;
        uint32 metricsRound;
        uint32 listIdx;
        uint32 serveRound; // issue 20: the round it took part in serving only (no update)
    }

    struct Peer {
        string peerId;
        string multiaddrs;
    }

    /// Times of the live round (one slot).
    struct RoundTimes {
        uint64 id;
        uint64 commitDeadline;
        uint64 aggregateDeadline;
        uint64 verifyDeadline;
    }

    /// Phase and votes of the live round (one slot). nCommitters counts every committer slot
    /// taken: updates and (issue 20) serving-only members.
    struct RoundState {
        uint8 phase;
        uint8 attempt;
        uint8 nCommitters;
        uint8 approvals;
        uint8 rejections;
        uint8 globalSel;
        uint96 votedMask;
        uint96 approveMask;
    }

    /// Included set of the live attempt, the round that produced the global adapter, the
    /// committer index of the live round's first aggregator, drawn at the election, and the
    /// committers the live attempt's aggregator excluded as INVALID (one slot).
    /// (issue 12: the forfeit mask is gone: forfeits are settled from the attempt log at finalize.)
    struct RoundExtra {
        uint96 includedMask;
        uint32 globalRound;
        uint8 nonzero;
        uint8 firstAggregator;
        uint96 invalidMask; // issue 12: their authors forfeit the round if the attempt is accepted
        uint8 nServers; // issue 20: serving-only committers of the open commit phase (zeroed at its close)
    }

    /// issue 21: the deployer only bootstraps (the initial members); it has no power after the
    /// constructor. Kept for the record.
    address public immutable deployer;
    RewardToken public immutable token;
    bytes32 public immutable loraConfigHash;
    string public baseModel;
    /// issue 21: the parameters the members may change by vote (docs/contract.md, Governance)
    Params internal _p;

    mapping(address => Member) internal _members;
    address[] internal _memberList;
    mapping(address => Peer) internal _peers;

    RoundTimes internal _times;
    RoundState internal _state;
    RoundExtra internal _extra;
    /// committer i of the live round: address | block number of its commit << 160 | SERVING
    /// (issue 12: the block of the last commit seeds the election, see _electionSeed; issue 20:
    /// bit 255 marks a member that serves the round as verifier/aggregator without an update)
    mapping(uint256 => uint256) internal _committerSlot;
    /// issue 12 (B3/B7): attempts of the live round that failed by vote, settled at finalize:
    /// the aggregate's sha256, and approvers | rejecters << 96 | aggregator index << 192 |
    /// verdict << 200 | round << 208 (the round tells stale entries of earlier rounds apart)
    mapping(uint256 => bytes32) internal _attemptSha;
    mapping(uint256 => uint256) internal _attemptVotes;
    mapping(uint256 => uint256) internal _attemptIncluded; // its included mask | invalid mask << 96
    bytes32[2] internal _sha;
    string[2] internal _cid;
    mapping(uint256 => uint256) internal _finalizedBits;

    /// issue 21: a proposal (one slot + its value)
    struct Proposal {
        address target;
        uint64 deadline;
        uint8 kind;
        uint8 param;
        uint8 status;
        uint256 value;
    }

    mapping(uint256 => Proposal) internal _proposals;
    mapping(uint256 => mapping(address => uint8)) internal _ballots; // BALLOT_YES / BALLOT_NO
    uint256 public proposalCount;
    uint256[] internal _queue; // passed while a round was live: applied by the next openRound
    /// The coordinator the members handed the federation over to (zero while this one is in charge).
    address public successor;

    event Deployed(
        address indexed deployer,
        address token,
        bytes32 initialSha256,
        string initialCid,
        string baseModel,
        bytes32 loraConfigHash
    );
    event OpenMembershipSet(bool open);
    event MemberAdded(address indexed member);
    event MemberRemoved(address indexed member);
    event PeerPublished(address indexed member, string peerId, string multiaddrs);
    event RoundOpened(uint256 indexed round, bytes32 baseSha256, string baseCid, uint256 commitDeadline);
    event UpdateCommitted(
        uint256 indexed round, address indexed member, bytes32 sha256, string cid, uint256 numSamples
    );
    /// issue 20: a member takes part in the round without an update (its privacy budget is spent,
    /// or it does not train): it may be elected aggregator, votes, and is paid as verifier and
    /// aggregator like any committer, never as contributor.
    event ServingOnly(uint256 indexed round, address indexed member);
    event AggregatorElected(
        uint256 indexed round, uint256 attempt, address indexed aggregator, uint256 aggregateDeadline
    );
    /// issue 12 (election): the seed of the round's election and the block whose hash made it;
    /// committers[(seed % n + attempt) % n] aggregates attempt `attempt`.
    event ElectionSeed(uint256 indexed round, bytes32 seed, uint256 seedBlock, uint256 firstIndex);
    /// issue 12 (B4/B5): a committer whose update the accepted aggregate left out, with the
    /// aggregator that left it out and why: "invalid" (named in submitAggregate's `invalid`: the
    /// verifiers checked the claim, the member forfeits the round) or "unavailable" (not obtained
    /// in time, or withheld: not punished beyond the lost contributor reward).
    event UpdateExcluded(uint256 indexed round, address indexed member, address indexed aggregator, string reason);
    event AggregateSubmitted(
        uint256 indexed round,
        uint256 attempt,
        address indexed aggregator,
        bytes32 sha256,
        string cid,
        address[] included,
        address[] invalid,
        uint256 verifyDeadline
    );
    event VoteCast(uint256 indexed round, uint256 attempt, address indexed voter, bool approve);
    event AttemptFailed(uint256 indexed round, uint256 attempt, string reason);
    event RoundFinalized(uint256 indexed round, uint256 attempt, bytes32 globalSha256, string globalCid);
    event RoundFailed(uint256 indexed round, uint256 attempts, string reason);
    event RewardPaid(uint256 indexed round, address indexed to, uint256 amount, string role);
    event MetricsReported(
        uint256 indexed round, address indexed member, bytes32 evalSetHash, uint256 accuracyPpm, uint256 n
    );
    // issue 21: governance (see the Governance section below)
    event ProposalCreated(
        uint256 indexed id,
        address indexed proposer,
        uint8 kind,
        uint8 param,
        address target,
        uint256 value,
        uint256 deadline
    );
    event ProposalVoted(
        uint256 indexed id, address indexed voter, bool support, uint256 yes, uint256 no, uint256 required
    );
    /// `queued`: a round was live, so the change waits for the next openRound.
    event ProposalPassed(uint256 indexed id, bool queued);
    event ProposalRejected(uint256 indexed id, uint256 yes, uint256 no);
    event ProposalExecuted(uint256 indexed id);
    /// Passed, but no longer applicable when its turn came (e.g. the member was already removed).
    event ProposalVoid(uint256 indexed id, string reason);
    event ParamChanged(uint8 indexed param, uint256 value);
    /// The members handed the federation over to `coordinator`; this one is retired.
    event Successor(address indexed coordinator, uint256 indexed proposal);

    /// `initialMembers`: the federation's first members, admitted here (issue 21: the only
    /// admission that no vote decides; the deployer has no power afterwards).
    constructor(
        Params memory p,
        address[] memory initialMembers,
        bytes32 initialSha256,
        string memory initialCid,
        string memory baseModel_,
        bytes32 loraConfigHash_
    ) {
        require(p.maxAttempts >= 1, "maxAttempts must be >= 1");
        require(p.minCommitters >= 1, "minCommitters must be >= 1");
        require(
            p.commitDuration > 0 && p.aggregateDuration > 0 && p.verifyDuration > 0 && p.votingPeriod > 0,
            "durations must be > 0"
        );
        require(initialSha256 != bytes32(0), "initial sha256 is empty");
        require(initialMembers.length > 0, "no initial members");
        deployer = msg.sender;
        token = new RewardToken("medfed reward", "MFR");
        _p = p;
        loraConfigHash = loraConfigHash_;
        baseModel = baseModel_;
        // Both buffers hold the initial adapter so later writes rewrite non-zero slots.
        _sha[0] = initialSha256;
        _sha[1] = initialSha256;
        _cid[0] = initialCid;
        _cid[1] = initialCid;
        _extra = RoundExtra(0, 0, 1, 0, 0, 0);
        // issue 12: pre-warm the attempt log (a logged failure then rewrites non-zero slots)
        for (uint256 k = 0; k + 1 < p.maxAttempts; k++) {
            _attemptSha[k] = bytes32(uint256(1));
            _attemptIncluded[k] = 1;
            _attemptVotes[k] = 1;
        }
        emit Deployed(msg.sender, address(token), initialSha256, initialCid, baseModel_, loraConfigHash_);
        for (uint256 i = 0; i < initialMembers.length; i++) _add(initialMembers[i]);
    }

    // ------------------------------------------------------------------ membership

    /// Anyone joins while open membership is on (a parameter the members vote on; devnets).
    function join() external {
        _notRetired();
        require(_p.openMembership, "membership is not open: ask the members to vote you in");
        _add(msg.sender);
    }

    function _checkNew(address who) internal view {
        require(who != address(0), "zero address");
        require(!_members[who].active, "already a member");
    }

    function _add(address who) internal {
        _checkNew(who);
        Member storage m = _members[who];
        m.active = true;
        m.listIdx = uint32(_memberList.length);
        _memberList.push(who);
        uint256 n = _memberList.length - 1;
        if (n < MAX_COMMITTERS && _committerSlot[n] == 0) _committerSlot[n] = 1; // pre-warm
        emit MemberAdded(who);
    }

    function publishPeer(string calldata peerId, string calldata multiaddrs) external {
        require(_members[msg.sender].active, "not a member");
        _peers[msg.sender] = Peer(peerId, multiaddrs);
        emit PeerPublished(msg.sender, peerId, multiaddrs);
    }

    // ------------------------------------------------------------------ rounds

    /// Applies the changes the members passed during the last round first (issue 21); opens
    /// nothing (returns 0) when one of them handed the federation over to a successor.
    function openRound() external returns (uint256 round) {
        _notRetired();
        uint8 phase = _state.phase;
        require(phase == NONE || phase == FINALIZED || phase == FAILED, "previous round not final");
        if (_queue.length > 0) {
            _applyQueue();
            if (successor != address(0)) return 0;
        }
        round = uint256(_times.id) + 1;
        uint64 deadline = uint64(block.timestamp) + _p.commitDuration;
        _times = RoundTimes(uint64(round), deadline, 0, 0);
        uint8 sel = _state.globalSel;
        _state = RoundState(COMMIT, 0, 0, 0, 0, sel, 0, 0);
        emit RoundOpened(round, _sha[sel], _cid[sel], deadline);
    }

    function commitUpdate(uint256 round, bytes32 sha256_, string calldata cid, uint256 numSamples) external {
        _enter(round, 0);
        require(sha256_ != bytes32(0), "empty hash");
        require(numSamples > 0, "numSamples must be > 0");
        emit UpdateCommitted(round, msg.sender, sha256_, cid, numSamples);
    }

    /// issue 20: take part in `round` without an update (a site whose privacy budget is spent, or
    /// that does not train): a committer slot like commitUpdate's, marked serving-only. The member
    /// may be elected aggregator, votes, and is paid as verifier and aggregator; it is never
    /// included nor named invalid, earns no contributor reward, and does not count towards
    /// minCommitters (which counts updates).
    function serveRound(uint256 round) external {
        _enter(round, SERVING);
        _extra.nServers += 1;
        _members[msg.sender].serveRound = uint32(round);
        emit ServingOnly(round, msg.sender);
    }

    /// The committer slot of commitUpdate and serveRound (`serving`: 0 or SERVING).
    function _enter(uint256 round, uint256 serving) internal {
        Member storage m = _members[msg.sender];
        require(m.active, "not a member");
        RoundTimes memory t = _times;
        RoundState storage s = _state;
        require(round == t.id && s.phase == COMMIT, "round is not open for commits");
        require(block.timestamp < t.commitDeadline, "commit deadline passed");
        require(m.commitRound != round, "already committed this round");
        uint256 n = s.nCommitters;
        require(n < MAX_COMMITTERS, "too many committers");
        // issue 12 (B6): no duplicate-hash rule and no loop over earlier committers; the block
        // number rides in the committer slot that is written anyway (it seeds the election)
        _committerSlot[n] = uint256(uint160(msg.sender)) | (block.number << 160) | serving;
        m.commitRound = uint32(round);
        m.commitIdx = uint8(n);
        s.nCommitters = uint8(n + 1);
        // early close (issue 11): the last active member to commit ends the commit phase now by
        // moving the deadline here. The election waits for a later block (anyone's advance, or the
        // aggregator's lazy submit): its seed is this block's hash, unknown until mined (issue 12).
        if (n + 1 >= _memberList.length) _times.commitDeadline = uint64(block.timestamp);
    }

    /// `included`: the committers whose updates the aggregate is made of; `invalid` (issue 12):
    /// the committers whose updates the aggregator obtained with the committed sha256 and found
    /// invalid (bad bytes, out of bounds, bound to another author, round or federation). Both in
    /// ascending address order, disjoint, this round's committers only. Verifiers check every
    /// `invalid` claim like the aggregate itself; the named members forfeit the round if it is
    /// accepted. A committer in neither list was unavailable to the aggregator (not punished).
    function submitAggregate(
        uint256 round,
        bytes32 sha256_,
        string calldata cid,
        address[] calldata included,
        address[] calldata invalid
    ) external {
        _requireLive(round);
        if (_state.phase == COMMIT) _stepOnce(round); // lazy election
        RoundState memory s = _state;
        require(s.phase == AGGREGATE, "round is not in the aggregation phase");
        require(block.timestamp < _times.aggregateDeadline, "aggregate deadline passed");
        require(msg.sender == _committer(_aggregatorIdx(round, s.attempt, s.nCommitters)), "not the elected aggregator");
        require(sha256_ != bytes32(0), "empty hash");
        require(included.length > 0, "included is empty");
        uint256 mask = _maskOf(round, included, false);
        uint256 bad = _maskOf(round, invalid, true);
        require(mask & bad == 0, "an address is both included and invalid");
        uint8 pending = 1 - s.globalSel;
        _sha[pending] = sha256_;
        _cid[pending] = cid;
        _extra.includedMask = uint96(mask);
        // (the slot is written anyway; a second write only when a mask changes, so a submission
        // without invalid claims costs what it did)
        if (bad != 0 || _extra.invalidMask != 0) _extra.invalidMask = uint96(bad);
        uint64 vd = uint64(block.timestamp) + _p.verifyDuration;
        _times.verifyDeadline = vd;
        _state.phase = VERIFY;
        emit AggregateSubmitted(round, s.attempt, msg.sender, sha256_, cid, included, invalid, vd);
    }

    /// The committer mask of `list` (submitAggregate's `included`, or its `invalid` when `inv`):
    /// ascending addresses, each a committer of `round`.
    function _maskOf(uint256 round, address[] calldata list, bool inv) internal view returns (uint256 mask) {
        address prev;
        for (uint256 i = 0; i < list.length; i++) {
            address a = list[i];
            require(
                a > prev,
                inv ? "invalid must be ascending committer addresses" : "included must be ascending committer addresses"
            );
            // the member's slot read once (solc reads it again for every field): active (bits
            // 0-7), commitIdx (8-15), commitRound (16-47), metricsRound, listIdx, serveRound (112-143)
            Member storage m = _members[a];
            uint256 w;
            assembly {
                w := sload(m.slot)
            }
            require(
                uint32(w >> 16) == round,
                inv ? "invalid address did not commit this round" : "included address did not commit this round"
            );
            require(uint32(w >> 112) != round, "a serving-only committer has no update"); // issue 20
            mask |= uint256(1) << uint8(w >> 8);
            prev = a;
        }
    }

    function vote(uint256 round, bool approve) external {
        _requireLive(round);
        RoundState memory s = _state;
        require(s.phase == VERIFY, "round is not in the verification phase");
        require(block.timestamp < _times.verifyDeadline, "verify deadline passed");
        Member storage m = _members[msg.sender];
        require(m.active && m.commitRound == round, "only this round's committers vote");
        uint256 idx = m.commitIdx;
        require(idx != _aggregatorIdx(round, s.attempt, s.nCommitters), "the aggregator does not vote");
        uint96 bit = uint96(1) << uint96(idx);
        require(s.votedMask & bit == 0, "already voted this attempt");
        s.votedMask |= bit;
        if (approve) {
            s.approveMask |= bit;
            s.approvals += 1;
        } else {
            s.rejections += 1;
        }
        _state = s;
        emit VoteCast(round, s.attempt, msg.sender, approve);
    }

    /// Decides the submitted aggregate (early on a quorum, else at the verify deadline).
    function finalize(uint256 round) external {
        _requireLive(round);
        require(_state.phase == VERIFY, "no aggregate awaiting a decision");
        require(_stepOnce(round), "not decidable yet: wait for votes or the verify deadline");
    }

    /// Performs every transition that is due: close commits (deadline, or every member committed) + elect,
    /// aggregator timeout, verify-deadline decision.
    function advance(uint256 round) external {
        _requireLive(round);
        bool changed;
        while (_stepOnce(round)) changed = true;
        require(changed, "nothing to advance yet");
    }

    function reportMetrics(uint256 round, bytes32 evalSetHash, uint256 accuracyPpm, uint256 n) external {
        Member storage m = _members[msg.sender];
        require(m.active, "not a member");
        require(isFinalized(round), "round is not finalized");
        require(round > m.metricsRound, "metrics for this or a later round already reported");
        require(accuracyPpm <= 1_000_000, "accuracyPpm must be <= 1000000");
        m.metricsRound = uint32(round);
        emit MetricsReported(round, msg.sender, evalSetHash, accuracyPpm, n);
    }

    // ------------------------------------------------------------------ internals

    function _requireLive(uint256 round) internal view {
        require(round != 0 && round == _times.id, "not the live round");
    }

    function _committer(uint256 i) internal view returns (address) {
        return address(uint160(_committerSlot[i]));
    }

    /// The block of committer i's commit (the SERVING bit left out).
    function _commitBlock(uint256 i) internal view returns (uint256) {
        return uint64(_committerSlot[i] >> 160);
    }

    /// issue 12 (election): THE aggregator choice. Attempt 0 goes to the committer drawn by the
    /// election seed, each later attempt to the next committer in commit order (so a rejected or
    /// silent aggregator is never asked twice in a row). `round` is unused (kept for the callers).
    function _aggregatorIdx(uint256 round, uint256 attempt, uint256 n) internal view returns (uint256) {
        round;
        return (uint256(_extra.firstAggregator) + attempt) % n;
    }

    /// issue 12 (election): the seed no single member controls: the hash of the block that mined
    /// the round's last commit (unknown to every committer when it sent its commit; fixed once
    /// mined, so whoever closes the phase cannot choose it), mixed with round and committer count.
    /// blockhash reaches back 256 blocks only: later, the block taken is last + 256 * k, the
    /// latest of that series, so a closer that waits gets a new draw only every 256 blocks.
    function _electionSeed(uint256 round, uint256 n) internal view returns (bytes32 seed, uint256 seedBlock) {
        uint256 last = _commitBlock(n - 1);
        seedBlock = block.number > last + 1 ? last + ((block.number - 1 - last) / 256) * 256 : last;
        seed = keccak256(abi.encodePacked(blockhash(seedBlock), round, n));
    }

    /// One due transition; false when nothing is due.
    function _stepOnce(uint256 round) internal returns (bool) {
        RoundTimes memory t = _times;
        RoundState memory s = _state;
        uint256 nowTs = block.timestamp;
        if (s.phase == COMMIT) {
            if (!_commitsClosed(t, s, nowTs)) return false;
            // the seed is the hash of the last commit's block: not readable inside that block
            if (s.nCommitters > 0 && block.number <= _commitBlock(s.nCommitters - 1)) return false;
            uint256 servers = _extra.nServers;
            if (s.nCommitters - servers < _p.minCommitters) { // issue 20: updates only
                _state.phase = FAILED;
                if (servers != 0) _extra.nServers = 0;
                emit RoundFailed(round, 0, "too few commits");
                return true;
            }
            // counted from the close: the deadline, or now when every member committed earlier
            uint64 ad = (nowTs < t.commitDeadline ? uint64(nowTs) : t.commitDeadline) + _p.aggregateDuration;
            _times.aggregateDeadline = ad;
            _state.phase = AGGREGATE;
            // issue 12 (election): draw the first aggregator from the seed, record it
            (bytes32 seed, uint256 seedBlock) = _electionSeed(round, s.nCommitters);
            uint8 first = uint8(uint256(seed) % s.nCommitters);
            _extra.firstAggregator = first;
            if (servers != 0) _extra.nServers = 0;
            emit ElectionSeed(round, seed, seedBlock, first);
            emit AggregatorElected(round, 0, _committer(first), ad);
            return true;
        }
        if (s.phase == AGGREGATE) {
            if (nowTs < t.aggregateDeadline) return false;
            _failAttempt(round, s, "aggregator timeout", 0);
            return true;
        }
        if (s.phase == VERIFY) {
            uint8 d = _decision(s, nowTs >= t.verifyDeadline);
            if (d == 0) return false;
            if (d == APPROVED) _approve(round, s);
            else if (d == REJECTED) _failAttempt(round, s, "rejected", REJECTED);
            else _failAttempt(round, s, "disputed", DISPUTED);
            return true;
        }
        return false;
    }

    /// The commit phase is over at its deadline, or as soon as every active member has committed
    /// (`>=`: a member removed after committing still counts as a committer).
    function _commitsClosed(RoundTimes memory t, RoundState memory s, uint256 nowTs) internal view returns (bool) {
        return nowTs >= t.commitDeadline || (s.nCommitters > 0 && s.nCommitters >= _memberList.length);
    }

    /// 0 undecided, APPROVED, REJECTED (the aggregator is to blame) or DISPUTED (nobody is).
    /// issue 12 (B3): one member's vote never blames anyone. Early: approve on approvals >= 2/3 of
    /// the eligible verifiers; reject on at least TWO rejections that are more than 1/3 of them.
    /// Once every eligible verifier voted, or at the verify deadline: reject on two or more
    /// rejections unless approvals are >= 2/3 of the votes; else approve on any approval; else
    /// (no vote, or one lone rejection) the attempt is disputed: it fails, nobody forfeits.
    /// With 2 committers (1 eligible verifier) a rejection can therefore only dispute.
    function _decision(RoundState memory s, bool pastDeadline) internal pure returns (uint8) {
        uint256 eligible = uint256(s.nCommitters) - 1;
        uint256 a = s.approvals;
        uint256 r = s.rejections;
        if (eligible == 0) return APPROVED; // a lone committer: nobody to verify
        if (a * 3 >= eligible * 2 && a > 0) return APPROVED;
        if (r >= 2 && r * 3 > eligible) return REJECTED;
        uint256 votes = a + r;
        if (!pastDeadline && votes < eligible) return 0;
        if (r >= 2 && a * 3 < votes * 2) return REJECTED;
        if (a > 0) return APPROVED;
        return DISPUTED;
    }

    /// `verdict` REJECTED or DISPUTED: the attempt failed by vote; its hash and votes go to the
    /// attempt log, settled when the round finalizes (_settle). 0: aggregator timeout (a crash is
    /// not misbehaviour: the late aggregator simply earns no aggregator reward).
    function _failAttempt(uint256 round, RoundState memory s, string memory reason, uint8 verdict) internal {
        emit AttemptFailed(round, s.attempt, reason);
        uint8 next = s.attempt + 1;
        uint8 maxAttempts = _p.maxAttempts;
        if (verdict != 0 && next < maxAttempts) { // (a last attempt ends the round: nothing to settle)
            // issue 12 (B3/B7): remember who said what about which hash
            _attemptSha[s.attempt] = _sha[1 - s.globalSel];
            RoundExtra memory x = _extra;
            _attemptIncluded[s.attempt] = uint256(x.includedMask) | (uint256(x.invalidMask) << 96);
            _attemptVotes[s.attempt] =
                uint256(s.approveMask) |
                (uint256(s.votedMask & ~s.approveMask) << 96) |
                (_aggregatorIdx(round, s.attempt, s.nCommitters) << 192) |
                (uint256(verdict) << 200) |
                (round << 208);
        }
        if (next >= maxAttempts) {
            _state = RoundState(FAILED, next, s.nCommitters, 0, 0, s.globalSel, 0, 0);
            emit RoundFailed(round, next, reason);
            return;
        }
        _state = RoundState(AGGREGATE, next, s.nCommitters, 0, 0, s.globalSel, 0, 0);
        uint64 ad = uint64(block.timestamp) + _p.aggregateDuration;
        _times.aggregateDeadline = ad;
        emit AggregatorElected(round, next, _committer(_aggregatorIdx(round, next, s.nCommitters)), ad);
    }

    function _approve(uint256 round, RoundState memory s) internal {
        uint8 sel = 1 - s.globalSel;
        _state = RoundState(FINALIZED, s.attempt, s.nCommitters, s.approvals, s.rejections, sel, s.votedMask, s.approveMask);
        _extra.globalRound = uint32(round);
        _finalizedBits[round >> 8] |= uint256(1) << (round & 0xff);
        emit RoundFinalized(round, s.attempt, _sha[sel], _cid[sel]);
        _payRewards(round, s);
    }

    /// issue 12 (B3/B7): who forfeits, who is paid as aggregator and how many verifier credits
    /// each committer earned, from the accepted attempt and the attempt log. The accepted hash and
    /// its invalid claims are the truth the round settles on (verification is deterministic):
    /// - an earlier attempt with the SAME hash whose invalid claims the accepted attempt also makes
    ///   was right: its aggregator is paid as aggregator, its approvers are credited, its
    ///   rejecters forfeit the round (a claim the accepted attempt does not make is unproven
    ///   either way: the later aggregator may simply not have obtained that update);
    /// - an earlier attempt that is not right was wrong if it was REJECTED (two or more
    ///   rejections), or if it has another hash over exactly the accepted set of updates (the same
    ///   inputs give the same bytes): its aggregator and approvers forfeit the round, its
    ///   rejecters are credited;
    /// - any other DISPUTED attempt: nobody is credited or blamed;
    /// - the accepted attempt: approvers credited, rejecters forfeit the round;
    /// - the accepted attempt's `invalid` committers (their bytes were checked by the verifiers
    ///   who approved) forfeit the round: a hostile update earns its author nothing that round.
    /// A forfeit is total for the round (no contributor, aggregator or verifier reward).
    function _settle(uint256 round, RoundState memory s, bytes32 accepted, uint8[] memory credits)
        internal
        view
        returns (uint256 forfeit, uint256 aggPaid)
    {
        uint256 n = s.nCommitters;
        aggPaid = uint256(1) << _aggregatorIdx(round, s.attempt, n);
        RoundExtra memory x = _extra;
        forfeit = (uint256(s.votedMask) & ~uint256(s.approveMask)) | x.invalidMask;
        _credit(credits, s.approveMask);
        for (uint256 k = 0; k < s.attempt; k++) {
            uint256 v = _attemptVotes[k];
            if (v >> 208 != round) continue; // a timed-out attempt: nothing was logged this round
            uint256 approvers = v & MASK96;
            uint256 rejecters = (v >> 96) & MASK96;
            uint256 agg = (v >> 192) & 0xff;
            uint256 inc = _attemptIncluded[k];
            bool sameSha = _attemptSha[k] == accepted;
            if (sameSha && (inc >> 96) & ~uint256(x.invalidMask) == 0) {
                aggPaid |= uint256(1) << agg;
                forfeit |= rejecters;
                _credit(credits, approvers);
            } else if ((v >> 200) & 0xff == REJECTED || (!sameSha && inc & MASK96 == x.includedMask)) {
                forfeit |= (uint256(1) << agg) | approvers;
                _credit(credits, rejecters);
            }
        }
    }

    function _credit(uint8[] memory credits, uint256 mask) internal pure {
        for (uint256 i = 0; mask != 0; i++) {
            if (mask & 1 == 1) credits[i] += 1;
            mask >>= 1;
        }
    }

    /// Pays the committers of a finalized round as settled by _settle, and records (event) every
    /// committer the accepted aggregate left out and why (issue 12, B4/B5: "invalid" or "unavailable").
    function _payRewards(uint256 round, RoundState memory s) internal {
        uint256 n = s.nCommitters;
        uint256 incl = _extra.includedMask;
        uint8[] memory credits = new uint8[](n);
        // issue 21: the rewards are voted parameters now: read once (one stack slot)
        uint256[3] memory rw = [_p.contributorReward, _p.aggregatorReward, _p.verifierReward];
        (uint256 forfeit, uint256 aggPaid) = _settle(round, s, _sha[1 - s.globalSel], credits);
        address aggregator = _committer(_aggregatorIdx(round, s.attempt, n));
        address[] memory to = new address[](n);
        uint256[] memory amounts = new uint256[](n);
        uint256 k;
        for (uint256 i = 0; i < n; i++) {
            address who = _committer(i);
            // issue 20: a serving-only committer has no update to leave out
            if ((incl >> i) & 1 == 0 && _committerSlot[i] & SERVING == 0)
                // (the invalid mask is read here, for the rare excluded committer: a stack slot less)
                emit UpdateExcluded(
                    round, who, aggregator, (uint256(_extra.invalidMask) >> i) & 1 == 1 ? "invalid" : "unavailable"
                );
            if ((forfeit >> i) & 1 == 1) continue;
            uint256 total;
            if (rw[0] > 0 && (incl >> i) & 1 == 1) {
                total += rw[0];
                emit RewardPaid(round, who, rw[0], "contributor");
            }
            if (rw[1] > 0 && (aggPaid >> i) & 1 == 1) {
                total += rw[1];
                emit RewardPaid(round, who, rw[1], "aggregator");
            }
            if (rw[2] > 0 && credits[i] > 0) {
                total += credits[i] * rw[2];
                emit RewardPaid(round, who, credits[i] * rw[2], "verifier");
            }
            if (total > 0) {
                to[k] = who;
                amounts[k] = total;
                k++;
            }
        }
        if (k == 0) return;
        assembly {
            mstore(to, k)
            mstore(amounts, k)
        }
        token.mintBatch(to, amounts);
    }


    // ------------------------------------------------------------------ governance (issue 21)

    /// A member proposes: ADD_MEMBER / REMOVE_MEMBER `target`, SET_PARAM `param` to `value`, or
    /// HAND_OVER to the coordinator at `target`. The proposer's own yes is counted (except on its
    /// own removal). Open for votes until now + votingPeriod.
    function propose(uint8 kind, uint8 param, address target, uint256 value) external returns (uint256 id) {
        require(_members[msg.sender].active, "not a member");
        _notRetired();
        if (kind == ADD_MEMBER) {
            _checkNew(target);
        } else if (kind == REMOVE_MEMBER) {
            require(_members[target].active, "target is not a member");
            require(_memberList.length >= 3, "a removal needs two other members to vote");
        } else if (kind == SET_PARAM) {
            require(param < N_PARAMS, "unknown parameter");
            require(_validParam(param, value), "value out of range for this parameter");
        } else {
            require(kind == HAND_OVER, "unknown proposal kind");
            require(target != address(this) && target.code.length > 0, "no other coordinator at the successor address");
        }
        id = proposalCount + 1;
        proposalCount = id;
        uint64 deadline = uint64(block.timestamp) + _p.votingPeriod;
        _proposals[id] = Proposal(target, deadline, kind, param, P_OPEN, value);
        emit ProposalCreated(id, msg.sender, kind, param, target, value, deadline);
        if (kind != REMOVE_MEMBER || target != msg.sender) _ballot(id, true);
    }

    /// A member votes on an open proposal before its deadline; the target of a removal does not
    /// vote. The vote that reaches the quorum passes it: applied at once when no round is live,
    /// else queued for the next openRound.
    function voteProposal(uint256 id, bool support) external {
        require(_members[msg.sender].active, "not a member");
        _notRetired();
        require(id != 0 && id <= proposalCount, "no such proposal");
        Proposal storage pr = _proposals[id];
        require(pr.status == P_OPEN, "the proposal is decided");
        require(block.timestamp < pr.deadline, "voting on the proposal closed");
        require(pr.kind != REMOVE_MEMBER || pr.target != msg.sender, "the target of a removal does not vote");
        require(_ballots[id][msg.sender] == 0, "already voted on this proposal");
        _ballot(id, support);
    }

    function _ballot(uint256 id, bool support) internal {
        _ballots[id][msg.sender] = support ? BALLOT_YES : BALLOT_NO;
        Proposal storage pr = _proposals[id];
        (uint256 yes, uint256 no, uint256 eligible) = _tally(pr, id);
        uint256 required = _required(eligible);
        emit ProposalVoted(id, msg.sender, support, yes, no, required);
        if (yes >= required) {
            bool queued = _live();
            emit ProposalPassed(id, queued);
            if (queued) {
                pr.status = P_QUEUED;
                _queue.push(id);
            } else {
                _execute(id);
            }
        } else if (eligible - no < required) {
            pr.status = P_REJECTED;
            emit ProposalRejected(id, yes, no);
        }
    }

    /// Ballots of the CURRENT members (a removed member's ballot no longer counts; a member
    /// admitted since may vote), the removal's target left out; and the quorum: at least 2/3 of
    /// the eligible members, and never fewer than two while the federation has more than one.
    function _tally(Proposal storage pr, uint256 id) internal view returns (uint256 yes, uint256 no, uint256 eligible) {
        address skip = pr.kind == REMOVE_MEMBER ? pr.target : address(0);
        uint256 n = _memberList.length;
        for (uint256 i = 0; i < n; i++) {
            address a = _memberList[i];
            if (a == skip) continue;
            eligible++;
            uint8 b = _ballots[id][a];
            if (b == BALLOT_YES) yes++;
            else if (b == BALLOT_NO) no++;
        }
    }

    function _required(uint256 eligible) internal view returns (uint256 q) {
        q = (eligible * 2 + 2) / 3;
        if (_memberList.length > 1 && q < 2) q = 2;
    }

    function _notRetired() internal view {
        require(successor == address(0), "the federation moved to its successor");
    }

    function _live() internal view returns (bool) {
        uint8 phase = _state.phase;
        return phase == COMMIT || phase == AGGREGATE || phase == VERIFY;
    }

    function _applyQueue() internal {
        uint256 k = _queue.length;
        for (uint256 i = 0; i < k; i++) _execute(_queue[i]);
        delete _queue;
    }

    /// Applies a passed proposal; one that no longer applies is marked void (never reverts: it
    /// runs inside openRound).
    function _execute(uint256 id) internal {
        Proposal storage pr = _proposals[id];
        uint8 kind = pr.kind;
        address t = pr.target;
        if (successor != address(0)) return _void(pr, id, "the federation moved to its successor");
        if (kind == ADD_MEMBER) {
            if (_members[t].active) return _void(pr, id, "already a member");
            _add(t);
        } else if (kind == REMOVE_MEMBER) {
            if (!_members[t].active) return _void(pr, id, "target is not a member");
            if (_memberList.length < 2) return _void(pr, id, "the last member");
            _remove(t);
        } else if (kind == SET_PARAM) {
            _setParam(pr.param, pr.value);
        } else {
            successor = t;
            emit Successor(t, id);
        }
        pr.status = P_EXECUTED;
        emit ProposalExecuted(id);
    }

    function _void(Proposal storage pr, uint256 id, string memory reason) internal {
        pr.status = P_VOID;
        emit ProposalVoid(id, reason);
    }

    function _remove(address who) internal {
        Member storage m = _members[who];
        uint256 idx = m.listIdx;
        address last = _memberList[_memberList.length - 1];
        _memberList[idx] = last;
        _members[last].listIdx = uint32(idx);
        _memberList.pop();
        m.active = false;
        emit MemberRemoved(who);
    }

    /// Ranges a parameter may take (docs/contract.md, Governance).
    function _validParam(uint8 param, uint256 v) internal pure returns (bool) {
        if (param <= 2 || param == 9) return v > 0 && v < 2 ** 63; // durations, votingPeriod
        if (param == 3) return v >= 1 && v <= 16; // maxAttempts
        if (param == 4) return v >= 1 && v <= MAX_COMMITTERS; // minCommitters
        if (param <= 7) return v < 2 ** 128; // rewards
        return v <= 1; // openMembership
    }

    function _setParam(uint8 param, uint256 v) internal {
        if (param == 0) _p.commitDuration = uint64(v);
        else if (param == 1) _p.aggregateDuration = uint64(v);
        else if (param == 2) _p.verifyDuration = uint64(v);
        else if (param == 3) _p.maxAttempts = uint8(v);
        else if (param == 4) _p.minCommitters = uint8(v);
        else if (param == 5) _p.contributorReward = v;
        else if (param == 6) _p.aggregatorReward = v;
        else if (param == 7) _p.verifierReward = v;
        else if (param == 8) {
            _p.openMembership = v == 1;
            emit OpenMembershipSet(v == 1);
        } else _p.votingPeriod = uint64(v);
        emit ParamChanged(param, v);
    }

    /// A proposal as it stands: counts over the current members; status OPEN (1), QUEUED (2,
    /// passed, waiting for the next openRound), EXECUTED (3), REJECTED (4), VOID (5) or EXPIRED
    /// (6: open past its deadline without a quorum).
    function proposal(uint256 id)
        external
        view
        returns (
            uint8 kind,
            uint8 param,
            address target,
            uint256 value,
            uint256 deadline,
            uint8 status,
            uint256 yes,
            uint256 no,
            uint256 required
        )
    {
        require(id != 0 && id <= proposalCount, "no such proposal");
        Proposal storage pr = _proposals[id];
        (yes, no, required) = _tally(pr, id);
        required = _required(required); // (_tally's third value is the eligible count)
        status = pr.status;
        if (status == P_OPEN && block.timestamp >= pr.deadline) status = P_EXPIRED;
        return (pr.kind, pr.param, pr.target, pr.value, pr.deadline, status, yes, no, required);
    }

    function ballotOf(uint256 id, address who) external view returns (uint8) {
        return _ballots[id][who];
    }

    /// How many passed proposals wait for the next openRound.
    function queuedCount() external view returns (uint256) {
        return _queue.length;
    }

    // ------------------------------------------------------------------ views

    function params() external view returns (Params memory) {
        return _p;
    }

    function openMembership() external view returns (bool) {
        return _p.openMembership;
    }

    function isMember(address who) external view returns (bool) {
        return _members[who].active;
    }

    function members() external view returns (address[] memory) {
        return _memberList;
    }

    function memberPeer(address who) external view returns (string memory peerId, string memory multiaddrs) {
        Peer storage p = _peers[who];
        return (p.peerId, p.multiaddrs);
    }

    function currentRound() external view returns (uint256) {
        return _times.id;
    }

    /// The live round as stored (time-driven transitions not yet performed are not reflected;
    /// `aggregator` is the elected one, or the one due once the commit phase has closed).
    function roundInfo()
        external
        view
        returns (
            uint256 round,
            uint8 phase,
            uint256 attempt,
            uint256 nCommitters,
            uint256 commitDeadline,
            uint256 aggregateDeadline,
            uint256 verifyDeadline,
            address aggregator,
            uint256 approvals,
            uint256 rejections
        )
    {
        RoundTimes memory t = _times;
        RoundState memory s = _state;
        return (
            t.id,
            s.phase,
            s.attempt,
            s.nCommitters,
            t.commitDeadline,
            t.aggregateDeadline,
            t.verifyDeadline,
            aggregatorOf(t.id),
            s.approvals,
            s.rejections
        );
    }

    /// The live attempt's aggregator (see _aggregatorIdx); zero before the commit phase closes
    /// (deadline, or every member committed), after a failure, or for another round. Between the
    /// close and the election it is the one the election would draw in the latest block's context
    /// (a prediction: the election transaction decides, see ElectionSeed).
    function aggregatorOf(uint256 round) public view returns (address) {
        RoundTimes memory t = _times;
        RoundState memory s = _state;
        if (round == 0 || round != t.id || s.nCommitters == 0 || s.phase == FAILED) return address(0);
        if (s.phase == COMMIT) {
            if (!_commitsClosed(t, s, block.timestamp) || s.nCommitters - _extra.nServers < _p.minCommitters)
                return address(0);
            if (block.number <= _commitBlock(s.nCommitters - 1)) return address(0); // not drawable yet
            (bytes32 seed, ) = _electionSeed(round, s.nCommitters);
            return _committer(uint256(seed) % s.nCommitters);
        }
        return _committer(_aggregatorIdx(round, s.attempt, s.nCommitters));
    }

    function committers() external view returns (address[] memory out) {
        uint256 n = _state.nCommitters;
        out = new address[](n);
        for (uint256 i = 0; i < n; i++) out[i] = _committer(i);
    }

    /// Members that the live attempt's aggregate includes (empty before a submission).
    function includedMembers() external view returns (address[] memory out) {
        RoundState memory s = _state;
        if (s.phase != VERIFY && s.phase != FINALIZED) return out;
        uint256 mask = _extra.includedMask;
        uint256 n = s.nCommitters;
        address[] memory tmp = new address[](n);
        uint256 k;
        for (uint256 i = 0; i < n; i++) if ((mask >> i) & 1 == 1) tmp[k++] = _committer(i);
        out = new address[](k);
        for (uint256 i = 0; i < k; i++) out[i] = tmp[i];
    }

    function hasVoted(address who) external view returns (bool) {
        Member storage m = _members[who];
        if (m.commitRound != _times.id) return false;
        return (uint256(_state.votedMask) >> m.commitIdx) & 1 == 1;
    }

    /// The current global adapter and the round that produced it (0 = the initial adapter).
    function globalAdapter() external view returns (bytes32 sha256_, string memory cid, uint256 round) {
        uint8 sel = _state.globalSel;
        return (_sha[sel], _cid[sel], _extra.globalRound);
    }

    function isFinalized(uint256 round) public view returns (bool) {
        return (_finalizedBits[round >> 8] >> (round & 0xff)) & 1 == 1;
    }
}
