"""Reading coordinator events as typed records, paging block ranges and resuming from a stored block."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_utils import event_abi_to_log_topic
from hexbytes import HexBytes
from web3.contract import Contract

from chain import peer_record
from chain.types import EVENT_TYPES, ChainEvent

if TYPE_CHECKING:
    from chain.client import CoordinatorClient

log = logging.getLogger(__name__)

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def _snake(name: str) -> str:
    return _CAMEL.sub(r"_\1", name).lower()


class EventDecoder:
    """Turns raw coordinator logs into `chain.types` event records."""

    def __init__(self, contract: type[Contract] | Contract) -> None:
        self._contract = contract
        self._by_topic: dict[bytes, str] = {}
        abi: list[dict[str, Any]] = list(contract.abi)  # type: ignore[arg-type]
        for item in abi:
            if item.get("type") == "event" and item["name"] in EVENT_TYPES:
                self._by_topic[bytes(event_abi_to_log_topic(item))] = item["name"]  # type: ignore[arg-type]

    @property
    def topics(self) -> list[str]:
        return ["0x" + t.hex() for t in self._by_topic]

    def decode(self, raw: Any) -> ChainEvent | None:
        """The typed event of one log, or None for a log that is not a coordinator event."""
        topics = raw.get("topics") or []
        if not topics:
            return None
        name = self._by_topic.get(bytes(HexBytes(topics[0])))
        if name is None:
            return None
        data = self._contract.events[name]().process_log(raw)
        fields: dict[str, Any] = {}
        for key, value in data["args"].items():
            field = _snake(key)
            if isinstance(value, list | tuple):
                value = tuple(value)
            elif isinstance(value, bytes | bytearray):
                value = bytes(value)
            fields[field] = value
        if name == "PeerPublished":
            fields["multiaddrs"], fields["display_name"] = peer_record.decode(str(fields["multiaddrs"]))
        tx_hash = data["transactionHash"]
        return EVENT_TYPES[name](
            block_number=int(data["blockNumber"]),
            log_index=int(data["logIndex"]),
            tx_hash="0x" + bytes(tx_hash).hex(),
            **fields,
        )


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
            decoded = [e for e in (self.client.decoder.decode(raw) for raw in logs) if e is not None]
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
