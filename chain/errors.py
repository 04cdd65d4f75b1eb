"""Exceptions of the chain package. Every message is one line that names the fix."""

from __future__ import annotations


class ChainError(Exception):
    """Base class of every chain-package error."""


class WalletError(ChainError):
    """A keystore could not be created, read or decrypted, or no password was given."""


class RpcUnreachable(ChainError):
    """The JSON-RPC endpoint does not answer."""


class WrongChain(ChainError):
    """The endpoint answers with another chain id than the profile expects."""


class NoContract(ChainError):
    """No contract code at the configured address."""


class NotACoordinator(NoContract):
    """The code at the configured address is some other contract, not a medfed Coordinator."""


class ArtifactError(ChainError):
    """Compiled contract artifacts are missing, stale, or the compiler failed."""


class TransactionFailed(ChainError):
    """A transaction could not be sent or was not mined in time."""


class ContractRevert(ChainError):
    """The contract refused a call; `reason` is the contract's reason string.

    `tx_hash` is set when the refusal was mined (the transaction exists but had no effect: no
    event); None when it was refused before sending (the views or the node said no).
    """

    def __init__(self, function: str, reason: str, tx_hash: str | None = None) -> None:
        self.function = function
        self.reason = reason
        self.tx_hash = tx_hash
        where = f" (tx {tx_hash}, mined without effect)" if tx_hash else ""
        super().__init__(f"{function} reverted: {reason}{where}")
