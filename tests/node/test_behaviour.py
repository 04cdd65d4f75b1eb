"""The behaviour interface: the honest default, and how a test harness loads another one."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from hostile_behaviour import behaviour_spec

from node.behaviour import Behaviour, HonestBehaviour, Verdict, load
from node.cli import build_parser


def test_the_honest_behaviour_follows_the_protocol() -> None:
    honest = HonestBehaviour()
    node: Any = None  # the honest answers do not look at the node
    sub: Any = None
    assert honest.trains(node, 1) and honest.prefetches(node, 1)
    assert honest.offers(node, "ab", "update", 1) and honest.serves_to(node, "0xaa", "ab", "update", 1)
    state: Any = {"w": 1}
    assert honest.aggregate_to_submit(node, 1, 0, state) is state

    async def judge() -> Verdict:
        return False, "recomputed another sha256"

    assert trio.run(honest.verdict, node, sub, judge) == (False, "recomputed another sha256")


def test_a_harness_loads_a_behaviour_from_a_file_or_a_module() -> None:
    made: Any = load(behaviour_spec("tamper-aggregate@2.1,blind-approve"))  # a file of the test tree
    assert isinstance(made, Behaviour) and type(made).__name__ == "FaultyBehaviour"
    assert made.active("tamper-aggregate", 2, 1) and not made.prefetches(None, 1)
    with pytest.raises(ValueError, match="MODULE:FACTORY"):
        load("no-factory")
    with pytest.raises(TypeError, match="not a Behaviour"):
        load("builtins:str=x")  # a module by name; its factory must return a Behaviour


def test_the_start_option_is_hidden_and_the_node_is_honest_without_it(capsys: Any) -> None:
    assert build_parser().parse_args(["start", "--key", "k"]).behaviour == ""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["start", "--help"])
    assert "--behaviour" not in capsys.readouterr().out
