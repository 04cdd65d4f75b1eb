"""What a site reports on-chain after a round, in the contract's existing
``reportMetrics(round, evalSetHash, accuracyPpm, n)``, with the kind of metric readable by anyone.

The ``evalSetHash`` word (bytes32) carries a tag, so the explorer (which reads only the chain)
can tell which metric a figure is (version 1, big-endian):

====== ======= ==========================================================================
bytes  field   meaning
====== ======= ==========================================================================
0-3    magic   ``b"MFM\\x01"`` (medfed metric, layout 1)
4      kind    1 = multiple-choice accuracy, 2 = held-out loss of chat (SFT) data
5-8    aux     uint32, micro-nats: kind 1 = mean NLL of the correct option; kind 2 = the loss
9-31   set     the first 23 bytes of sha256 over the evaluation row ids (which set it is)
====== ======= ==========================================================================

A site that trains with DP-SGD (docs/privacy.md) sends layout 2, which carries its privacy spend:

====== ======= ==========================================================================
0-3    magic   ``b"MFM\x02"`` (medfed metric, layout 2)
4-8            as layout 1
9-12   spent   uint32, milli-epsilon: epsilon spent by the site's trainings up to this round
13-16  budget  uint32, milli-epsilon: the site's whole budget ([privacy] target_epsilon)
17-31  set     the first 15 bytes of sha256 over the evaluation row ids
====== ======= ==========================================================================

``accuracyPpm`` (which the contract caps at 10^6) is the accuracy for kind 1 and
``10^6 * exp(-loss)`` = 10^6 / perplexity for kind 2: higher is better for both. A word without
the magic is a plain set hash from an older node: its figure is an accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAGIC = b"MFM\x01"
MAGIC_DP = b"MFM\x02"
KIND_CODES = {"mc": 1, "sft": 2}
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}
_AUX_MAX = 2**32 - 1


@dataclass(frozen=True)
class Figures:
    """One evaluation of a global adapter on this site's held-out set.

    ``kind`` "mc": ``accuracy`` and ``nll`` (mean -log p of the correct option letter, nats);
    ``kind`` "sft": ``loss`` (mean response-token NLL, nats) and its ``perplexity``."""

    kind: str
    n: int
    accuracy: float = float("nan")
    nll: float = float("nan")
    loss: float = float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    @property
    def score(self) -> float:
        """The figure in [0, 1] that goes into accuracyPpm (accuracy, or 1/perplexity)."""
        return self.accuracy if self.kind == "mc" else math.exp(-self.loss)

    @property
    def aux(self) -> float:
        """The continuous figure carried in the tag (nats)."""
        return self.nll if self.kind == "mc" else self.loss

    def describe(self) -> str:
        """Human words for logs."""
        if self.kind == "mc":
            return f"accuracy {self.accuracy:.4f}, mean NLL of the correct option {self.nll:.4f}"
        return f"held-out loss {self.loss:.4f} (perplexity {self.perplexity:.2f})"


def _micro(nats: float) -> int:
    if not math.isfinite(nats):
        return _AUX_MAX
    return max(0, min(_AUX_MAX, round(nats * 1_000_000)))


def _milli(epsilon: float) -> int:
    if not math.isfinite(epsilon):
        return _AUX_MAX
    return max(0, min(_AUX_MAX, math.ceil(epsilon * 1000 - 1e-9)))  # never under-reports a spend


def encode_eval_hash(
    kind: str, aux_nats: float, set_hash_hex: str, privacy: tuple[float, float] | None = None
) -> str:
    """The tagged evalSetHash (64 hex digits) for a figure of ``kind``; ``privacy`` = (epsilon
    spent, epsilon budget) of a DP-SGD site (layout 2)."""
    digest = bytes.fromhex(set_hash_hex)
    head = bytes([KIND_CODES[kind]]) + _micro(aux_nats).to_bytes(4, "big")
    if privacy is None:
        word = MAGIC + head + digest[:23]
    else:
        spent, budget = (_milli(x).to_bytes(4, "big") for x in privacy)
        word = MAGIC_DP + head + spent + budget + digest[:15]
    assert len(word) == 32
    return word.hex()


def report_values(
    fig: Figures, set_hash_hex: str, privacy: tuple[float, float] | None = None
) -> tuple[str, int]:
    """(evalSetHash hex, accuracyPpm) to send with reportMetrics (``privacy``: see encode_eval_hash)."""
    score = fig.score if math.isfinite(fig.score) else 0.0  # a poisoned global scores nothing
    ppm = max(0, min(1_000_000, round(score * 1_000_000)))
    return encode_eval_hash(fig.kind, fig.aux, set_hash_hex, privacy), ppm


def decode_report(eval_set_hash: str | bytes, accuracy_ppm: int) -> dict[str, object]:
    """What a reported figure is: {"kind", "label", "value", "aux_label", "aux", "set", "privacy"}
    (JSON-ready; "privacy" is {"epsilon", "budget"} for a DP-SGD site, else None).

    kind "mc": value = accuracy, aux = mean NLL of the correct option; kind "sft": value = held-out
    loss, aux = perplexity; kind "accuracy" (untagged, older nodes): value = accuracy, no aux."""
    raw = bytes.fromhex(eval_set_hash.removeprefix("0x")) if isinstance(eval_set_hash, str) else eval_set_hash
    score = accuracy_ppm / 1_000_000
    if len(raw) != 32 or raw[:4] not in (MAGIC, MAGIC_DP) or raw[4] not in KIND_NAMES:
        return {
            "kind": "accuracy",
            "label": "accuracy",
            "value": score,
            "aux_label": None,
            "aux": None,
            "set": raw.hex(),
            "privacy": None,
        }
    kind = KIND_NAMES[raw[4]]
    micro = int.from_bytes(raw[5:9], "big")
    nats = None if micro == _AUX_MAX else micro / 1_000_000
    out: dict[str, object] = {"kind": kind, "set": raw[9:].hex(), "privacy": None}
    if raw[:4] == MAGIC_DP:
        spent, budget = (int.from_bytes(raw[i : i + 4], "big") for i in (9, 13))
        out["privacy"] = {
            "epsilon": None if spent == _AUX_MAX else spent / 1000,
            "budget": None if budget == _AUX_MAX else budget / 1000,
        }
        out["set"] = raw[17:].hex()
    if kind == "mc":
        out.update(label="accuracy", value=score, aux_label="mean NLL of the correct option", aux=nats)
    else:
        out.update(
            label="held-out loss",
            value=nats,
            aux_label="perplexity",
            aux=None if nats is None else math.exp(min(nats, 700.0)),
        )
    return out
