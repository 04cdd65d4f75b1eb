"""issue 24: the censorship evidence a verifier holds (node/censorship.py): an update left out as
unavailable counts only if we held it (or, our own, a committer other than the aggregator fetched
it from us) before the attempt's hold cutoff."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from node.censorship import early_holds, evidence, handed, held
from node.context import RoundMemo
from node.state import Commit, StateStore, Submission

ME, AGG, VICTIM, OTHER, LATE = ("0x" + c * 40 for c in "abcde")


def test_only_holds_before_the_cutoff_of_updates_left_out_count(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "0x" + "99" * 20, ME)
    clock = [100.0]
    node = SimpleNamespace(store=store, memo=RoundMemo(1), me=ME, now=lambda: clock[0])
    for m in (ME, AGG, VICTIM, OTHER, LATE):
        store.add_commit(Commit(1, m, m[2:4] * 32, "", 16))
    held(node, 1, VICTIM, VICTIM[2:4] * 32)  # type: ignore[arg-type]
    clock[0] = 120.0
    held(node, 1, LATE, LATE[2:4] * 32)  # type: ignore[arg-type]
    held(node, 1, VICTIM, VICTIM[2:4] * 32)  # type: ignore[arg-type]  # the first time counts
    # everything included: nothing to say
    full = Submission(1, 0, AGG, "ff" * 32, "", (ME, AGG, VICTIM, OTHER, LATE), ())
    assert early_holds(node, full) == []  # type: ignore[arg-type]
    # the victim left out, held at 100: evidence before a cutoff at 110, not before one at 90
    sub = Submission(1, 0, AGG, "ff" * 32, "", (ME, AGG, OTHER), ())
    holds = early_holds(node, sub)  # type: ignore[arg-type]
    assert [t for t, _, _ in holds] == [100.0, 120.0]
    why = evidence(holds, 110.0)
    assert VICTIM in why and "10.0 s before the hold cutoff" in why and "censorship" in why
    assert evidence(holds, 90.0) == ""
    # named invalid is not "left out": the verifier checks the claim instead
    assert early_holds(node, Submission(1, 0, AGG, "ff" * 32, "", (ME, AGG, OTHER), (VICTIM, LATE))) == []  # type: ignore[arg-type]
    # our own update: only a fetch by a committer other than the aggregator counts
    mine = Submission(1, 0, AGG, "ff" * 32, "", (AGG, VICTIM, OTHER, LATE), ())
    clock[0] = 100.0
    handed(node, 1, AGG, ME[2:4] * 32)  # type: ignore[arg-type]
    handed(node, 1, "0x" + "77" * 20, ME[2:4] * 32)  # type: ignore[arg-type]  # not a committer
    assert early_holds(node, mine) == []  # type: ignore[arg-type]
    handed(node, 1, OTHER, ME[2:4] * 32)  # type: ignore[arg-type]
    holds = early_holds(node, mine)  # type: ignore[arg-type]
    assert len(holds) == 1 and "our update" in holds[0][1] and OTHER in holds[0][2]
    assert evidence(holds, 100.0) and not evidence(holds, 99.0)
    store.close()


def test_the_hold_cutoff_comes_from_chain_times_in_either_unit() -> None:
    """30% and 50% into the attempt's aggregation phase, from aggregateDeadline - aggregateDuration:
    the same on anvil (seconds) and on Cypherium (milliseconds)."""
    import trio

    from chain.types import ChainParams, Phase, RoundInfo
    from node.censorship import phase_times

    for unit in (1, 1000):
        params = ChainParams(20 * unit, 20 * unit, 16 * unit, 3, 1, 10, 5, 1, False)
        memo = RoundMemo(1)
        memo.params = params
        node = SimpleNamespace(memo=memo, to_unix=lambda v, u=unit: v / u)
        info = RoundInfo(1, Phase.AGGREGATE, 0, 4, 0, 1_020 * unit, 0, None, 0, 0)
        assert trio.run(phase_times, node, info) == (1_006.0, 1_010.0)


def test_a_serving_only_committers_fetch_of_our_update_is_evidence_and_servers_are_never_left_out(
    tmp_path: Path,
) -> None:
    """issue 20: a member serving the round without an update (`ServingOnly`) verifies like any
    committer: its early fetch of our update counts; having no update, it is never "left out"."""
    store = StateStore(tmp_path, "0x" + "99" * 20, ME)
    node = SimpleNamespace(store=store, memo=RoundMemo(1), me=ME, now=lambda: 100.0)
    for m in (ME, AGG):
        store.add_commit(Commit(1, m, m[2:4] * 32, "", 16))
    store.add_server(1, OTHER)
    sub = Submission(1, 0, AGG, "ff" * 32, "", (AGG,), ())
    handed(node, 1, OTHER, ME[2:4] * 32)  # type: ignore[arg-type]
    holds = early_holds(node, sub)  # type: ignore[arg-type]
    assert len(holds) == 1 and "our update" in holds[0][1] and OTHER in holds[0][2]
    full = Submission(1, 0, AGG, "ff" * 32, "", (ME, AGG), ())
    assert early_holds(node, full) == []  # type: ignore[arg-type]  # the server is not missing
    assert store.servers(1) == [OTHER] and store.servers(2) == []
    # whether we serve a round: our own address among its servers (another's does not count)
    assert not store.serving(1)
    store.add_server(2, ME.upper().replace("0X", "0x"))
    assert store.serving(2) and not store.serving(1)
    store.close()
