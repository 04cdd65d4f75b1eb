"""`medfed-node status`: what the chain says about this federation and (optionally) one member."""

from __future__ import annotations

import time

from chain.types import Phase
from node.config import NodeConfig
from node.daemon import connect_chain


def _when(unix: float) -> str:
    left = unix - time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix))
    return f"{stamp} ({'in ' + str(int(left)) + ' s' if left > 0 else 'passed'})"


def node_status(cfg: NodeConfig, address: str | None) -> list[str]:
    """Lines describing membership, the live round, phase, role, global adapter and balance."""
    client = connect_chain(cfg, None)
    info = client.round_info()
    g = client.global_adapter()
    members = client.members()
    unit = "ms" if client.time_unit_ms else "s"
    successor = client.successor()
    lines = [
        *(
            [
                f"RETIRED: the members handed this federation over to coordinator {successor} "
                "(a running node follows it; its state is in state_dir/coordinators/)"
            ]
            if successor
            else []
        ),
        f"coordinator {client.address} on {cfg.chain.rpc_url} "
        f"({client.profile.name} chain, block timestamps in {unit})",
        f"{len(members)} members, base model {client.base_model()}",
        f"global adapter {bytes(g.sha256).hex()} (round {g.round}), cid {g.cid}",
    ]
    if info.round == 0:
        lines.append("round: none opened yet")
    else:
        lines.append(
            f"round {info.round}: phase {info.phase.name.lower()}, attempt {info.attempt}, "
            f"{info.n_committers} commits, {info.approvals} approvals / {info.rejections} rejections"
        )
        if info.phase == Phase.COMMIT:
            lines.append(f"commit deadline {_when(client.chain_to_seconds(info.commit_deadline))}")
        elif info.phase == Phase.AGGREGATE:
            lines.append(f"aggregate deadline {_when(client.chain_to_seconds(info.aggregate_deadline))}")
        elif info.phase == Phase.VERIFY:
            lines.append(f"verify deadline {_when(client.chain_to_seconds(info.verify_deadline))}")
    if address:
        member = client.is_member(address)
        no = "NO (a member proposes `medfed-node propose add-member ADDRESS`, the members vote)"
        lines.append(f"member {address}: {'yes' if member else no}")
        committers = [a.lower() for a in client.committers()] if info.round else []
        aggregator = (info.aggregator or "").lower()
        if not member:
            role = "none"
        elif info.phase in (Phase.NONE, Phase.FINALIZED, Phase.FAILED):
            role = "idle (waiting for the next round)"
        elif address.lower() == aggregator:
            role = "aggregator"
        elif address.lower() in {a.lower() for a in client.servers()}:  # issue 20
            role = "serving only (verifier/aggregator, no update)"
        elif address.lower() in committers:
            role = "participant (committed)" if info.phase == Phase.COMMIT else "verifier"
        else:
            role = "participant (not committed yet)" if info.phase == Phase.COMMIT else "observer this round"
        lines.append(f"role: {role}")
        peer = client.member_peer(address)
        lines.append(
            f"peer: {peer.peer_id + ' at ' + ', '.join(peer.multiaddrs) if peer else 'not published yet'}"
        )
        if peer is not None and peer.display_name:
            lines.append(f"name: {peer.display_name}")
        lines.append(f"token balance: {client.token_balance(address) / 10**18:.4f} MFR")
    return lines
