"""Reading coordinator events as typed records, paging block ranges and resuming from a stored block."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_utils import event_abi_to_log_topic, to_checksum_address
from hexbytes import HexBytes
from web3.contract import Contract

from chain import peer_record
from chain.abi_text import TOLERANT_CODEC
from chain.types import EVENT_TYPES, ChainEvent

if TYPE_CHECKING:
    from chain.client import CoordinatorClient

log = logging.getLogger(__name__)

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def _snake(name: str) -> str:
    return _CAMEL.sub(r"_\1", name).lower()


class UndecodableLog(ValueError):
    """A coordinator log whose topics or data do not match its event's ABI."""


class EventDecoder:
    """Turns raw coordinator logs into `chain.types` event records.

    Decoding is done here with the tolerant codec (chain.abi_text), not web3's ``process_log``:
    a member's invalid UTF-8 becomes escaped text instead of an exception.
    """

    def __init__(self, contract: type[Contract] | Contract) -> None:
        self._contract = contract
        self._by_topic: dict[bytes, tuple[str, list[dict[str, Any]]]] = {}
        abi: list[dict[str, Any]] = list(contract.abi)  # type: ignore[arg-type]
        for item in abi:
            if item.get("type") == "event" and item["name"] in EVENT_TYPES:
                topic = bytes(event_abi_to_log_topic(item))  # type: ignore[arg-type]
                self._by_topic[topic] = (item["name"], list(item["inputs"]))

    @property
    def topics(self) -> list[str]:
        return ["0x" + t.hex() for t in self._by_topic]

    def decode(self, raw: Any) -> ChainEvent | None:
        """The typed event of one log, or None for a log that is not a coordinator event.

        Raises UndecodableLog when the log claims a coordinator event but its topics or data do
        not decode as that event (only a broken or lying RPC can produce one).
        """
        topics = raw.get("topics") or []
        if not topics:
            return None
        spec = self._by_topic.get(bytes(HexBytes(topics[0])))
        if spec is None:
            return None
        name, inputs = spec
        try:
            fields = _decode_fields(
                inputs, [bytes(HexBytes(t)) for t in topics[1:]], bytes(HexBytes(raw["data"]))
            )
        except Exception as exc:
            raise UndecodableLog(f"{name}: {type(exc).__name__}: {exc}") from None
        if name == "PeerPublished":
            fields["multiaddrs"], fields["display_name"] = peer_record.decode(str(fields["multiaddrs"]))
        return EVENT_TYPES[name](
            block_number=int(raw["blockNumber"]),
            log_index=int(raw["logIndex"]),
            tx_hash="0x" + bytes(HexBytes(raw["transactionHash"])).hex(),
            **fields,
        )


def _decode_fields(inputs: list[dict[str, Any]], topics: list[bytes], data: bytes) -> dict[str, Any]:
    """The event's arguments by snake_case name: indexed ones from the topics, the rest from data."""
    indexed = [i for i in inputs if i.get("indexed")]
    if len(topics) != len(indexed):
        raise ValueError(f"{len(topics)} indexed topics, the event has {len(indexed)}")
    values: dict[str, Any] = {}
    for item, topic in zip(indexed, topics, strict=True):
        values[item["name"]] = TOLERANT_CODEC.decode([item["type"]], topic)[0]
    plain = [i for i in inputs if not i.get("indexed")]
    decoded = TOLERANT_CODEC.decode([i["type"] for i in plain], data)
    for item, value in zip(plain, decoded, strict=True):
        values[item["name"]] = value
    return {_snake(item["name"]): _typed(item["type"], values[item["name"]]) for item in inputs}


def _typed(abi_type: str, value: Any) -> Any:
    """Python values as the event records hold them: checksum addresses, bytes, tuples."""
    if abi_type == "address":
        return to_checksum_address(value)
    if abi_type == "address[]":
        return tuple(to_checksum_address(v) for v in value)
    if isinstance(value, list | tuple):
        return tuple(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return value


class EventReader:
    """Reads coordinator events in pages of `page_size` blocks (default: the profile's log_page_size)."""

    def __init__(self, client: CoordinatorClient, page_size: int | None = None) -> None:
        self.client = client
        self.page_size = page_size or client.profile.log_page_size
        if self.page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.pages_read = 0

    def read(self, from_block: int, to_block: int | None = None) -> list[ChainEvent]:
        """Every coordinator event in [from_block, to_block] (default: the latest block), in chain order."""
        end = self.client.block_number() if to_block is None else to_block
        events: list[ChainEvent] = []
        for page in self.pages(from_block, end):
            events.extend(page[1])
        return events

    def any_in(self, from_block: int, to_block: int) -> bool:
        """Whether the coordinator logged anything in [from_block, to_block] (one call, nothing decoded;
        ranges longer than a page count as yes: the caller reads them with `read` anyway)."""
        if to_block - from_block + 1 > self.page_size:
            return True
        logs = self.client.w3.eth.get_logs(
            {"address": self.client.address, "fromBlock": max(0, from_block), "toBlock": to_block}  # type: ignore[typeddict-item]
        )
        return bool(logs)

    def pages(self, from_block: int, to_block: int) -> Iterator[tuple[int, list[ChainEvent]]]:
        """Yield (last block of the page, events of the page) for each page of the range."""
        start = max(0, from_block)
        while start <= to_block:
            end = min(start + self.page_size - 1, to_block)
            logs = self.client.w3.eth.get_logs(
                {"address": self.client.address, "fromBlock": start, "toBlock": end}  # type: ignore[typeddict-item]
            )
            self.pages_read += 1
            decoded = [e for e in (decode_or_skip(self.client.decoder, raw) for raw in logs) if e is not None]
            decoded.sort(key=lambda e: (e.block_number, e.log_index))
            yield end, decoded
            start = end + 1

    def follow(
        self,
        cursor: BlockCursor,
        handle: Callable[[ChainEvent], None],
        to_block: int | None = None,
    ) -> int:
        """Feed every event after the cursor to `handle`, saving the cursor after each page.

        Returns the number of events handled. Resumes where the last call (or the last process)
        stopped; if `handle` raises, the page is not marked read and will be replayed.
        """
        end = self.client.block_number() if to_block is None else to_block
        count = 0
        for last, events in self.pages(cursor.next_block, end):
            for event in events:
                handle(event)
                count += 1
            cursor.save(last + 1)
        return count


def decode_or_skip(decoder: EventDecoder, raw: Any) -> ChainEvent | None:
    """`decoder.decode(raw)`, or None with one warning naming the block and transaction when the
    log cannot be decoded: one bad log never stops a page, a reader or a node."""
    try:
        return decoder.decode(raw)
    except Exception as exc:
        tx = raw.get("transactionHash")
        log.warning(
            "skipping an undecodable coordinator log in block %s, tx %s (%s)",
            raw.get("blockNumber"),
            "0x" + bytes(HexBytes(tx)).hex() if tx is not None else "?",
            exc,
        )
        return None


class BlockCursor:
    """The next block to read, persisted in a small JSON file (atomic replace)."""

    def __init__(self, path: str | Path, start_block: int = 0) -> None:
        self.path = Path(path)
        self.next_block = start_block
        if self.path.exists():
            try:
                self.next_block = int(json.loads(self.path.read_text())["next_block"])
            except (ValueError, KeyError, TypeError, json.JSONDecodeError):
                log.warning("%s: unreadable cursor, starting from block %d", self.path, start_block)

    def save(self, next_block: int) -> None:
        self.next_block = next_block
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps({"next_block": next_block}))
        tmp.replace(self.path)
