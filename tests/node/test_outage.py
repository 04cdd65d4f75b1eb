"""Issue 18: a chain outage is one line when it starts, at most one a minute, one when it ends.

The live tests put a real TCP forwarder (tests/support/tcp_proxy.py) between a real
`medfed-node start` process (and an in-process explorer) and a real anvil, take it down for a
while and bring it back on the same port: the chain keeps its state, the node sees refused
connections, exactly as when the RPC host reboots.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from tcp_proxy import TcpProxy

from chain.errors import RpcUnreachable
from localnet import federation as F
from node.explorer.server import start_explorer
from node.outage import OutageLog, rpc_unreachable

OUTAGE_S = 12.0


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_one_line_down_one_a_minute_one_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    out = OutageLog(logging.getLogger("t.outage"), "chain RPC", clock=clock)
    err = RpcUnreachable("RPC http://x unreachable (ConnectionError)")
    with caplog.at_level(logging.INFO, logger="t.outage"):
        for _ in range(60):  # a poll a second, the last 59 s after the first
            out.failed(err)
            clock.t += 1
        assert len(caplog.records) == 1 and "unreachable" in caplog.records[0].getMessage()
        out.failed(err)  # 60 s after the first line
        assert len(caplog.records) == 2 and "still unreachable after 60 s" in caplog.records[1].getMessage()
        out.ok()
        out.ok()
        assert len(caplog.records) == 3
        assert "back after 60 s (61 failed calls" in caplog.records[2].getMessage()
        assert not any(r.exc_info for r in caplog.records)  # tracebacks only at DEBUG (--debug)


def test_a_refused_connection_is_an_outage_a_bug_is_not() -> None:
    with pytest.raises(requests.exceptions.ConnectionError) as refused:
        requests.post(f"http://127.0.0.1:{F.free_port()}", timeout=2)
    try:
        raise RuntimeError("wrapped") from refused.value
    except RuntimeError as wrapped:
        assert rpc_unreachable(wrapped)
    assert not rpc_unreachable(ValueError("a bug"))


@pytest.mark.slow
def test_a_node_and_the_explorer_say_an_outage_in_one_line_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fed = F.launch(tmp_path / "fed", 1, 1, model="tiny", fresh=True, explorer=False)
    try:
        rpc = urlsplit(fed.devnet.rpc_url)
        proxy = TcpProxy(rpc.hostname or "127.0.0.1", int(rpc.port or 0))
        fed.stop_node(0)
        cfg = fed.config_paths[0]
        cfg.write_text(cfg.read_text().replace(fed.devnet.rpc_url, proxy.url))
        fed.start_node(0)
        F.wait_ready(fed, 180)
        explorer = start_explorer(
            proxy.url, fed.devnet.coordinator, tmp_path / "index.sqlite", port=0, poll_s=0.5
        )
        before = len(fed.log_path(0).read_text().splitlines())
        with caplog.at_level(logging.INFO, logger="medfed.explorer"):
            proxy.down()
            time.sleep(OUTAGE_S)
            proxy.up()
            _wait_for(lambda: "is back after" in fed.log_path(0).read_text(), 60)
            _wait_for(lambda: any("is back after" in r.getMessage() for r in caplog.records), 60)
        # read before the proxy closes: closing it is a second outage the node would report
        during = fed.log_path(0).read_text().splitlines()[before:]
        explorer.stop()
        proxy.close()
        assert fed.node_exit_code(0) is None  # still running
        assert not any("Traceback" in line for line in during), during[:20]
        down = [line for line in during if "unreachable" in line]
        back = [line for line in during if "is back after" in line]
        assert len(down) == 1 and len(back) == 1, during[:20]
        assert len(during) <= 6, during  # the outage itself says two lines; the rest is ordinary work
        assert re.search(r"back after \d+ s \(\d+ failed calls", back[0])
        said = [r.getMessage() for r in caplog.records if r.name == "medfed.explorer"]
        assert len([m for m in said if "unreachable" in m]) == 1, said
        assert len([m for m in said if "is back after" in m]) == 1, said
        assert not any(r.exc_info for r in caplog.records)
    finally:
        for i in list(fed._procs):
            fed.stop_node(i)
        F.down(tmp_path / "fed")


def _wait_for(cond: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError("timed out")
