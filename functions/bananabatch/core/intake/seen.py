"""The hashes intake has seen, in a compact table: 8 bytes a slot instead of a Python set's ~80.

Pure. Intake dedups a file twice, both on 64-bit hashes: keys (a repeated key is rejected)
and requests (a repeated request is served from its first occurrence). A Python set of ints
costs a 16-byte slot plus a 32-byte int object per entry, with the table at most 60% full:
two of them took ~160 MB a million lines, 1.2 GB at 5M, more than the upload function has.

SeenHashes keeps the hashes themselves in one preallocated array of signed 64-bit slots,
open addressing with linear probing, at most MAX_LOAD full: ~11 bytes an entry at the worst,
and the table never holds a Python object per entry (nothing for the garbage collector to
walk, nothing for the allocator to fragment). It is exact on the 64-bit values it is given:
two different values are two entries (the callers' hashes may still collide, which they
account for; see read.py and reference.py).

A probe runs in Python, not C: measured on 2M string hashes, 547 ns an insert against a set's
446 ns (both dominated by the cache miss of a random slot), so the table is reached once per
line and once per chunk (add_all_new) rather than once per check.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Final, Protocol

# Slots hold the hash itself; 0 marks an empty slot, so a hash of 0 is stored as ZERO_SLOT (a
# value chosen at random: 0 and it are then one entry, as likely as any 64-bit collision).
ZERO: Final = 0xDBD1E9955BD1E995
# Linear probing's expected probes for a miss are (1 + 1/(1 - load)^2) / 2: 2.5 at 0.5, 6 at
# 0.7, 8.5 at 0.75. The table grows (doubles) past MAX_LOAD.
MAX_LOAD: Final = 0.7
SLOT_BYTES: Final = 8
MIN_SLOTS: Final = 1024
ZERO_SLOT: Final = ZERO - (1 << 64)  # as a signed slot


class HashTable(Protocol):
    """What the parser and the read loop ask of a table of seen hashes."""

    def add(self, value: int) -> bool:
        """Add value; True when it was not there yet."""
        ...

    def add_all_new(self, values: Sequence[int]) -> bool:
        """Add every value if none is there yet and none repeats another (True); else
        change nothing (False)."""
        ...

    def reserve(self, expected: int) -> None:
        """Make room for `expected` entries in all, if it can."""
        ...


class TableFull(Exception):
    """Growing the table would pass its budget (the caller spills; see spill.py)."""


class SeenHashes:
    """A set of signed 64-bit integers (what hash() gives) in an open-addressing table of
    `array('q')` slots; a value outside that range raises OverflowError when stored.

    `budget_bytes` caps the table's slots (None: no cap); an add that would need more raises
    TableFull before changing anything.
    """

    __slots__ = ("_budget_bytes", "_budget_slots", "_count", "_grow_at", "_size", "_table")

    def __init__(self, expected: int = 0, *, budget_bytes: int | None = None) -> None:
        self._budget_bytes = budget_bytes
        # An odd number of slots within the budget (see _resize).
        self._budget_slots = (
            None if budget_bytes is None else max(1, (budget_bytes // SLOT_BYTES - 1) | 1)
        )
        self._count = 0
        self._size = 0
        self._grow_at = 0
        self._table = array("q")
        self._resize(self._slots_for(expected))

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """The table's memory (its slots; the object itself is a few dozen bytes)."""
        return self._size * SLOT_BYTES

    @property
    def capacity(self) -> int:
        """Entries the table can take before it grows."""
        return self._grow_at

    def fits(self, expected: int) -> bool:
        """Whether `expected` entries fit the budget."""
        budget = self._budget_slots
        return budget is None or int(expected / MAX_LOAD) + 1 <= budget

    def reserve(self, expected: int) -> None:
        """Grow now (if needed) to take `expected` entries without growing again; within
        the budget. The cheap time to do it is before many entries are in."""
        slots = self._slots_for(expected)
        if slots > self._size:
            self._resize(slots)

    def add(self, value: int) -> bool:
        """Add value; True when it was not there yet."""
        value = value or ZERO_SLOT
        table, size = self._table, self._size
        at = value % size
        while True:
            found = table[at]
            if found == value:
                return False
            if not found:
                break
            at += 1
            if at == size:
                at = 0
        if self._count >= self._grow_at:
            self._grow(1)
            return self.add(value)
        table[at] = value
        self._count += 1
        return True

    def __contains__(self, value: int) -> bool:
        value = value or ZERO_SLOT
        table, size = self._table, self._size
        at = value % size
        while True:
            found = table[at]
            if found == value:
                return True
            if not found:
                return False
            at += 1
            if at == size:
                at = 0

    def add_all_new(self, values: Sequence[int]) -> bool:
        """Add every value if none is there yet and none repeats another; True then. False
        otherwise, and the table is as it was: the caller then goes value by value.

        For the usual chunk of a file, whose lines are all new: one call instead of one a
        line. Values put in are taken out again, last first, when one turns out known; with
        linear probing and no deletions that restores the table exactly (a later value's
        probe only ever crossed earlier ones)."""
        if self._count + len(values) > self._grow_at:
            self._grow(len(values))
        table, size = self._table, self._size
        placed: list[int] = []
        put = placed.append
        for raw in values:
            value = raw or ZERO_SLOT
            at = value % size
            while True:
                found = table[at]
                if found == value:
                    for slot in reversed(placed):
                        table[slot] = 0
                    return False
                if not found:
                    break
                at += 1
                if at == size:
                    at = 0
            table[at] = value
            put(at)
        self._count += len(placed)
        return True

    def values(self) -> list[int]:
        """Every entry (as stored: a 0 given is ZERO), in no order."""
        return [value for value in self._table if value]

    # --- sizing ------------------------------------------------------------------------

    def _slots_for(self, entries: int) -> int:
        slots = max(MIN_SLOTS, int(entries / MAX_LOAD) + 1)
        budget = self._budget_slots
        return slots if budget is None else max(1, min(slots, budget))

    def _grow(self, more: int) -> None:
        needed = int((self._count + more) / MAX_LOAD) + 1
        budget = self._budget_slots
        if budget is not None and needed > budget:
            raise TableFull(
                f"{self._count + more:,} hashes would pass the table's budget of "
                f"{self._budget_bytes:,} bytes"
            )
        self._resize(max(self._slots_for(int(self._size * 2 * MAX_LOAD)), needed))

    def _resize(self, slots: int) -> None:
        old, count = self._table, self._count
        # An odd size spreads hashes whose low bits agree (keys differing in one digit).
        self._size = size = slots | 1
        self._grow_at = min(int(size * MAX_LOAD), size - 1)
        self._table = table = array("q", bytes(size * SLOT_BYTES))
        # Straight from the old slots, one int at a time: a list of the entries would
        # cost 40 bytes each, five times the table.
        for value in old:
            if value:
                at = value % size
                while table[at]:
                    at += 1
                    if at == size:
                        at = 0
                table[at] = value
        self._count = count


class RepeatsOnly:
    """A table that keeps only the values known to come more than once (`repeats`, counted
    beforehand: pipeline/intake/spill.py): any other value is new the one time it comes, and
    is not kept. It answers as a table of every value would, given that `repeats` holds every
    value added twice or more (it may hold more)."""

    __slots__ = ("_repeats", "_seen")

    def __init__(self, repeats: SeenHashes, *, budget_bytes: int | None = None) -> None:
        self._repeats = repeats
        self._seen = SeenHashes(len(repeats), budget_bytes=budget_bytes)

    def __len__(self) -> int:
        return len(self._seen)

    @property
    def nbytes(self) -> int:
        return self._repeats.nbytes + self._seen.nbytes

    def add(self, value: int) -> bool:
        return value not in self._repeats or self._seen.add(value)

    def add_all_new(self, values: Sequence[int]) -> bool:
        repeats = self._repeats
        kept = [value for value in values if value in repeats]
        return not kept or self._seen.add_all_new(kept)

    def reserve(self, expected: int) -> None:
        """Sized for its repeats already."""
