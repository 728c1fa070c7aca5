"""Wire bytes of every gradient tensor, counted once per shape on real tensors.

A compressor from :mod:`commsim.compression` compresses a real tensor and its
payload reports its bytes (packed and naive) message by message
(:meth:`~commsim.compression.Payload.messages`: size exchange, body, PowerSGD's P
then Q, a parameter-server push); parameter-server methods run a whole
:meth:`~commsim.compression.Compressor.exchange` among two workers, whose server
reply (``downloads``) gives the bytes sent back. The real tensors are the
compression module's heavy-tailed synthetic gradients
(:func:`commsim.compression.synthetic_tensors`, Student-t scaled by the layer's
fan-in).

Counting a 7B model's full tensors (up to 1.3·10^8 elements) for every compressor
would take minutes, so each *shape* is counted once and reused for every tensor
and step, as follows:

1. a tensor of at most ``4 · chunk`` elements is compressed whole: exact;
2. a larger tensor of shape ``(R, *rest)`` is counted in row chunks of ``r`` rows
   (about ``chunk`` elements; a whole multiple of 8 for bit packing, of 1000 so that
   ratios with three decimals keep whole entries, and of the compressor's block or
   bucket size). Real tensors of ``r``, ``2r`` and ``3r`` rows give every byte count
   ``f`` at those sizes; with the slope ``a = f(2r) - f(r)``, the tensor counts
   ``(R // r - 1) · a + f(r + R mod r)`` (the last chunk, with the leftover rows,
   compressed for real). That is exact when the counts are affine in the rows, as
   for block-wise codings (casts, int8, FP4, QSGD, sign bits), top-k/random-k with
   int32 indices and PowerSGD (``P`` grows with the rows, ``Q`` does not); the third
   probe must confirm it (``f(3r) == f(r) + 2a``, and every count an integer
   multiple of the unit), else the next rule applies;
3. data-dependent codings (DGC's sampled threshold, a fixed threshold, FedZip's
   clusters and Huffman code, delta-coded indices) are compressed whole up to
   ``whole_limit`` elements (exact); above it, on a real slice of the first
   ``whole_limit / row`` rows, scaled by ``R / rows`` (counts that are the same for
   the slice and its first half, such as a size field, are kept as they are) -- an
   *estimate*, whose ``deviation`` is the split-half disagreement of the packed
   upload bytes (the half slice doubled against the slice).

>>> from commsim.compression import make_compressor
>>> counter = PayloadCounter(chunk_elements=4096)
>>> c = counter.count(make_compressor("int8"), (3000, 64))     # chunks of 500 rows
>>> c.how, c.packed, 192000 + 4 * 750                          # one byte per value + a scale per 256
('affine in rows (exact)', 195000, 195000)
>>> counter.count(make_compressor("powersgd:rank=2"), (3000, 64)).packed   # 4 * (3000 + 64) * 2
24512
"""

from __future__ import annotations

import copy
import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from commsim.errors import ConfigError

__all__ = ["MessageCount", "TensorCount", "PayloadCounter", "granule"]

_FACTORS = (8, 1000)
"""Chunk sizes are multiples of these element counts: whole packed bytes, whole entries for 3-decimal ratios."""


@dataclass(frozen=True)
class MessageCount:
    """One message of a tensor's payload: its collective, label and bytes (packed and naive) per rank."""

    collective: str
    label: str
    packed: int
    naive: int


@dataclass(frozen=True)
class TensorCount:
    """Counted payload of one tensor shape under one compressor.

    Attributes
    ----------
    shape, numel:
        The tensor.
    fit:
        The payload's collective (``all_reduce``, ``all_gather``, ``parameter_server``,
        ``chained_all_reduce``).
    messages:
        Issue-ordered messages, bytes per rank.
    reply_packed, reply_naive:
        Bytes the server sends back to each worker (parameter-server methods; 0 otherwise).
    reply_compressed:
        The server's reply is a compressed payload (signSGD's vote, LIEC's top-k); otherwise the
        method leaves the downlink uncompressed and the reply is the dense fp32 tensor.
    sparse_values:
        Entries of a sparse payload (values with indices), else 0.
    how, deviation:
        How the bytes were counted (see the module docstring) and, for an estimate, the largest
        relative error of the affine fit at the third probe.
    compress, decompress:
        The compressor's modelled cost (:meth:`~commsim.compression.Compressor.cost`) as
        ``(FLOP, memory bytes)``.
    """

    shape: tuple[int, ...]
    numel: int
    fit: str
    messages: tuple[MessageCount, ...]
    reply_packed: int
    reply_naive: int
    reply_compressed: bool
    sparse_values: int
    how: str
    deviation: float
    compress: tuple[float, float]
    decompress: tuple[float, float]

    @property
    def dense_bytes(self) -> int:
        """fp32 bytes of the tensor, the reference of every ratio."""
        return 4 * self.numel

    def bytes(self, packed: bool = True) -> int:
        """Upload bytes per rank (all messages)."""
        return sum(m.packed if packed else m.naive for m in self.messages)

    @property
    def packed(self) -> int:
        """Packed upload bytes per rank."""
        return self.bytes(True)

    @property
    def naive(self) -> int:
        """Naive upload bytes per rank."""
        return self.bytes(False)


def granule(compressor) -> int:
    """Least common multiple of the block/bucket sizes of ``compressor`` and the compressors it wraps."""
    from commsim.compression import Compressor

    out = 1
    seen: list[object] = []
    stack = [compressor]
    while stack:
        item = stack.pop()
        if any(item is s for s in seen):
            continue
        seen.append(item)
        for attr in ("block_size", "bucket_size"):
            value = getattr(item, attr, None)
            if isinstance(value, int) and value > 0:
                out = math.lcm(out, value)
        stack += [v for v in vars(item).values() if isinstance(v, Compressor)]
    return out


@dataclass(frozen=True)
class _Sample:
    signature: tuple
    values: np.ndarray  # packed per message, naive per message, reply packed, reply naive, sparse values


class PayloadCounter:
    """Counts :class:`TensorCount` per ``(compressor, shape)``, caching real tensors and results.

    Parameters
    ----------
    chunk_elements:
        About the largest real tensor compressed per probe (elements).
    whole_limit:
        Largest tensor compressed whole when the chunk rule is not exact (elements).
    seed:
        Seed of the real tensors.
    """

    def __init__(self, chunk_elements: int = 1 << 19, whole_limit: int = 1 << 24, seed: int = 0) -> None:
        if chunk_elements < 64:
            raise ConfigError(field="count_chunk_elements", value=chunk_elements, rule="is below 64",
                              fix="use at least a few thousand elements (default 2^19)")
        if whole_limit < chunk_elements:
            raise ConfigError(field="count_whole_elements", value=whole_limit,
                              rule=f"is below count_chunk_elements ({chunk_elements})",
                              fix="give a whole-tensor limit of at least the chunk size (default 2^24)")
        self.chunk = int(chunk_elements)
        self.whole_limit = int(whole_limit)
        self.seed = int(seed)
        self._tensors: dict[tuple, torch.Tensor] = {}
        self._counts: dict[tuple, TensorCount] = {}

    # ------------------------------------------------------------------ public
    def count(self, compressor, shape: tuple[int, ...]) -> TensorCount:
        """The payload of a tensor of ``shape`` under ``compressor`` (fresh state: its first step)."""
        shape = tuple(int(s) for s in shape)
        key = (compressor.spec, repr(compressor), shape)
        cached = self._counts.get(key)
        if cached is not None:
            return cached
        numel = math.prod(shape)
        rows, rest = shape[0], shape[1:]
        row = math.prod(rest) if rest else 1
        r, aligned = self._chunk_rows(compressor, row)
        found = None
        if numel > 4 * self.chunk and rows >= 3 * r and aligned:
            found = self._affine(compressor, shape, numel, r)
        if found is None and (numel <= self.whole_limit or rows < 4):
            sample = self._measure(compressor, lambda worker: self._slice(shape, rows, numel, worker))
            found = (sample.signature, sample.values, "whole tensor", 0.0)
        if found is None:
            found = self._scaled(compressor, shape, numel, max(2, self.whole_limit // row))
        result = self._result(compressor, shape, numel, *found)
        self._counts[key] = result
        return result

    def count_many(self, compressor, shapes: list[tuple[int, ...]]) -> dict[tuple[int, ...], TensorCount]:
        """:meth:`count` for several shapes."""
        return {tuple(s): self.count(compressor, tuple(s)) for s in shapes}

    # ------------------------------------------------------------------ counting
    def _chunk_rows(self, compressor, row: int) -> tuple[int, bool]:
        """Rows per chunk, and whether a chunk is a whole number of the alignment unit (needed for exactness)."""
        unit_elements = math.lcm(row, *_FACTORS, granule(compressor))
        unit = unit_elements // row
        if unit_elements <= 8 * self.chunk:
            return unit * max(1, self.chunk // unit_elements), True
        return max(1, self.chunk // row), False

    def _affine(self, compressor, shape: tuple[int, ...], numel: int, r: int):
        rows, rest = shape[0], shape[1:]
        probes = [self._measure(compressor, lambda worker, k=k: self._rows(rest, r, k, numel, worker))
                  for k in (1, 2, 3)]
        whole, extra = divmod(rows, r)
        last = probes[0] if extra == 0 else self._measure(
            compressor, lambda worker: self._rows(rest, r, 1, numel, worker, extra_rows=extra))
        if len({p.signature for p in [*probes, last]}) != 1:
            return None
        f1, f2, f3 = (p.values for p in probes)
        slope = f2 - f1
        if (f3 != f1 + 2 * slope).any():
            return None  # not affine: a data-dependent coding
        return last.signature, (whole - 1) * slope + last.values, "affine in rows (exact)", 0.0

    def _scaled(self, compressor, shape: tuple[int, ...], numel: int, rows: int):
        """Estimate from a real slice of ``rows`` rows, scaled by ``shape[0] / rows``; deviation: split-half."""
        rows = min(rows, shape[0])
        rows -= rows % 2
        half = self._measure(compressor, lambda worker: self._slice(shape, rows // 2, numel, worker))
        full = self._measure(compressor, lambda worker: self._slice(shape, rows, numel, worker))
        if half.signature != full.signature:
            raise ConfigError(field="compressor", value=compressor.spec,
                              rule=f"changes its payload's structure between {rows // 2} and {rows} rows of a "
                                   f"{shape} tensor, so its bytes cannot be scaled from a slice",
                              fix="raise count_whole_elements so the whole tensor is compressed")
        factor = shape[0] / rows
        # counts that do not change with the slice (a size field, a codebook) are per tensor, the rest scale
        constant = half.values == full.values
        values = np.where(constant, full.values, np.rint(full.values * factor)).astype(np.int64)
        k = len(full.signature[1])
        half_total, full_total = int(half.values[:k].sum()), int(full.values[:k].sum())
        off = float(abs(2 * half_total - full_total) / max(full_total, 1))
        return full.signature, values, f"estimate (real {rows}-row slice x {factor:.4g})", off

    def _measure(self, compressor, tensor_of) -> _Sample:
        from commsim.compression import CollectiveFit

        fresh = copy.deepcopy(compressor)
        fresh.reset()
        server = fresh.collective is CollectiveFit.PARAMETER_SERVER
        if server:
            exchange = fresh.exchange([tensor_of(0), tensor_of(1)], key="gradient")
            upload, downloads = exchange.uploads[0], exchange.downloads
        else:
            upload, downloads = fresh.compress(tensor_of(0), key="gradient"), ()
        packed = upload.messages(packed=True)
        naive = upload.messages(packed=False)
        sparse = int(upload["values"].numel()) if "indices" in upload and "values" in upload else 0
        reply = (sum(d.bytes_packed for d in downloads), sum(d.bytes_naive for d in downloads))
        signature = (upload.collective.value, tuple((m.collective.value, m.label) for m in packed), bool(downloads),
                     sparse > 0)
        values = np.array([m.nbytes for m in packed] + [m.nbytes for m in naive] + [*reply, sparse], dtype=np.int64)
        return _Sample(signature, values)

    def _result(self, compressor, shape, numel, signature, values, how, deviation) -> TensorCount:
        fit, labels, replied, _ = signature
        k = len(labels)
        messages = tuple(MessageCount(c, label, int(values[i]), int(values[k + i]))
                         for i, (c, label) in enumerate(labels))
        reply_packed, reply_naive, sparse = (int(v) for v in values[2 * k:])
        if fit == "parameter_server" and not replied:
            reply_packed = reply_naive = 4 * numel  # the method leaves the downlink dense (fp32)
        cost = compressor.cost(shape)
        return TensorCount(shape=shape, numel=numel, fit=fit, messages=messages, reply_packed=reply_packed,
                           reply_naive=reply_naive, reply_compressed=bool(replied), sparse_values=sparse, how=how,
                           deviation=deviation, compress=(float(cost.compress.flops), float(cost.compress.memory_bytes)),
                           decompress=(float(cost.decompress.flops), float(cost.decompress.memory_bytes)))

    # ------------------------------------------------------------------ real tensors
    def _generate(self, key: tuple, shape: tuple[int, ...], scale: float = 1.0) -> torch.Tensor:
        tensor = self._tensors.get(key)
        if tensor is None:
            from commsim.compression import synthetic_tensors

            seed = (self.seed * 1_000_003 + zlib.crc32(repr(key).encode())) % (1 << 62)
            tensor = synthetic_tensors({"g": shape}, seed=seed)["g"]
            if scale != 1.0:
                tensor = tensor * scale
            self._tensors[key] = tensor
        return tensor

    def _slice(self, shape: tuple[int, ...], rows: int, numel: int, worker: int) -> torch.Tensor:
        """The first ``rows`` rows of a real tensor of ``shape`` (all of it when ``rows == shape[0]``)."""
        rest = shape[1:]
        scale = math.sqrt(rows / numel) if not rest else 1.0  # a 1-D slice keeps the whole tensor's fan-in
        return self._generate(("slice", rest, rows, numel if not rest else 0, worker), (rows, *rest), scale)

    def _rows(self, rest: tuple[int, ...], r: int, chunks: int, numel: int, worker: int,
              extra_rows: int = 0) -> torch.Tensor:
        """``chunks`` real chunks of ``r`` rows (plus ``extra_rows`` more), drawn as the full tensor's rows would be.

        A 1-D tensor's chunks are rescaled to the full tensor's fan-in (its length), so every chunk has the
        distribution of the tensor it stands for.
        """
        key = ("rows", rest, r, chunks, extra_rows, numel if not rest else 0, worker)
        cached = self._tensors.get(key)
        if cached is not None:
            return cached
        scale = math.sqrt(r / numel) if not rest else 1.0
        parts = [self._generate(("chunk", rest, r, i, numel if not rest else 0, worker), (r, *rest), scale)
                 for i in range(chunks)]
        if extra_rows:
            extra_scale = math.sqrt(extra_rows / numel) if not rest else 1.0
            parts.append(self._generate(("extra", rest, extra_rows, numel if not rest else 0, worker),
                                        (extra_rows, *rest), extra_scale))
        tensor = parts[0] if len(parts) == 1 else torch.cat(parts)
        if len(parts) > 1:
            self._tensors[key] = tensor
        return tensor

    def clear(self) -> None:
        """Drop the cached real tensors (the counts stay)."""
        self._tensors.clear()
