"""Screenshot the explorer on a populated devnet (for docs/img/explorer.png).

    .venv/bin/python tests/explorer/screenshot.py --out docs/img/explorer.png [--serve 60]

Starts anvil, scripts a federation of 4 institutions over 5 rounds directly on the
contract (tests/explorer/explorer_scenario.py), serves the explorer in-process and saves a
laptop-size screenshot of the overview to --out (and full-page, round and phone shots
to test-artifacts/).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(Path(__file__).parent)]

from explorer_browser import launch_browser  # noqa: E402
from explorer_scenario import build_federation  # noqa: E402

from localnet.anvil import start_anvil, stop_anvil  # noqa: E402
from node.explorer.server import start_explorer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=REPO / "test-artifacts" / "explorer.png")
    p.add_argument("--serve", type=float, default=0, help="keep serving this many seconds after the shots")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medfed-explorer-shot-"))
    anvil = start_anvil(tmp / "anvil.log")
    try:
        sc = build_federation(anvil.rpc_url, tmp / "files", 4, ("ok", "retry_ok", "fail", "ok", "ok"))
        with start_explorer(sc.rpc_url, sc.coordinator, tmp / "explorer.sqlite", port=0, poll_s=0.3) as ex:
            print("explorer:", ex.url, flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            extra = REPO / "test-artifacts"
            extra.mkdir(exist_ok=True)
            with launch_browser() as browser:
                page = browser.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
                page.goto(ex.url)
                page.wait_for_selector("[data-testid=chart-fairness] svg")
                # laptop-size shot: from the top to the bottom of the charts row
                charts = page.locator(".grid2").first.bounding_box()
                assert charts is not None
                height = int(charts["y"] + charts["height"] + 16)
                page.screenshot(
                    path=str(args.out), clip={"x": 0, "y": 0, "width": 1440, "height": height}, full_page=True
                )
                page.screenshot(path=str(extra / "explorer-full.png"), full_page=True)
                page.goto(ex.url + "#/round/2")
                page.wait_for_selector("[data-testid=attempt]")
                page.screenshot(path=str(extra / "explorer-round.png"), full_page=True)
                phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
                phone.goto(ex.url)
                phone.wait_for_selector("[data-testid=chart-fairness] svg")
                phone.screenshot(path=str(extra / "explorer-phone.png"), full_page=False)
            print("saved", args.out, flush=True)
            if args.serve:
                time.sleep(args.serve)
    finally:
        stop_anvil(anvil.pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
