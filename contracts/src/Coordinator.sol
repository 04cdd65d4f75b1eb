// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import "./RewardToken.sol";

/// @title Coordinator: membership, rounds, commitments, aggregator election, votes and rewards
/// of one medfed federation. Every state change emits an event (the audit log).
/// @dev Gas notes. Only one round is live at a time, so the live round's state sits in fixed,
/// reused slots (rewriting a non-zero slot costs 5k instead of 20k). A committer slot per
/// member is pre-warmed at admission for the same reason. Strings live in events, except the
/// global adapter CID (double-buffered so finalize flips a selector instead of copying) and
/// the peer records. Duplicate hashes are detected on the top 80 bits of the sha256
/// (the full hash is in the event); a second preimage on 80 bits is out of reach.
contract Coordinator {
    uint8 internal constant NONE = 0;
    uint8 internal constant COMMIT = 1;
    uint8 internal constant AGGREGATE = 2;
    uint8 internal constant VERIFY = 3;
    uint8 internal constant FINALIZED = 4;
    uint8 internal constant FAILED = 5;
    uint256 public constant MAX_COMMITTERS = 96;

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
    }

    struct Member {
        bool active;
        uint8 commitIdx;
        uint32 commitRound;
        uint32 metricsRound;
        uint32 listIdx;
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

    /// Phase and votes of the live round (one slot).
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

    /// Included set of the live attempt, the round that produced the global adapter, and the
    /// committers of the live round whose aggregate was rejected (paid nothing for the round;
    /// cleared whenever the round ends) (one slot).
    struct RoundExtra {
        uint96 includedMask;
        uint32 globalRound;
        uint8 nonzero;
        uint96 forfeitMask;
    }

    address public immutable admin;
    RewardToken public immutable token;
    uint64 internal immutable commitDuration;
    uint64 internal immutable aggregateDuration;
    uint64 internal immutable verifyDuration;
    uint8 internal immutable maxAttempts;
    uint8 internal immutable minCommitters;
    uint256 internal immutable contributorReward;
    uint256 internal immutable aggregatorReward;
    uint256 internal immutable verifierReward;
    bytes32 public immutable loraConfigHash;
    string public baseModel;
    bool public openMembership;

    mapping(address => Member) internal _members;
    address[] internal _memberList;
    mapping(address => Peer) internal _peers;

    RoundTimes internal _times;
    RoundState internal _state;
    RoundExtra internal _extra;
    /// committer i of the live round: address | verifier credits << 160 | sha256 top 80 bits << 176
    mapping(uint256 => uint256) internal _committerSlot;
    bytes32[2] internal _sha;
    string[2] internal _cid;
    mapping(uint256 => uint256) internal _finalizedBits;

    event Deployed(
        address indexed admin,
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
    event AggregatorElected(
        uint256 indexed round, uint256 attempt, address indexed aggregator, uint256 aggregateDeadline
    );
    event AggregateSubmitted(
        uint256 indexed round,
        uint256 attempt,
        address indexed aggregator,
        bytes32 sha256,
        string cid,
        address[] included,
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

    constructor(
        Params memory p,
        bytes32 initialSha256,
        string memory initialCid,
        string memory baseModel_,
        bytes32 loraConfigHash_
    ) {
        require(p.maxAttempts >= 1, "maxAttempts must be >= 1");
        require(p.minCommitters >= 1, "minCommitters must be >= 1");
        require(p.commitDuration > 0 && p.aggregateDuration > 0 && p.verifyDuration > 0, "durations must be > 0");
        require(initialSha256 != bytes32(0), "initial sha256 is empty");
        admin = msg.sender;
        token = new RewardToken("medfed reward", "MFR");
        commitDuration = p.commitDuration;
        aggregateDuration = p.aggregateDuration;
        verifyDuration = p.verifyDuration;
        maxAttempts = p.maxAttempts;
        minCommitters = p.minCommitters;
        contributorReward = p.contributorReward;
        aggregatorReward = p.aggregatorReward;
        verifierReward = p.verifierReward;
        openMembership = p.openMembership;
        loraConfigHash = loraConfigHash_;
        baseModel = baseModel_;
        // Both buffers hold the initial adapter so later writes rewrite non-zero slots.
        _sha[0] = initialSha256;
        _sha[1] = initialSha256;
        _cid[0] = initialCid;
        _cid[1] = initialCid;
        _extra = RoundExtra(0, 0, 1, 0);
        emit Deployed(msg.sender, address(token), initialSha256, initialCid, baseModel_, loraConfigHash_);
    }

    // ------------------------------------------------------------------ membership

    modifier onlyAdmin() {
        require(msg.sender == admin, "only the admin");
        _;
    }

    function addMember(address who) external onlyAdmin {
        _add(who);
    }

    function removeMember(address who) external onlyAdmin {
        Member storage m = _members[who];
        require(m.active, "not a member");
        uint256 idx = m.listIdx;
        address last = _memberList[_memberList.length - 1];
        _memberList[idx] = last;
        _members[last].listIdx = uint32(idx);
        _memberList.pop();
        m.active = false;
        emit MemberRemoved(who);
    }

    function setOpenMembership(bool open) external onlyAdmin {
        openMembership = open;
        emit OpenMembershipSet(open);
    }

    /// Anyone joins while open membership is on (devnets).
    function join() external {
        require(openMembership, "membership is not open: ask the admin to add you");
        _add(msg.sender);
    }

    function _add(address who) internal {
        require(who != address(0), "zero address");
        Member storage m = _members[who];
        require(!m.active, "already a member");
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

    function openRound() external returns (uint256 round) {
        uint8 phase = _state.phase;
        require(phase == NONE || phase == FINALIZED || phase == FAILED, "previous round not final");
        round = uint256(_times.id) + 1;
        uint64 deadline = uint64(block.timestamp) + commitDuration;
        _times = RoundTimes(uint64(round), deadline, 0, 0);
        uint8 sel = _state.globalSel;
        _state = RoundState(COMMIT, 0, 0, 0, 0, sel, 0, 0);
        emit RoundOpened(round, _sha[sel], _cid[sel], deadline);
    }

    function commitUpdate(uint256 round, bytes32 sha256_, string calldata cid, uint256 numSamples) external {
        Member storage m = _members[msg.sender];
        require(m.active, "not a member");
        RoundTimes memory t = _times;
        RoundState storage s = _state;
        require(round == t.id && s.phase == COMMIT, "round is not open for commits");
        require(block.timestamp < t.commitDeadline, "commit deadline passed");
        require(m.commitRound != round, "already committed this round");
        require(sha256_ != bytes32(0), "empty hash");
        require(numSamples > 0, "numSamples must be > 0");
        uint256 n = s.nCommitters;
        require(n < MAX_COMMITTERS, "too many committers");
        uint256 prefix = uint256(sha256_) >> 176;
        for (uint256 i = 0; i < n; i++) {
            require(_committerSlot[i] >> 176 != prefix, "hash already committed this round");
        }
        _committerSlot[n] = uint256(uint160(msg.sender)) | (prefix << 176);
        m.commitRound = uint32(round);
        m.commitIdx = uint8(n);
        s.nCommitters = uint8(n + 1);
        emit UpdateCommitted(round, msg.sender, sha256_, cid, numSamples);
        // early close: the last active member to commit also closes the commit phase and elects
        // the aggregator (AggregatorElected is in this receipt); nobody is left to wait for
        if (n + 1 >= _memberList.length) _stepOnce(round);
    }

    function submitAggregate(
        uint256 round,
        bytes32 sha256_,
        string calldata cid,
        address[] calldata included
    ) external {
        _requireLive(round);
        if (_state.phase == COMMIT) _stepOnce(round); // lazy election
        RoundState memory s = _state;
        require(s.phase == AGGREGATE, "round is not in the aggregation phase");
        require(block.timestamp < _times.aggregateDeadline, "aggregate deadline passed");
        require(msg.sender == _committer((round + s.attempt) % s.nCommitters), "not the elected aggregator");
        require(sha256_ != bytes32(0), "empty hash");
        require(included.length > 0, "included is empty");
        uint256 mask;
        address prev;
        for (uint256 i = 0; i < included.length; i++) {
            address a = included[i];
            require(a > prev, "included must be ascending committer addresses");
            Member storage m = _members[a];
            require(m.commitRound == round, "included address did not commit this round");
            mask |= uint256(1) << m.commitIdx;
            prev = a;
        }
        uint8 pending = 1 - s.globalSel;
        _sha[pending] = sha256_;
        _cid[pending] = cid;
        _extra.includedMask = uint96(mask);
        uint64 vd = uint64(block.timestamp) + verifyDuration;
        _times.verifyDeadline = vd;
        _state.phase = VERIFY;
        emit AggregateSubmitted(round, s.attempt, msg.sender, sha256_, cid, included, vd);
    }

    function vote(uint256 round, bool approve) external {
        _requireLive(round);
        RoundState memory s = _state;
        require(s.phase == VERIFY, "round is not in the verification phase");
        require(block.timestamp < _times.verifyDeadline, "verify deadline passed");
        Member storage m = _members[msg.sender];
        require(m.active && m.commitRound == round, "only this round's committers vote");
        uint256 idx = m.commitIdx;
        require(idx != (round + s.attempt) % s.nCommitters, "the aggregator does not vote");
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

    /// One due transition; false when nothing is due.
    function _stepOnce(uint256 round) internal returns (bool) {
        RoundTimes memory t = _times;
        RoundState memory s = _state;
        uint256 nowTs = block.timestamp;
        if (s.phase == COMMIT) {
            if (!_commitsClosed(t, s, nowTs)) return false;
            if (s.nCommitters < minCommitters) {
                _state.phase = FAILED;
                emit RoundFailed(round, 0, "too few commits");
                return true;
            }
            // counted from the close: the deadline, or now when every member committed earlier
            uint64 ad = (nowTs < t.commitDeadline ? uint64(nowTs) : t.commitDeadline) + aggregateDuration;
            _times.aggregateDeadline = ad;
            _state.phase = AGGREGATE;
            emit AggregatorElected(round, 0, _committer(round % s.nCommitters), ad);
            return true;
        }
        if (s.phase == AGGREGATE) {
            if (nowTs < t.aggregateDeadline) return false;
            _failAttempt(round, s, "aggregator timeout", false);
            return true;
        }
        if (s.phase == VERIFY) {
            uint8 d = _decision(s, nowTs >= t.verifyDeadline);
            if (d == 0) return false;
            if (d == 1) _approve(round, s);
            else _failAttempt(round, s, "rejected", true);
            return true;
        }
        return false;
    }

    /// The commit phase is over at its deadline, or as soon as every active member has committed
    /// (`>=`: a member removed after committing still counts as a committer).
    function _commitsClosed(RoundTimes memory t, RoundState memory s, uint256 nowTs) internal view returns (bool) {
        return nowTs >= t.commitDeadline || (s.nCommitters > 0 && s.nCommitters >= _memberList.length);
    }

    /// 0 undecided, 1 approve, 2 reject.
    function _decision(RoundState memory s, bool pastDeadline) internal pure returns (uint8) {
        uint256 eligible = uint256(s.nCommitters) - 1;
        uint256 a = s.approvals;
        uint256 r = s.rejections;
        if (a * 3 >= eligible * 2 && (a > 0 || eligible == 0)) return 1;
        if (r * 3 > eligible) return 2;
        if (!pastDeadline) return 0;
        uint256 votes = a + r;
        return (votes > 0 && a * 3 >= votes * 2) ? 1 : 2;
    }

    /// `rejected`: the aggregate was voted down, so its author forfeits every reward of the round
    /// and the verifiers who rejected it are credited. A timeout forfeits nothing (a crash is not
    /// misbehaviour; the late aggregator simply earns no aggregator reward).
    function _failAttempt(uint256 round, RoundState memory s, string memory reason, bool rejected) internal {
        emit AttemptFailed(round, s.attempt, reason);
        if (rejected && verifierReward > 0) {
            // verifiers who rejected a rejected aggregate voted with the outcome: credit them
            uint256 rejecters = uint256(s.votedMask) & ~uint256(s.approveMask);
            for (uint256 i = 0; rejecters != 0; i++) {
                if (rejecters & 1 == 1) _committerSlot[i] += uint256(1) << 160;
                rejecters >>= 1;
            }
        }
        uint8 next = s.attempt + 1;
        if (rejected || next >= maxAttempts) {
            uint96 old = _extra.forfeitMask;
            // a round that ends here pays nobody: leave the slot clean for the next one
            uint96 forfeit = next >= maxAttempts
                ? 0
                : old | (uint96(1) << uint96((round + s.attempt) % s.nCommitters));
            if (forfeit != old) _extra.forfeitMask = forfeit;
        }
        if (next >= maxAttempts) {
            _state = RoundState(FAILED, next, s.nCommitters, 0, 0, s.globalSel, 0, 0);
            emit RoundFailed(round, next, reason);
            return;
        }
        _state = RoundState(AGGREGATE, next, s.nCommitters, 0, 0, s.globalSel, 0, 0);
        uint64 ad = uint64(block.timestamp) + aggregateDuration;
        _times.aggregateDeadline = ad;
        emit AggregatorElected(round, next, _committer((round + next) % s.nCommitters), ad);
    }

    function _approve(uint256 round, RoundState memory s) internal {
        uint8 sel = 1 - s.globalSel;
        _state = RoundState(FINALIZED, s.attempt, s.nCommitters, s.approvals, s.rejections, sel, s.votedMask, s.approveMask);
        _extra.globalRound = uint32(round);
        _finalizedBits[round >> 8] |= uint256(1) << (round & 0xff);
        emit RoundFinalized(round, s.attempt, _sha[sel], _cid[sel]);
        _payRewards(round, s);
    }

    /// Pays the committers of a finalized round, except the authors of a rejected aggregate
    /// (the forfeit mask, cleared here for the next round).
    function _payRewards(uint256 round, RoundState memory s) internal {
        uint256 n = s.nCommitters;
        uint256 aggIdx = (round + s.attempt) % n;
        uint256 incl = _extra.includedMask;
        uint256 forfeit = _extra.forfeitMask;
        if (forfeit != 0) _extra.forfeitMask = 0;
        address[] memory to = new address[](n);
        uint256[] memory amounts = new uint256[](n);
        uint256 k;
        for (uint256 i = 0; i < n; i++) {
            if ((forfeit >> i) & 1 == 1) continue;
            uint256 slot = _committerSlot[i];
            address who = address(uint160(slot));
            uint256 total;
            if (contributorReward > 0 && (incl >> i) & 1 == 1) {
                total += contributorReward;
                emit RewardPaid(round, who, contributorReward, "contributor");
            }
            if (aggregatorReward > 0 && i == aggIdx) {
                total += aggregatorReward;
                emit RewardPaid(round, who, aggregatorReward, "aggregator");
            }
            uint256 credits = (slot >> 160) & 0xffff;
            if ((uint256(s.approveMask) >> i) & 1 == 1) credits += 1;
            if (verifierReward > 0 && credits > 0) {
                total += credits * verifierReward;
                emit RewardPaid(round, who, credits * verifierReward, "verifier");
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

    // ------------------------------------------------------------------ views

    function params() external view returns (Params memory) {
        return
            Params(
                commitDuration,
                aggregateDuration,
                verifyDuration,
                maxAttempts,
                minCommitters,
                contributorReward,
                aggregatorReward,
                verifierReward,
                openMembership
            );
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

    /// committers[(round + attempt) % n] of the live round; zero before the commit phase closes,
    /// after a failure, or for another round.
    function aggregatorOf(uint256 round) public view returns (address) {
        RoundTimes memory t = _times;
        RoundState memory s = _state;
        if (round == 0 || round != t.id || s.nCommitters == 0 || s.phase == FAILED) return address(0);
        if (s.phase == COMMIT && (!_commitsClosed(t, s, block.timestamp) || s.nCommitters < minCommitters)) {
            return address(0);
        }
        return _committer((round + s.attempt) % s.nCommitters);
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
