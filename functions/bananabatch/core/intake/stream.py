"""Line streaming and chunking: a JSONL byte stream split into numbered lines, a read chunk
at a time, in bounded memory.

Pure: no I/O beyond reading the stream it is handed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Final

BOM: Final = b"\xef\xbb\xbf"
_READ_CHUNK: Final = 1 << 20


def iter_raw_lines(
    stream: IO[bytes], *, max_line_bytes: int, chunk_size: int = _READ_CHUNK
) -> Iterator[tuple[int, bytes]]:
    """Split a byte stream into (1-based line number, line) without newlines.

    Strips a UTF-8 BOM from the start of the stream and a trailing CR from every line. A
    line longer than max_line_bytes comes out cut to max_line_bytes + 1 bytes, so the
    parser sees it is too long, and its remainder is read past without being kept: memory
    stays within one line limit plus one read chunk.
    """
    for first, lines in iter_line_chunks(
        stream, max_line_bytes=max_line_bytes, chunk_size=chunk_size
    ):
        yield from enumerate(lines, first)


def iter_line_chunks(
    stream: IO[bytes], *, max_line_bytes: int, chunk_size: int = _READ_CHUNK
) -> Iterator[tuple[int, list[bytes]]]:
    """iter_raw_lines a read chunk at a time: (number of the first line, its lines).

    For a loop over a million lines: `for n, line in enumerate(lines, first)` costs less per
    line than resuming a generator, and a chunk without a CR and without an overlong line
    (nearly all of them) is split with one bytes.split and no per-line work.
    """
    cap = max_line_bytes + 2  # room for a CR, so a line of exactly the limit plus CR fits
    line_no = 0
    carry: list[bytes] = []  # pieces of the unfinished line, at most cap bytes in total
    carried = 0

    def finish(line: bytes) -> bytes:
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > max_line_bytes:
            line = line[: max_line_bytes + 1]
        return line

    for chunk in _chunks_without_bom(stream, chunk_size):
        pieces = chunk.split(b"\n")
        tail = pieces.pop()
        if pieces:
            if carry:
                carry.append(pieces[0])
                pieces[0] = b"".join(carry)
                carry = []
                carried = 0
            # Only the first piece, joined with the carry, can be longer than the chunk or
            # end in a CR that came with the previous chunk.
            first = pieces[0]
            if (
                b"\r" in chunk
                or first.endswith(b"\r")
                or len(first) > max_line_bytes
                or (len(chunk) > max_line_bytes and max(map(len, pieces)) > max_line_bytes)
            ):
                pieces = [finish(piece) for piece in pieces]
            yield line_no + 1, pieces
            line_no += len(pieces)
        if tail and carried < cap:
            piece = tail[: cap - carried]
            carry.append(piece)
            carried += len(piece)
    if carry:
        yield line_no + 1, [finish(b"".join(carry))]


def _chunks_without_bom(stream: IO[bytes], chunk_size: int) -> Iterator[bytes]:
    head = b""
    # A short read may split the BOM itself, so gather three bytes before looking.
    while len(head) < len(BOM):
        chunk = stream.read(chunk_size)
        if not chunk:
            break
        head += chunk
    if head.startswith(BOM):
        head = head[len(BOM) :]
    if head:
        yield head
    while chunk := stream.read(chunk_size):
        yield chunk
