"""A tolerant HPACK decoder (RFC 7541) for captures that start mid-connection or lose bytes.

`hpack.Decoder` raises on the first reference to a dynamic-table entry it does not hold, and
its table is then out of sync for good. A capture that starts after the connection did (or
loses a segment that carried a header block) never saw the entries the encoder added, so
this decoder does what tshark does instead:

- static-table indices (1-61) and literals always resolve;
- a reference to a dynamic entry this decoder never learned gives `<unknown>` (the name, the
  value or both) and is counted in `Block.unknown`;
- literal-with-indexing fields are learned, so later references to them resolve: new
  entries go in at index 62, so what was learned is right even when older entries are not
  known;
- dynamic table size updates and evictions (entry size = name + value + 32) are applied.

After a loss of header-block bytes the caller calls `forget()`: the learned entries may
have moved (the lost block may have added some), so they all become unknown.
Huffman strings are decoded with the `hpack` package's table.
"""

from __future__ import annotations

from collections import deque

# RFC 7541 Appendix A, 61 (name, value) pairs (index 1..61), and the Huffman decoder:
# hpack's, imported by the first decoder (`_load_hpack`), so that captures without
# HTTP/2 do not pay for importing it.
STATIC: tuple[tuple[bytes, bytes], ...] = ()
NSTATIC = 61
_decode_huffman = None
UNKNOWN = b"<unknown>"
MAX_TABLE = 1 << 16  # table size honoured at most, whatever SETTINGS says (bounded memory)
MAX_FIELDS = 1024  # fields decoded per block (bounds the work of a hostile block)


class HpackError(ValueError):
    """The block is malformed (truncated integer or string, index 0, bad Huffman)."""


class Block:
    """The result of one header block: the fields decoded, how many were `<unknown>`, and
    the error that stopped decoding early (the fields before it are kept)."""

    __slots__ = ("fields", "unknown", "error")

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []
        self.unknown = 0
        self.error: str | None = None


class TolerantDecoder:
    """One direction's HPACK decoder. `complete` says the table is known from the start of
    the connection (then an unknown reference is a real compression error, still reported
    as `<unknown>` rather than stopping)."""

    __slots__ = ("entries", "size", "max_size", "max_allowed", "complete", "unknown_total")

    def __init__(self, complete: bool = True, max_allowed: int = 4096) -> None:
        if not STATIC:
            _load_hpack()
        max_allowed = min(max_allowed, MAX_TABLE)
        self.entries: deque[tuple[bytes, bytes]] = deque()  # newest first (index 62)
        self.size = 0
        self.max_size = max_allowed
        self.max_allowed = max_allowed
        self.complete = complete
        self.unknown_total = 0

    def forget(self) -> None:
        """Bytes were lost: what the table holds can no longer be trusted."""
        self.entries.clear()
        self.size = 0
        self.complete = False

    def decode(self, data: bytes) -> Block:
        out = Block()
        pos = 0
        n = len(data)
        fields = out.fields
        try:
            while pos < n and len(fields) < MAX_FIELDS:
                b = data[pos]
                if b & 0x80:  # indexed field (6.1)
                    idx, pos = _integer(data, pos, 7)
                    name, value = self._lookup(idx, out)
                    fields.append((name, value))
                elif b & 0x40:  # literal with incremental indexing (6.2.1)
                    name, value, pos = self._literal(data, pos, 6, out)
                    fields.append((name, value))
                    self._add(name, value)
                elif b & 0x20:  # dynamic table size update (6.3)
                    size, pos = _integer(data, pos, 5)
                    if size > self.max_allowed:
                        raise HpackError(f"table size {size} over the allowed {self.max_allowed}")
                    self.max_size = size
                    self._evict()
                else:  # literal without indexing / never indexed (6.2.2, 6.2.3)
                    name, value, pos = self._literal(data, pos, 4, out)
                    fields.append((name, value))
        except HpackError as exc:
            out.error = str(exc)
        self.unknown_total += out.unknown
        return out

    # -- internals --------------------------------------------------------------------

    def _lookup(self, idx: int, out: Block) -> tuple[bytes, bytes]:
        if idx == 0:
            raise HpackError("index 0")
        if idx <= NSTATIC:
            return STATIC[idx - 1]
        i = idx - NSTATIC - 1
        if i < len(self.entries):
            return self.entries[i]
        out.unknown += 1
        return UNKNOWN, UNKNOWN

    def _literal(self, data: bytes, pos: int, prefix: int, out: Block):
        idx, pos = _integer(data, pos, prefix)
        if idx:
            name = self._lookup(idx, out)[0]
        else:
            name, pos = _string(data, pos)
        value, pos = _string(data, pos)
        return name, value, pos

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 32
        if size > self.max_size:  # 4.4: an entry larger than the table empties it
            self.entries.clear()
            self.size = 0
            return
        self.entries.appendleft((name, value))
        self.size += size
        self._evict()

    def _evict(self) -> None:
        entries = self.entries
        while self.size > self.max_size and entries:
            name, value = entries.pop()
            self.size -= len(name) + len(value) + 32


def _load_hpack() -> None:
    global STATIC, _decode_huffman
    from hpack.huffman_table import decode_huffman
    from hpack.table import HeaderTable

    STATIC, _decode_huffman = tuple(HeaderTable.STATIC_TABLE), decode_huffman
    assert len(STATIC) == NSTATIC


def _integer(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """RFC 7541 5.1: an integer with an N-bit prefix starting at data[pos]."""
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    n = len(data)
    while True:
        if pos >= n:
            raise HpackError("integer cut short")
        b = data[pos]
        pos += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos
        if shift > 28:
            raise HpackError("integer too large")


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    """RFC 7541 5.2: a string literal (Huffman-coded when the high bit is set)."""
    if pos >= len(data):
        raise HpackError("string cut short")
    huff = data[pos] & 0x80
    length, pos = _integer(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HpackError(f"string of {length} bytes cut short")
    raw = data[pos:end]
    if huff:
        try:
            raw = _decode_huffman(raw)
        except Exception as exc:  # hpack.exceptions.HPACKDecodingError
            raise HpackError(f"bad Huffman string: {exc}") from None
    return raw, end
