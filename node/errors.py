"""Exception types raised by node/. Each message is one line that names the fix."""

from __future__ import annotations


class NodeError(Exception):
    """Base class for every node/ error."""


class ConfigError(NodeError):
    """medfed.toml is missing, malformed, or inconsistent with the federation."""


class StartupError(NodeError):
    """The node cannot start: not a member, model/LoRA mismatch with the chain, data missing."""


class StateError(NodeError):
    """The local state store is unreadable or belongs to another federation."""


class Retired(NodeError):
    """The node stops for good: the members handed the federation over to a successor
    coordinator, or voted this member out (issue 21). The message tells the operator what next."""


class HandedOver(Retired):
    """The members handed the federation over to a successor coordinator (issue 21): the daemon
    follows it when it safely can (node.daemon.follow_successor), else stops with this message."""

    def __init__(self, message: str, coordinator: str, proposal: int = 0) -> None:
        super().__init__(message)
        self.coordinator = coordinator
        self.proposal = proposal


class ArtifactError(NodeError):
    """An adapter could not be fetched, verified or validated."""
