"""Canonical Huffman codes over small alphabets, with vectorised encoding and decoding.

The code is built from symbol counts (a heap over the alphabet, which is small),
then made *canonical*: codewords of one length are consecutive integers, ordered
by symbol. A canonical code is fully described by its code lengths, so the
lengths are all a receiver needs (one byte per symbol on the wire).

Encoding and decoding never loop over the encoded symbols in Python. Decoding
uses the fact that a prefix code decodes deterministically from any bit
position: for every position ``p`` of the stream we look up which codeword would
start there (its symbol and length ``L[p]``), which defines a successor
``p + L[p]``. The real codeword starts are the positions reachable from 0; they
are found by pointer doubling in ``log2(symbols)`` vectorised rounds.

>>> import torch
>>> code = HuffmanCode.from_counts([45, 13, 12, 16, 9, 5])
>>> code.lengths
(1, 3, 3, 3, 4, 4)
>>> code.is_prefix_free()
True
>>> symbols = torch.tensor([0, 5, 3, 0, 1])
>>> stream, nbits = code.encode(symbols)
>>> nbits == code.encoded_bits(symbols)
True
>>> code.decode(stream, nbits, count=5).tolist()
[0, 5, 3, 0, 1]
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from commsim.compression._bits import pack_bits, unpack_bits
from commsim.errors import ConfigError

__all__ = ["HuffmanCode", "huffman_code_lengths"]

# Windows of the longest codeword are held in int64. Codeword lengths grow at most like
# log_phi(total count), so 62 bits would need more than 10**12 symbols to be exceeded.
_MAX_CODE_LENGTH = 62
# Codes up to this long decode through a direct lookup table of 2**_TABLE_BITS entries.
_TABLE_BITS = 16


def huffman_code_lengths(counts: Sequence[int]) -> list[int]:
    """Optimal (Huffman) codeword length of every symbol; 0 for symbols that never occur.

    A lone occurring symbol gets length 1 so that every occurrence still costs a bit
    and the stream length tells the receiver how many symbols there are.
    """
    lengths = [0] * len(counts)
    present = [symbol for symbol, count in enumerate(counts) if count > 0]
    if not present:
        return lengths
    if len(present) == 1:
        lengths[present[0]] = 1
        return lengths
    # Nodes 0..len(counts)-1 are leaves; merged nodes get new ids. parent[] records the tree.
    parent: dict[int, int] = {}
    heap = [(int(counts[symbol]), symbol, symbol) for symbol in present]
    heapq.heapify(heap)
    next_id = len(counts)
    while len(heap) > 1:
        count_a, _, node_a = heapq.heappop(heap)
        count_b, _, node_b = heapq.heappop(heap)
        parent[node_a] = next_id
        parent[node_b] = next_id
        # The tie-break key keeps the construction deterministic for equal counts.
        heapq.heappush(heap, (count_a + count_b, next_id, next_id))
        next_id += 1
    depth_of: dict[int, int] = {next_id - 1: 0}
    for node in range(next_id - 2, -1, -1):
        if node in parent:
            depth_of[node] = depth_of[parent[node]] + 1
    for symbol in present:
        lengths[symbol] = depth_of[symbol]
    return lengths


@dataclass(frozen=True)
class HuffmanCode:
    """A canonical prefix code: ``lengths[s]`` bits for symbol ``s`` (0 = symbol unused).

    ``codes[s]`` is the codeword of ``s`` as an integer, written most significant bit
    first into the stream.
    """

    lengths: tuple[int, ...]

    def __post_init__(self) -> None:
        if any(length < 0 or length > _MAX_CODE_LENGTH for length in self.lengths):
            raise ConfigError(field="lengths", value=self.lengths, rule=f"are not all in 0..{_MAX_CODE_LENGTH}",
                              fix=f"give code lengths of at most {_MAX_CODE_LENGTH} bits (0 for an unused symbol)")
        kraft = sum(2.0 ** -length for length in self.lengths if length > 0)
        if kraft > 1.0 + 1e-12:
            raise ConfigError(field="lengths", value=self.lengths,
                              rule=f"violate the Kraft inequality (sum {kraft:.6g} > 1): no prefix code has them",
                              fix="build the code with HuffmanCode.from_counts, or lengthen some codewords")

    @classmethod
    def from_counts(cls, counts: Sequence[int]) -> HuffmanCode:
        """The Huffman code of a symbol histogram."""
        return cls(tuple(huffman_code_lengths(counts)))

    @property
    def num_symbols(self) -> int:
        """Size of the alphabet (including unused symbols)."""
        return len(self.lengths)

    @property
    def max_length(self) -> int:
        """Length in bits of the longest codeword."""
        return max(self.lengths, default=0)

    @property
    def codes(self) -> tuple[int, ...]:
        """Canonical codeword of every symbol (0 for unused symbols)."""
        codes = [0] * len(self.lengths)
        code = 0
        previous_length = 0
        for symbol in self._canonical_order():
            length = self.lengths[symbol]
            code <<= length - previous_length
            codes[symbol] = code
            code += 1
            previous_length = length
        return tuple(codes)

    def codewords(self) -> dict[int, str]:
        """Codewords as bit strings, for inspection and tests: ``{symbol: '0110'}``."""
        return {
            symbol: format(code, f"0{length}b")
            for symbol, (code, length) in enumerate(zip(self.codes, self.lengths, strict=True))
            if length > 0
        }

    def is_prefix_free(self) -> bool:
        """True when no codeword is a prefix of another (checked on the bit strings)."""
        words = sorted(self.codewords().values())
        # After sorting, a word that is a prefix of another sorts right before one it prefixes.
        return all(not later.startswith(earlier) for earlier, later in itertools.pairwise(words))

    def encoded_bits(self, symbols: torch.Tensor) -> int:
        """Exact length in bits of ``symbols`` encoded with this code."""
        table = torch.tensor(self.lengths, dtype=torch.int64)
        return int(table[symbols.reshape(-1).to(torch.int64)].sum()) if symbols.numel() else 0

    def encode(self, symbols: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Encode ``symbols``; returns the packed stream (uint8, zero-padded) and its length in bits."""
        flat = symbols.reshape(-1).to(torch.int64)
        if flat.numel() == 0:
            return torch.zeros(0, dtype=torch.uint8), 0
        lengths = torch.tensor(self.lengths, dtype=torch.int64)[flat]
        if bool((lengths == 0).any()):
            raise ConfigError(field="symbols", value=int(flat[lengths == 0][0]),
                              rule="has no codeword (its count was zero)",
                              fix="build the code from counts that include every symbol to encode")
        codes = torch.tensor(self.codes, dtype=torch.int64)[flat]
        starts = torch.cumsum(lengths, 0) - lengths
        total = int(starts[-1] + lengths[-1])
        bits = torch.zeros(total, dtype=torch.uint8)
        # One pass per bit position of the codewords (few), each over the symbols that long.
        for offset in range(self.max_length):
            longer = lengths > offset
            if not bool(longer.any()):
                break
            bit = (codes[longer] >> (lengths[longer] - 1 - offset)) & 1
            bits[starts[longer] + offset] = bit.to(torch.uint8)
        return pack_bits(bits, 1), total

    def decode(self, stream: torch.Tensor, nbits: int, count: int) -> torch.Tensor:
        """Decode ``count`` symbols from the first ``nbits`` bits of ``stream`` (int64 result)."""
        if count == 0:
            return torch.zeros(0, dtype=torch.int64)
        width = self.max_length
        if width == 0:
            raise ConfigError(field="code", value=self.lengths, rule="is empty: it cannot decode anything",
                              fix="decode with the code the stream was encoded with")
        bits = unpack_bits(stream, 1, nbits)
        # Window of `width` bits starting at every position (zeros past the end).
        padded = torch.cat([bits, bits.new_zeros(width)])
        window = torch.zeros(nbits, dtype=torch.int64)
        for offset in range(width):
            window = (window << 1) | padded[offset : offset + nbits]
        symbol_at, length_at = self._lookup(window, width)
        # Successor of every position; position nbits is an absorbing end marker. int32 indices
        # keep the gathers below cheap; a stream of 2**31 bits is far beyond any payload here.
        jump = torch.minimum(torch.arange(nbits) + length_at, torch.tensor(nbits)).to(torch.int32)
        jump = torch.cat([jump, torch.tensor([nbits], dtype=torch.int32)])
        # starts[i] is the i-th codeword start; each round doubles the known prefix of that orbit.
        starts = torch.zeros(1, dtype=torch.int32)
        while starts.numel() < count:
            starts = torch.cat([starts, torch.index_select(jump, 0, starts)])
            jump = torch.index_select(jump, 0, jump)
        starts = starts[:count].to(torch.int64)
        if int(starts[-1]) >= nbits:
            raise ConfigError(field="stream", value=f"{nbits} bits", rule=f"holds fewer than {count} codewords",
                              fix="give the whole stream and the count it was encoded with")
        if int(starts[-1] + length_at[starts[-1]]) > nbits:
            raise ConfigError(field="stream", value=f"{nbits} bits", rule="ends inside its last codeword",
                              fix="give the whole stream and the bit count encode returned")
        return symbol_at[starts]

    def _canonical_order(self) -> list[int]:
        return sorted((s for s, length in enumerate(self.lengths) if length > 0), key=lambda s: (self.lengths[s], s))

    def _lookup(self, window: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Symbol and codeword length that a ``width``-bit window starts with."""
        codes = self.codes
        if width <= _TABLE_BITS:
            # Direct table: every window value that starts with codeword c of length l maps to c.
            symbol_table = torch.zeros(1 << width, dtype=torch.int64)
            length_table = torch.ones(1 << width, dtype=torch.int64)
            for symbol, length in enumerate(self.lengths):
                if length:
                    low = codes[symbol] << (width - length)
                    high = (codes[symbol] + 1) << (width - length)
                    symbol_table[low:high] = symbol
                    length_table[low:high] = length
            return symbol_table[window], length_table[window]
        # Long codes: test each codeword length in turn (canonical codes of one length are consecutive).
        order = self._canonical_order()
        ordered_symbols = torch.tensor(order, dtype=torch.int64)
        symbol_at = torch.zeros_like(window)
        length_at = torch.ones_like(window)
        found = torch.zeros_like(window, dtype=torch.bool)
        rank = 0
        for length in range(1, width + 1):
            at_length = [s for s in order if self.lengths[s] == length]
            if not at_length:
                continue
            index = (window >> (width - length)) - codes[at_length[0]]
            hit = (~found) & (index >= 0) & (index < len(at_length))
            symbol_at = torch.where(hit, ordered_symbols[(rank + index).clamp(0, len(order) - 1)], symbol_at)
            length_at = torch.where(hit, torch.full_like(window, length), length_at)
            found |= hit
            rank += len(at_length)
        return symbol_at, length_at
