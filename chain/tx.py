"""Sending legacy transactions: explicit gas, gasPrice and chainId, local nonces, checked receipts."""

from __future__ import annotations

import logging
import threading
from typing import Any

from eth_abi import decode as abi_decode
from eth_account import Account
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TimeExhausted, Web3RPCError

from chain.errors import ContractRevert, TransactionFailed
from chain.profile import ChainProfile
from chain.wallet import Wallet

log = logging.getLogger(__name__)

ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)
_NONCE_ERRORS = ("nonce too low", "already known", "nonce has already been used", "replacement transaction")


def decode_revert(data: Any, message: str = "") -> str:
    """The revert reason in `data` (hex or bytes) or, failing that, the node's message."""
    raw = b""
    if isinstance(data, str) and data.startswith("0x"):
        try:
            raw = bytes.fromhex(data[2:])
        except ValueError:
            raw = b""
    elif isinstance(data, bytes | bytearray):
        raw = bytes(data)
    if raw[:4] == ERROR_SELECTOR:
        try:
            return str(abi_decode(["string"], raw[4:])[0])
        except Exception:  # malformed reason payload: fall back to the message
            pass
    if raw[:4] == PANIC_SELECTOR and len(raw) >= 36:
        return f"panic 0x{int.from_bytes(raw[4:36], 'big'):02x}"
    msg = message or "reverted without a reason"
    return (
        msg.removeprefix("execution reverted: ").removeprefix("execution reverted")
        or "reverted without a reason"
    )


def _rpc_error_parts(err: Any) -> tuple[str, Any]:
    if isinstance(err, dict):
        return str(err.get("message", "")), err.get("data")
    return str(err), None


class TxSender:
    """Signs and sends legacy transactions from one wallet; thread-safe; tracks the nonce locally."""

    def __init__(self, w3: Web3, wallet: Wallet, profile: ChainProfile) -> None:
        self.w3 = w3
        self.wallet = wallet
        self.profile = profile
        self._nonce: int | None = None
        self._lock = threading.Lock()

    def resync_nonce(self) -> int:
        """Reload the nonce from the chain (pending count)."""
        self._nonce = int(self.w3.eth.get_transaction_count(self.wallet.address, "pending"))  # type: ignore[arg-type]
        return self._nonce

    def estimate_gas(self, tx: dict[str, Any], label: str) -> int:
        """eth_estimateGas with ONE parameter (Cypherium rejects a block argument).

        A revert becomes ContractRevert with the reason.
        """
        call = {
            k: (hex(v) if isinstance(v, int) else v)
            for k, v in tx.items()
            if k in ("from", "to", "data", "value")
        }
        response: Any = self.w3.provider.make_request("eth_estimateGas", [call])  # type: ignore[arg-type]
        if "error" in response:
            message, data = _rpc_error_parts(response["error"])
            if "revert" in message.lower() or data:
                raise ContractRevert(label, decode_revert(data, message))
            raise TransactionFailed(
                f"{label}: gas estimate failed ({message}): check the node and the account's ETH"
            )
        return int(response["result"], 16)

    def send(self, tx: dict[str, Any], label: str, gas: int | None = None) -> Any:
        """Sign (with `gas`, else an estimate), send and wait for the receipt; return it.

        The receipt's `status` is NOT checked: Cypherium says 1 for reverted transactions too.
        Callers decide success by the events the call owes (CoordinatorClient does).
        """
        with self._lock:
            base = {"from": self.wallet.address, "value": 0, **tx}
            if gas is None:
                estimate = self.estimate_gas(base, label)
                gas = int(estimate * self.profile.gas_margin) + self.profile.gas_extra
            fields = {
                "to": base.get("to"),
                "data": base.get("data", "0x"),
                "value": base["value"],
                "gas": gas,
                "gasPrice": self.profile.gas_price_wei,
                "chainId": self.profile.chain_id,
            }
            if fields["to"] is None:
                del fields["to"]
            tx_hash = self._sign_and_send(fields, label)
        try:
            return self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.profile.tx_timeout_s, poll_latency=self.profile.poll_interval_s
            )
        except TimeExhausted:
            raise TransactionFailed(
                f"{label}: not mined within {self.profile.tx_timeout_s:.0f} s (tx {tx_hash.hex()}): "
                "check that the chain produces blocks and the gas price is accepted"
            ) from None

    def _sign_and_send(self, fields: dict[str, Any], label: str) -> HexBytes:
        if self._nonce is None:
            self.resync_nonce()
        for _ in range(3):
            assert self._nonce is not None
            signed = Account.sign_transaction({**fields, "nonce": self._nonce}, self.wallet.private_key)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Web3RPCError as exc:
                message, _ = _rpc_error_parts(exc.rpc_response.get("error") if exc.rpc_response else str(exc))
                if any(s in message.lower() for s in _NONCE_ERRORS):
                    log.info("nonce %d refused (%s): resyncing", self._nonce, message)
                    self.resync_nonce()
                    continue
                if "insufficient funds" in message.lower():
                    raise TransactionFailed(
                        f"{label}: {self.wallet.address} has too little ETH for gas: fund the account"
                    ) from None
                raise TransactionFailed(f"{label}: node refused the transaction ({message})") from None
            self._nonce += 1
            return HexBytes(tx_hash)
        raise TransactionFailed(f"{label}: nonce kept colliding: another process is sending from this wallet")

    def replay_reason(self, tx: dict[str, Any], block_number: int) -> str | None:
        """Re-run a mined transaction with eth_call on the state after its block; the revert reason.

        None when the replay gives no reason string (it succeeds now, or the chain's rules have
        no REVERT and report an invalid opcode).
        """
        call = {
            k: (hex(v) if isinstance(v, int) else v)
            for k, v in {"from": self.wallet.address, "value": 0, **tx}.items()
            if k in ("from", "to", "data", "value")
        }
        try:
            response: Any = self.w3.provider.make_request("eth_call", [call, hex(block_number)])  # type: ignore[arg-type]
        except Exception as exc:  # the replay is best effort: views explain the rest
            log.debug("replay of %s at block %d failed: %s", call.get("data", "")[:10], block_number, exc)
            return None
        if "error" not in response:
            return None
        message, data = _rpc_error_parts(response["error"])
        raw = data if isinstance(data, str) else ""
        if raw.startswith("0x" + ERROR_SELECTOR.hex()) or raw.startswith("0x" + PANIC_SELECTOR.hex()):
            return decode_revert(data, message)
        if message.lower().startswith("execution reverted:"):
            return decode_revert(None, message)
        return None
