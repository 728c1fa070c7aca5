"""The Huffman code is a valid, optimal prefix code and round-trips; bit packing and varints round-trip."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from commsim.compression import HuffmanCode
from commsim.compression._bits import pack_bits, packed_nbytes, unpack_bits, varint_decode, varint_encode
from commsim.errors import ConfigError

counts_strategy = st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=40).filter(
    lambda counts: any(counts)
)


def _words_prefix_free(words: list[str]) -> bool:
    return not any(a != b and b.startswith(a) for a, b in itertools.permutations(words, 2))


class TestCode:
    @given(counts_strategy)
    def test_prefix_free_and_complete(self, counts):
        code = HuffmanCode.from_counts(counts)
        words = list(code.codewords().values())
        assert len(words) == sum(1 for c in counts if c > 0)
        assert len(set(words)) == len(words)
        assert _words_prefix_free(words)  # brute force, independent of is_prefix_free()
        assert code.is_prefix_free()
        if len(words) > 1:
            # A Huffman code is complete: its Kraft sum is exactly 1.
            assert sum(2.0 ** -len(w) for w in words) == 1.0

    @given(counts_strategy)
    def test_optimal_within_one_bit_of_the_entropy(self, counts):
        code = HuffmanCode.from_counts(counts)
        total = sum(counts)
        present = [c for c in counts if c > 0]
        if len(present) < 2:
            return
        mean_length = sum(c * length for c, length in zip(counts, code.lengths, strict=True)) / total
        entropy = -sum(c / total * math.log2(c / total) for c in present)
        assert entropy - 1e-9 <= mean_length < entropy + 1

    def test_textbook_example(self):
        # The classic six-symbol example: one 1-bit word, three of 3 bits, two of 4 bits.
        code = HuffmanCode.from_counts([45, 13, 12, 16, 9, 5])
        assert code.lengths == (1, 3, 3, 3, 4, 4)
        assert code.codewords()[0] == "0"

    def test_single_symbol_still_costs_one_bit(self):
        code = HuffmanCode.from_counts([0, 7, 0])
        assert code.lengths == (0, 1, 0)
        stream, nbits = code.encode(torch.tensor([1, 1, 1]))
        assert nbits == 3
        assert code.decode(stream, nbits, 3).tolist() == [1, 1, 1]

    def test_non_prefix_code_is_detected(self):
        # Lengths (1, 1, 1) break the Kraft inequality: no prefix code has them.
        with pytest.raises(ConfigError, match="Kraft"):
            HuffmanCode((1, 1, 1))

    def test_unused_symbol_cannot_be_encoded(self):
        code = HuffmanCode.from_counts([5, 0, 5])
        with pytest.raises(ConfigError, match="no codeword"):
            code.encode(torch.tensor([1]))


class TestRoundTrip:
    @given(counts_strategy, st.integers(min_value=1, max_value=3000), st.integers(min_value=0, max_value=2**16))
    def test_encode_decode_exact(self, counts, length, seed):
        code = HuffmanCode.from_counts(counts)
        present = torch.tensor([s for s, c in enumerate(counts) if c > 0])
        generator = torch.Generator().manual_seed(seed)
        symbols = present[torch.randint(0, present.numel(), (length,), generator=generator)]
        stream, nbits = code.encode(symbols)
        assert nbits == code.encoded_bits(symbols)
        assert stream.numel() == packed_nbytes(nbits, 1)
        assert torch.equal(code.decode(stream, nbits, length), symbols)
        # The zero padding of the last byte does not confuse the decoder.
        assert torch.equal(code.decode(stream, stream.numel() * 8, length), symbols)

    def test_long_codes_decode_without_a_table(self):
        # Fibonacci counts give the deepest possible tree: codes far longer than the 16-bit table.
        fibonacci = [1, 1]
        while len(fibonacci) < 30:
            fibonacci.append(fibonacci[-1] + fibonacci[-2])
        code = HuffmanCode.from_counts(fibonacci)
        assert code.max_length == 29
        symbols = torch.randint(0, 30, (2000,), generator=torch.Generator().manual_seed(0))
        stream, nbits = code.encode(symbols)
        assert torch.equal(code.decode(stream, nbits, 2000), symbols)

    def test_truncated_stream_is_an_error(self):
        code = HuffmanCode.from_counts([1, 1, 1, 1])
        stream, nbits = code.encode(torch.tensor([0, 1, 2, 3]))
        with pytest.raises(ConfigError, match="stream"):
            code.decode(stream, nbits - 3, 4)


class TestBitsAndVarints:
    @given(st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=300), st.integers(0, 2**16))
    def test_pack_unpack(self, width, count, seed):
        codes = torch.randint(0, 2**width, (count,), generator=torch.Generator().manual_seed(seed))
        packed = pack_bits(codes, width)
        assert packed.numel() == math.ceil(count * width / 8)
        assert torch.equal(unpack_bits(packed, width, count), codes)

    def test_bit_order_is_lsb_first(self):
        assert pack_bits(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1]), 1).tolist() == [0b10000001]
        assert pack_bits(torch.tensor([0x3, 0xA]), 4).tolist() == [0xA3]

    @given(st.lists(st.integers(min_value=0, max_value=2**62), max_size=200))
    def test_varint_round_trip(self, values):
        tensor = torch.tensor(values, dtype=torch.int64)
        stream = varint_encode(tensor)
        expected = sum(max(1, math.ceil(v.bit_length() / 7)) for v in values)
        assert stream.numel() == expected
        assert torch.equal(varint_decode(stream), tensor)

    def test_varint_is_self_delimiting(self):
        # Every number ends at the first byte whose high bit is clear: a prefix code.
        stream = varint_encode(torch.tensor([300, 5]))
        assert stream.tolist() == [0xAC, 0x02, 0x05]
        with pytest.raises(ConfigError, match="middle"):
            varint_decode(stream[:1])
