"""Issue 21: when the members hand the federation over to a successor coordinator, the node
follows it when it safely can, else stops with one line saying why (node.daemon.follow_successor).
The live hand-over is tests/e2e/test_governance.py; these are the refusals, on fake clients."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chain.errors import NotACoordinator
from node import daemon
from node.config import TEMPLATE, NodeConfig, load_config
from node.errors import Retired
from node.learning import federation_hash
from training.models import base_model_id

OLD = "0x" + "01" * 20
NEW = "0x" + "02" * 20
ME = "0x" + "0a" * 20


class FakeCoordinator:
    """What follow_successor asks of a coordinator."""

    def __init__(self, address: str, cfg: NodeConfig, members: set[str], base: str = "", open_: bool = False):
        self.address = address
        self.profile = None
        self._hash = bytes.fromhex(federation_hash(cfg))
        self._base = base or base_model_id(cfg.model.base)
        self._members = {m.lower() for m in members}
        self._open = open_
        self.joined = False

    def lora_config_hash(self) -> bytes:
        return self._hash

    def base_model(self) -> str:
        return self._base

    def is_member(self, a: str) -> bool:
        return a.lower() in self._members

    def params(self) -> Any:
        return SimpleNamespace(open_membership=self._open)

    def join(self) -> None:
        self.joined = True


@pytest.fixture
def cfg(tmp_path: Path) -> NodeConfig:
    p = tmp_path / "medfed.toml"
    p.write_text(TEMPLATE.replace("0x0000000000000000000000000000000000000000", OLD))
    return load_config(p)


def _follow(monkeypatch: pytest.MonkeyPatch, cfg: NodeConfig, successor: Any) -> NodeConfig:
    def connect(rpc: str, address: str, wallet: Any, profile: Any) -> Any:
        if isinstance(successor, Exception):
            raise successor
        return successor

    monkeypatch.setattr(daemon, "CoordinatorClient", connect)
    monkeypatch.setattr(daemon, "deploy_block", lambda client: 77)
    old = FakeCoordinator(OLD, cfg, {ME})
    return daemon.follow_successor(cfg, SimpleNamespace(address=ME), old, NEW, 5, OLD)  # type: ignore[arg-type]


def test_follows_a_successor_with_this_member_and_config(
    monkeypatch: pytest.MonkeyPatch, cfg: NodeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "medfed.node"):
        new = _follow(monkeypatch, cfg, FakeCoordinator(NEW, cfg, {ME}))
    assert new.chain.coordinator == NEW and new.chain.start_block == 77 and new.state_dir == cfg.state_dir
    want = cfg.state_dir / "coordinators" / NEW
    assert daemon.store_dir(new, NEW, OLD) == want and daemon.store_dir(cfg, OLD, OLD) == cfg.state_dir
    assert f"handed the federation over to coordinator {NEW} (proposal 5): following it; state in {want}" in (
        caplog.text
    )


def test_joins_a_successor_with_open_membership(monkeypatch: pytest.MonkeyPatch, cfg: NodeConfig) -> None:
    nxt = FakeCoordinator(NEW, cfg, set(), open_=True)
    assert _follow(monkeypatch, cfg, nxt).chain.coordinator == NEW and nxt.joined


@pytest.mark.parametrize(
    ("successor", "says"),
    [
        (lambda cfg: FakeCoordinator(NEW, cfg, {"0x" + "0b" * 20}), f"but {ME} is not one of its members"),
        (lambda cfg: FakeCoordinator(NEW, cfg, {ME}, base="other/model"), "[model] base = "),
        (lambda cfg: NotACoordinator(f"{NEW} is no Coordinator"), "it is not a medfed Coordinator"),
    ],
)
def test_stops_with_one_line_when_it_cannot_follow(
    monkeypatch: pytest.MonkeyPatch, cfg: NodeConfig, successor: Any, says: str
) -> None:
    with pytest.raises(Retired) as exc:
        _follow(monkeypatch, cfg, successor(cfg))
    msg = str(exc.value)
    assert msg.startswith(f"the members handed the federation over to coordinator {NEW} (proposal 5)")
    assert says in msg and "\n" not in msg


def test_a_successor_naming_the_first_coordinator_again_is_refused(
    monkeypatch: pytest.MonkeyPatch, cfg: NodeConfig
) -> None:
    old = FakeCoordinator(NEW, cfg, {ME})
    with pytest.raises(Retired, match="names an earlier coordinator again"):
        daemon.follow_successor(cfg, SimpleNamespace(address=ME), old, OLD, 0, OLD)  # type: ignore[arg-type]
