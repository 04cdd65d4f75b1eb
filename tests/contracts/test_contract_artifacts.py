"""The committed contract artifacts match a fresh solc-js compile of contracts/src."""

from __future__ import annotations

import json

from chain.artifacts import BUILD_DIR, CONTRACT_NAMES, load_artifact, stale_artifacts


def test_artifacts_are_not_stale() -> None:
    stale = stale_artifacts()
    assert stale == [], f"stale artifacts {stale}: run `python -m chain.artifacts --compile` and commit"


# Opcodes that pre-Byzantium rules (Cypherium's official genesis) do not have, except REVERT,
# which solc emits for every failing require whatever the target: there it is an invalid opcode
# that fails the call and consumes its gas, which is still a failure.
NEWER_OPCODES = {
    0x1B: "SHL",
    0x1C: "SHR",
    0x1D: "SAR",
    0x3D: "RETURNDATASIZE",
    0x3E: "RETURNDATACOPY",
    0x3F: "EXTCODEHASH",
    0x46: "CHAINID",
    0x47: "SELFBALANCE",
    0x5F: "PUSH0",
    0xF4: "DELEGATECALL",
    0xF5: "CREATE2",
    0xFA: "STATICCALL",
}


def _opcodes(code_hex: str) -> list[int]:
    """Opcodes of the code before its first INVALID (0xfe; what follows is data and metadata)."""
    code = bytes.fromhex(code_hex.removeprefix("0x"))
    ops, i = [], 0
    while i < len(code) and code[i] != 0xFE:
        ops.append(code[i])
        i += 1 + (code[i] - 0x5F if 0x60 <= code[i] <= 0x7F else 0)
    return ops


def test_artifacts_target_homestead_rules() -> None:
    """One artifact for both rule sets: nothing newer than Homestead in the executed code."""
    for name in CONTRACT_NAMES:
        data = json.loads((BUILD_DIR / f"{name}.json").read_text())
        assert data["evmVersion"] == "homestead" and data["solc"].startswith("0.8.28")
        art = load_artifact(name)
        assert art.abi and art.bytecode.startswith("0x") and len(art.deployed_bytecode) > 2
        # EIP-170: Cypherium enforces the same 24 KiB code size limit
        assert (len(art.deployed_bytecode) - 2) // 2 <= 24_576
        for code in (art.bytecode, art.deployed_bytecode):
            found = {NEWER_OPCODES[op] for op in _opcodes(code) if op in NEWER_OPCODES}
            assert not found, f"{name} uses {sorted(found)}: not available before Byzantium"


def test_the_opcode_scan_finds_newer_opcodes() -> None:
    assert 0x1B in _opcodes("0x6001600a1b00")  # PUSH1 1, PUSH1 10, SHL, STOP
    assert 0x1B not in _opcodes("0x611b1b00")  # PUSH2 0x1b1b: data, not an opcode


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
