"""The committed contract artifacts match a fresh solc-js compile of contracts/src."""

from __future__ import annotations

import json

from chain.artifacts import BUILD_DIR, CONTRACT_NAMES, load_artifact, stale_artifacts


def test_artifacts_are_not_stale() -> None:
    stale = stale_artifacts()
    assert stale == [], f"stale artifacts {stale}: run `python -m chain.artifacts --compile` and commit"


def test_artifacts_target_istanbul_without_push0() -> None:
    for name in CONTRACT_NAMES:
        data = json.loads((BUILD_DIR / f"{name}.json").read_text())
        assert data["evmVersion"] == "istanbul" and data["solc"].startswith("0.8.28")
        art = load_artifact(name)
        assert art.abi and art.bytecode.startswith("0x") and len(art.deployed_bytecode) > 2
        # EIP-170: Cypherium enforces the same 24 KiB code size limit
        assert (len(art.deployed_bytecode) - 2) // 2 <= 24_576


def test_every_spec_event_is_in_the_abi() -> None:
    events = {e["name"] for e in load_artifact("Coordinator").abi if e["type"] == "event"}
    assert {
        "MemberAdded",
        "MemberRemoved",
        "PeerPublished",
        "RoundOpened",
        "UpdateCommitted",
        "AggregatorElected",
        "AggregateSubmitted",
        "VoteCast",
        "AttemptFailed",
        "RoundFinalized",
        "RoundFailed",
        "RewardPaid",
        "MetricsReported",
    } <= events
