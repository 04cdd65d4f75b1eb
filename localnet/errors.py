"""Errors of the local federation launcher."""

from __future__ import annotations

from localnet.chain import DevnetError


class FederationError(DevnetError):
    """The local federation could not start or a round failed; the message names the fix."""
