"""Bit-level wire formats: fixed-width bit packing and LEB128 varints, vectorised in torch.

Bit order is little-endian everywhere: element ``i`` of a ``width``-bit stream
occupies stream bits ``i*width .. i*width+width-1`` (least significant bit
first), and stream bit ``b`` is bit ``b % 8`` of byte ``b // 8``. The last byte
is padded with zero bits.

>>> import torch
>>> packed = pack_bits(torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1]), width=1)
>>> packed.tolist()                  # 9 bits need 2 bytes
[13, 1]
>>> unpack_bits(packed, width=1, count=9).tolist()
[1, 0, 1, 1, 0, 0, 0, 0, 1]
>>> varint_encode(torch.tensor([5, 300])).tolist()
[5, 172, 2]
"""

from __future__ import annotations

import torch

from commsim.errors import ConfigError

__all__ = [
    "pack_bits",
    "packed_nbytes",
    "unpack_bits",
    "varint_decode",
    "varint_encode",
    "varint_lengths",
]

_MAX_WIDTH = 62  # codes are held in int64; keep a margin below the sign bit


def packed_nbytes(count: int, width: int) -> int:
    """Bytes needed for ``count`` codes of ``width`` bits, padded to a whole byte."""
    return (count * width + 7) // 8


def _check_width(width: int) -> None:
    if not 1 <= width <= _MAX_WIDTH:
        raise ConfigError(field="width", value=width, rule=f"is not a bit width in 1..{_MAX_WIDTH}",
                          fix=f"give a width from 1 to {_MAX_WIDTH} bits (codes are held in int64)")


def pack_bits(codes: torch.Tensor, width: int) -> torch.Tensor:
    """Pack non-negative integer ``codes`` (each below ``2**width``) into a uint8 tensor.

    Returns ``packed_nbytes(codes.numel(), width)`` bytes.
    """
    _check_width(width)
    flat = codes.reshape(-1)
    count = flat.numel()
    if count == 0:
        return torch.zeros(0, dtype=torch.uint8)
    if 8 % width == 0:
        # Several codes per byte: OR shifted columns, one pass per slot in the byte.
        per_byte = 8 // width
        small = flat.to(torch.uint8)
        pad = (-count) % per_byte
        if pad:
            small = torch.cat([small, small.new_zeros(pad)])
        columns = small.view(-1, per_byte)
        out = columns[:, 0].clone()
        for slot in range(1, per_byte):
            out |= columns[:, slot] << (slot * width)
        return out
    # Any other width: spread each code over `width` single bits, then pack those.
    wide = flat.to(torch.int64)
    bits = torch.empty((count, width), dtype=torch.uint8)
    for bit in range(width):
        bits[:, bit] = ((wide >> bit) & 1).to(torch.uint8)
    return pack_bits(bits.view(-1), 1)


def unpack_bits(packed: torch.Tensor, width: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``count`` codes as an int64 tensor."""
    _check_width(width)
    if packed.dtype != torch.uint8:
        raise ConfigError(field="packed", value=str(packed.dtype), rule="is not a uint8 tensor",
                          fix="give the bytes pack_bits returned")
    needed = packed_nbytes(count, width)
    if packed.numel() < needed:
        raise ConfigError(field="packed", value=f"{packed.numel()} bytes",
                          rule=f"is too short: {count} codes of {width} bits need {needed} bytes",
                          fix="give the whole packed stream, or the count and width it was packed with")
    if count == 0:
        return torch.zeros(0, dtype=torch.int64)
    data = packed[:needed]
    if 8 % width == 0:
        shifts = torch.arange(0, 8, width, dtype=torch.uint8)
        columns = (data[:, None] >> shifts) & ((1 << width) - 1)
        return columns.reshape(-1)[:count].to(torch.int64)
    bits = unpack_bits(data, 1, count * width).view(count, width)
    out = torch.zeros(count, dtype=torch.int64)
    for bit in range(width):
        out |= bits[:, bit] << bit
    return out


def varint_lengths(values: torch.Tensor) -> torch.Tensor:
    """Bytes of the LEB128 encoding of each non-negative value (1 byte per started 7 bits)."""
    values = values.reshape(-1).to(torch.int64)
    lengths = torch.ones_like(values)
    for group in range(1, 9):
        lengths += (values >= (1 << (7 * group))).to(torch.int64)
    return lengths


def varint_encode(values: torch.Tensor) -> torch.Tensor:
    """LEB128-encode non-negative integers: 7 payload bits per byte, high bit = 'more follows'.

    LEB128 is a prefix code: every number ends with the first byte whose high bit
    is clear, so a stream decodes without separators.
    """
    values = values.reshape(-1).to(torch.int64)
    if values.numel() and int(values.min()) < 0:
        raise ConfigError(field="values", value=int(values.min()), rule="is negative: LEB128 varints are unsigned",
                          fix="encode non-negative values (delta-code or offset them first)")
    lengths = varint_lengths(values)
    total = int(lengths.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.uint8)
    owner = torch.repeat_interleave(torch.arange(values.numel()), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    position = torch.arange(total) - starts[owner]
    payload = (values[owner] >> (7 * position)) & 0x7F
    more = (position < lengths[owner] - 1).to(torch.int64) << 7
    return (payload | more).to(torch.uint8)


def varint_decode(stream: torch.Tensor) -> torch.Tensor:
    """Decode a whole LEB128 stream into an int64 tensor (one value per terminating byte)."""
    if stream.dtype != torch.uint8:
        raise ConfigError(field="stream", value=str(stream.dtype), rule="is not a uint8 tensor",
                          fix="give the bytes varint_encode returned")
    if stream.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    last = (stream & 0x80) == 0
    if not bool(last[-1]):
        raise ConfigError(field="stream", value=f"{stream.numel()} bytes", rule="ends in the middle of a number",
                          fix="give the whole varint stream (its last byte has the high bit clear)")
    number = torch.cumsum(last.to(torch.int64), 0) - last.to(torch.int64)
    count = int(last.sum())
    first = torch.ones_like(last)
    first[1:] = last[:-1]
    start_of_number = torch.nonzero(first).reshape(-1)
    position = torch.arange(stream.numel()) - start_of_number[number]
    contributions = (stream & 0x7F).to(torch.int64) << (7 * position)
    return torch.zeros(count, dtype=torch.int64).index_add_(0, number, contributions)
