"""HTTP/2 framing and literal-only HPACK encoding shared by our lean gRPC server and client.

Both sides (server/protocol/grpc/h2server.py, tritonctl/perf/h2grpc.py) speak plaintext HTTP/2
with prior knowledge (h2c), what gRPC clients use without TLS. Header blocks we send use only
static-table entries and literals *without indexing*, so they leave no state in the peer's
decoder and can be prebuilt once; decoding the peer's blocks needs `hpack` (it may index).

HTTP/2: RFC 9113; HPACK: RFC 7541; gRPC over HTTP/2: grpc/doc/PROTOCOL-HTTP2.md.
"""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
(
    DATA,
    HEADERS,
    PRIORITY_FRAME,
    RST_STREAM,
    SETTINGS,
    PUSH_PROMISE,
    PING,
    GOAWAY,
    WINDOW_UPDATE,
    CONTINUATION,
) = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6
# Error codes (RFC 9113 section 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
LAST_STREAM_ID = 2**31 - 1
GRPC_STATUS = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
    15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}  # fmt: skip

_HEAD = struct.Struct(">BBI")


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + _HEAD.pack(kind, flags, stream_id) + payload


def hpack_int(value: int, prefix_bits: int, first_byte: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte | value])
    out = bytearray([first_byte | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(text: str | bytes) -> bytes:
    raw = text.encode("latin-1") if isinstance(text, str) else text
    return hpack_int(len(raw), 7, 0x00) + raw  # no Huffman coding


def hpack_literal(name: str | int, value: str | bytes) -> bytes:
    """A header field as a literal without indexing; `name` may be a static-table index."""
    if isinstance(name, int):
        return hpack_int(name, 4, 0x00) + hpack_string(value)
    return b"\x00" + hpack_string(name) + hpack_string(value)


def grpc_message(payload: bytes) -> bytes:
    """gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, the bytes."""
    return b"\x00" + struct.pack(">I", len(payload)) + payload


class HeaderBlockDecoder:
    """HPACK decoding of the peer's header blocks, in order (the dynamic table must stay in step).

    Once warm, a peer repeats blocks made only of one-byte indexed fields (every byte has its high
    bit set); those cannot change the table, so their decoding is cached until a block of another
    kind (which may insert or evict entries) arrives. Raises hpack's errors on hostile bytes.
    """

    def __init__(self) -> None:
        import hpack

        self._decoder = hpack.Decoder()
        self._cached: dict[bytes, list[tuple[bytes, bytes]]] = {}

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        cached = self._cached.get(block)
        if cached is not None:
            return cached
        headers = [(bytes(name), bytes(value)) for name, value in self._decoder.decode(block, raw=True)]
        if block and min(block) >= 0x80:
            if len(self._cached) > 64:
                self._cached.clear()
            self._cached[block] = headers
        else:
            self._cached.clear()
        return headers
