"""TEST-ONLY fault injection. The one place that reads MEDFED_TEST_FAULT.

Production nodes never set it. The end-to-end tests use it to make an honest node misbehave
in one precise, reproducible way:

    MEDFED_TEST_FAULT="crash-after-commit@1,tamper-aggregate@1.1"

Each item is ``<fault>`` or ``<fault>@<round>`` or ``<fault>@<round>.<attempt>``:

- ``crash-after-train``: exit right after the update is trained and stored, before committing it.
- ``crash-after-commit``: exit right after the commit transaction is confirmed, before the store
  records it (the restarted node must learn from the chain that it already committed).
- ``crash-as-aggregator``: exit when it finds itself the elected aggregator, before submitting.
- ``tamper-aggregate``: as aggregator, submit an aggregate with one value altered.
- ``serve-wrong-bytes``: act as a hostile provider: announce every other member's committed
  update and serve random bytes for it.
- ``front-run``: never train; commit the first other member's update hash seen (on gossip or
  on-chain) as our own, claiming 16 samples (issue 12, B6).
- ``slow-commit``: wait 3 s before sending the commit transaction (a chain whose mempool is slow
  to mine, which gives a front-runner its window).
- ``always-reject``: as verifier, vote reject whatever the recomputation says (issue 12, B3).
- ``withhold-from-aggregator``: serve our update to nobody until the round's aggregate is
  submitted (so no verifier holds a copy it could pass on to the aggregator), then to every
  member except the elected aggregator (selective serving, issue 12, B4).
- ``blind-approve``: as verifier, vote approve without fetching or recomputing anything (and
  fetch nothing while the aggregator works): a lazy verifier (issue 12, B7).
- ``slow-verify``: as verifier, send the verdict ``SLOW_VERIFY_S`` after reaching it (an honest
  verifier whose recomputation takes as long as a real model's: the tiny model's is quicker
  than a blind approver's poll).
- ``pad-update``: commit an update of valid tensors followed by ``PAD_BYTES`` of trailing bytes
  (hostile member B1; skips the node's own check of its update, as a modified node would).
- ``huge-update``: commit an update whose LoRA B values are all ``HUGE_VALUE`` (finite, B2).

A crash fault fires once per state dir (a marker file), so the restarted node runs honestly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

ENV = "MEDFED_TEST_FAULT"
KNOWN = frozenset(
    {
        "crash-after-train",
        "crash-after-commit",
        "crash-as-aggregator",
        "tamper-aggregate",
        "serve-wrong-bytes",
        "front-run",
        "slow-commit",
        "always-reject",
        "withhold-from-aggregator",
        "blind-approve",
        "slow-verify",
        "pad-update",
        "huge-update",
    }
)
CRASH_EXIT_CODE = 17
HUGE_VALUE = 1e30  # huge-update: every LoRA B value of the committed update
SLOW_VERIFY_S = 2.0  # slow-verify: delay between a verdict and its vote
PAD_BYTES = 40 << 20  # pad-update: trailing bytes appended to a valid update (under max_adapter_mb)
log = logging.getLogger("medfed.faults")


@dataclass(frozen=True)
class Fault:
    """One injected fault, optionally restricted to a round (and attempt)."""

    name: str
    round: int | None = None
    attempt: int | None = None

    def matches(self, round: int, attempt: int = 0) -> bool:
        """Whether this fault applies to that round/attempt."""
        return (self.round is None or self.round == round) and (
            self.attempt is None or self.attempt == attempt
        )


def parse(spec: str) -> tuple[Fault, ...]:
    """Parse the MEDFED_TEST_FAULT value; unknown names are a ValueError (a test bug)."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, where = item.partition("@")
        if name not in KNOWN:
            raise ValueError(f"{ENV}: unknown fault {name!r}; known: {', '.join(sorted(KNOWN))}")
        rnd, _, att = where.partition(".")
        out.append(Fault(name, int(rnd) if rnd else None, int(att) if att else None))
    return tuple(out)


class Faults:
    """The faults active in this process (none unless the test environment variable is set)."""

    def __init__(self, state_dir: Path, spec: str | None = None) -> None:
        self.items = parse(os.environ.get(ENV, "") if spec is None else spec)
        self.state_dir = state_dir
        if self.items:
            log.warning(
                "TEST FAULT INJECTION ACTIVE: %s (never set %s in production)", spec or os.environ[ENV], ENV
            )

    def active(self, name: str, round: int, attempt: int = 0) -> bool:
        """Whether fault ``name`` applies now."""
        return any(f.name == name and f.matches(round, attempt) for f in self.items)

    def crash(self, name: str, round: int, attempt: int = 0) -> None:
        """Exit the process now if crash fault ``name`` applies and has not fired yet in this state dir."""
        if not self.active(name, round, attempt):
            return
        marker = self.state_dir / f"fault-fired-{name}-{round}-{attempt}"
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("fired\n")
        log.warning("TEST FAULT %s: exiting now (round %d attempt %d)", name, round, attempt)
        logging.shutdown()
        os._exit(CRASH_EXIT_CODE)
