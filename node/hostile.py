"""TEST-ONLY hostile behaviours behind the fault registry (node/faults.py).

Each function turns this node's honest update into what a modified, dishonest node would commit.
They run only when MEDFED_TEST_FAULT names them; production nodes never reach this module.
"""

from __future__ import annotations

import logging
import uuid

from node.context import Node
from node.faults import HUGE_VALUE, PAD_BYTES
from node.state import UpdateRecord
from training.adapter_io import read_adapter, read_metadata, sha256_file

log = logging.getLogger("medfed.faults")


def pad_update(node: Node, round: int, rec: UpdateRecord) -> UpdateRecord:
    """pad-update: the update's valid tensors followed by PAD_BYTES of trailing bytes (B1)."""
    done = node.store.get_meta(f"fault-pad-update-{round}")
    if done == rec.sha256:
        return rec
    weights = node.artifacts.weights(rec.sha256)
    assert weights is not None
    tmp = node.artifacts.scratch / f"padded-{uuid.uuid4().hex}"
    with weights.open("rb") as src, tmp.open("wb") as out:
        out.write(src.read())
        zeros = bytes(1 << 20)
        for _ in range(PAD_BYTES >> 20):
            out.write(zeros)
    sha = sha256_file(tmp)
    node.artifacts.import_file(sha, tmp, "update", round)
    node.store.record_update(round, sha, rec.num_samples, rec.train_seconds)
    node.store.set_meta(f"fault-pad-update-{round}", sha)
    log.warning(
        "TEST FAULT pad-update: committing %s = update %s + %d trailing bytes",
        sha[:12],
        rec.sha256[:12],
        PAD_BYTES,
    )
    out_rec = node.store.update(round)
    assert out_rec is not None
    return out_rec


def huge_update(node: Node, round: int, rec: UpdateRecord) -> UpdateRecord:
    """huge-update: the update with every LoRA B value set to HUGE_VALUE (finite; B2)."""
    import numpy as np

    done = node.store.get_meta(f"fault-huge-update-{round}")
    if done == rec.sha256:
        return rec
    weights = node.artifacts.weights(rec.sha256)
    assert weights is not None
    state = read_adapter(weights)
    for key in state:
        if "lora_B" in key:
            state[key] = np.full(state[key].shape, HUGE_VALUE, dtype=np.float32)
    # the same binding (author, round, federation) as the honest update: only the values are hostile
    sha = node.artifacts.put_state(state, "update", round, read_metadata(weights))
    node.store.record_update(round, sha, rec.num_samples, rec.train_seconds)
    node.store.set_meta(f"fault-huge-update-{round}", sha)
    log.warning(
        "TEST FAULT huge-update: committing %s = update %s with B = %g", sha[:12], rec.sha256[:12], HUGE_VALUE
    )
    out_rec = node.store.update(round)
    assert out_rec is not None
    return out_rec
