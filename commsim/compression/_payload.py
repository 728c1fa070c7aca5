"""Payloads: what a compressor puts on the wire, as named fields whose bytes are counted exactly.

A :class:`Payload` is a tuple of :class:`Field` objects (values, indices, scales,
norms, sizes, ...). Each field holds its content as a tensor and two *codings*:
how a straightforward implementation sends it (``naive``: one byte per sign,
int64 indices, fp32 scales) and how a careful one does (``packed``: bits packed,
int32 or delta-coded indices, Huffman codes). The byte counts are computed from
the field contents, and :meth:`Payload.to_wire` produces the actual bytes, so a
count can always be checked against a real buffer.

The payload also states the collective it needs (:class:`CollectiveFit`) and
turns into a list of :class:`Message` objects that a network model can schedule.

>>> import torch
>>> signs = Field("signs", torch.tensor([1, 0, 1], dtype=torch.uint8), naive=Raw(torch.int8), packed=Bits(1))
>>> payload = Payload("signsgd", (3,), torch.float32, (signs,), CollectiveFit.PARAMETER_SERVER)
>>> payload.bytes_naive, payload.bytes_packed
(3, 1)
>>> payload.messages()
[Message(collective=<CollectiveFit.PARAMETER_SERVER: 'parameter_server'>, nbytes=1, label='push', fields=('signs',))]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from types import MappingProxyType
from typing import Any

import torch

from commsim.compression._bits import pack_bits, packed_nbytes, unpack_bits, varint_decode, varint_encode
from commsim.compression._bits import varint_lengths as _varint_lengths
from commsim.compression._huffman import HuffmanCode
from commsim.errors import ConfigError

__all__ = [
    "FP32_BYTES",
    "Bits",
    "Coding",
    "CollectiveFit",
    "DeltaVarint",
    "Field",
    "Huffman",
    "Message",
    "Payload",
    "Raw",
]

FP32_BYTES = 4
"""Bytes per element of the dense fp32 reference every compression ratio is measured against."""


class CollectiveFit(str, Enum):
    """The collective a payload needs on the network.

    - ``all_reduce``: every rank's payload has the same layout and can be summed in
      wire format (dense tensors, random-k with a shared seed).
    - ``all_gather``: payloads cannot be summed in wire format (sparse supports that
      differ between ranks, per-rank scales), so every rank receives every other
      rank's payload; volume grows with the number of ranks. Variable-size payloads
      need a size exchange first.
    - ``parameter_server``: workers push to a server that aggregates and sends back
      (majority vote, federated uploads, bidirectional compression).
    - ``chained_all_reduce``: several all-reduces that depend on each other with
      computation in between (PowerSGD's P, then Q).
    """

    ALL_REDUCE = "all_reduce"
    ALL_GATHER = "all_gather"
    PARAMETER_SERVER = "parameter_server"
    CHAINED_ALL_REDUCE = "chained_all_reduce"


# --------------------------------------------------------------------------------------------
# Codings: how a field's content becomes bytes.


class Coding(ABC):
    """How one field's content is written as bytes. Subclasses are small frozen dataclasses."""

    @abstractmethod
    def nbytes(self, data: torch.Tensor) -> int:
        """Exact number of bytes :meth:`encode` produces for ``data``."""

    @abstractmethod
    def encode(self, data: torch.Tensor) -> torch.Tensor:
        """The wire bytes of ``data`` as a uint8 tensor."""

    @abstractmethod
    def decode(self, wire: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        """Rebuild a tensor like ``template`` (same shape and dtype) from wire bytes."""

    @abstractmethod
    def describe(self) -> str:
        """Short human-readable name, e.g. ``int32`` or ``1 bit``."""


@dataclass(frozen=True)
class Raw(Coding):
    """Each element as one value of ``dtype`` (little-endian, as in memory)."""

    dtype: torch.dtype

    def nbytes(self, data: torch.Tensor) -> int:
        return data.numel() * self.dtype.itemsize

    def encode(self, data: torch.Tensor) -> torch.Tensor:
        return data.detach().reshape(-1).to(self.dtype).contiguous().view(torch.uint8)

    def decode(self, wire: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        values = wire.contiguous().view(self.dtype)
        return values.to(template.dtype).reshape(template.shape)

    def describe(self) -> str:
        return str(self.dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Bits(Coding):
    """Integer codes of ``width`` bits each, packed back to back (LSB first).

    ``offset`` is added before packing so that signed values fit unsigned codes
    (a ternary value in {-1, 0, 1} is sent as ``Bits(2, offset=1)``).
    """

    width: int
    offset: int = 0

    def nbytes(self, data: torch.Tensor) -> int:
        return packed_nbytes(data.numel(), self.width)

    def encode(self, data: torch.Tensor) -> torch.Tensor:
        codes = data.reshape(-1).to(torch.int64) + self.offset if self.offset else data.reshape(-1)
        return pack_bits(codes, self.width)

    def decode(self, wire: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        codes = unpack_bits(wire, self.width, template.numel()) - self.offset
        return codes.to(template.dtype).reshape(template.shape)

    def describe(self) -> str:
        return f"{self.width} bit" + ("s" if self.width > 1 else "")


@dataclass(frozen=True)
class DeltaVarint(Coding):
    """Strictly increasing indices as gaps (``i[0]``, then ``i[j] - i[j-1] - 1``), each LEB128.

    LEB128 spends one byte per started 7 bits, so a gap below 128 costs one byte,
    below 16384 two bytes. The code is prefix-free: each number ends at the first
    byte with a clear high bit.
    """

    def nbytes(self, data: torch.Tensor) -> int:
        return int(_varint_lengths(self._gaps(data)).sum()) if data.numel() else 0

    def encode(self, data: torch.Tensor) -> torch.Tensor:
        return varint_encode(self._gaps(data))

    def decode(self, wire: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        gaps = varint_decode(wire)
        indices = torch.cumsum(gaps + 1, 0) - 1
        return indices.to(template.dtype).reshape(template.shape)

    def describe(self) -> str:
        return "delta+varint"

    @staticmethod
    def _gaps(data: torch.Tensor) -> torch.Tensor:
        flat = data.reshape(-1).to(torch.int64)
        if flat.numel() == 0:
            return flat
        gaps = torch.diff(flat, prepend=flat.new_tensor([-1])) - 1
        if int(gaps.min()) < 0:
            raise ConfigError(field="indices", value=int(flat[int(torch.argmin(gaps))]),
                              rule="breaks the order delta coding needs (strictly increasing, non-negative)",
                              fix="sort the indices and drop duplicates before delta coding")
        return gaps


@dataclass(frozen=True)
class Huffman(Coding):
    """Symbols coded with a canonical Huffman ``code``, zero-padded to a whole byte.

    The code itself travels separately (its code lengths are a field of the payload).
    """

    code: HuffmanCode

    def nbytes(self, data: torch.Tensor) -> int:
        return (self.code.encoded_bits(data) + 7) // 8

    def encode(self, data: torch.Tensor) -> torch.Tensor:
        stream, _ = self.code.encode(data)
        return stream

    def decode(self, wire: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        # Zero padding may look like extra codewords, so decode exactly as many as expected.
        symbols = self.code.decode(wire, wire.numel() * 8, template.numel())
        return symbols.to(template.dtype).reshape(template.shape)

    def describe(self) -> str:
        return f"Huffman ({self.code.num_symbols} symbols)"


# --------------------------------------------------------------------------------------------
# Fields, messages, payloads.


@dataclass(frozen=True)
class Field:
    """One named part of a payload.

    Parameters
    ----------
    name:
        ``values``, ``indices``, ``scales``, ``norms``, ``sizes``, ...
    data:
        The content as held in memory (its dtype is the in-memory one, not the wire one).
    naive, packed:
        Wire codings of a straightforward and of a packed implementation. ``None`` means
        the field is not sent in that form (a Huffman codebook has no naive counterpart).
    message:
        Fields with the same label travel in the same message (``body``; ``sizes`` for a
        size exchange; ``P`` and ``Q`` for PowerSGD's chained all-reduces).
    """

    name: str
    data: torch.Tensor
    naive: Coding | None
    packed: Coding | None
    message: str = "body"

    def coding(self, packed: bool = True) -> Coding | None:
        """The packed or the naive coding."""
        return self.packed if packed else self.naive

    def nbytes(self, packed: bool = True) -> int:
        """Exact wire bytes of this field in the chosen form."""
        coding = self.coding(packed)
        return 0 if coding is None else coding.nbytes(self.data)

    @property
    def bytes_naive(self) -> int:
        """Bytes as a straightforward implementation sends the field."""
        return self.nbytes(packed=False)

    @property
    def bytes_packed(self) -> int:
        """Bytes of the packed wire form."""
        return self.nbytes(packed=True)


@dataclass(frozen=True)
class Message:
    """One collective operation a payload turns into: ``nbytes`` per rank, in issue order.

    ``collective`` is ``all_reduce``, ``all_gather`` or ``parameter_server`` (a chained
    all-reduce becomes several ``all_reduce`` messages, each waiting for the previous).
    """

    collective: CollectiveFit
    nbytes: int
    label: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Payload:
    """A compressed tensor as it travels: named fields plus what the receiver needs to rebuild it.

    Parameters
    ----------
    method:
        Name of the compressor that produced it (its decompressor checks this).
    shape, dtype:
        Shape and dtype of the dense tensor it stands for.
    fields:
        The wire content.
    collective:
        The collective the payload needs.
    side_info:
        What the receiver already holds and is therefore *not* sent: a shared seed and
        step, or state the receiver mirrors from earlier rounds. Never counted as bytes.
    """

    method: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    fields: tuple[Field, ...]
    collective: CollectiveFit
    side_info: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ConfigError(field="fields", value=names, rule="name a field more than once",
                              fix="give each payload field its own name")

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.field(name).data

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.fields)

    def field(self, name: str) -> Field:
        """The field called ``name``."""
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(f"payload of {self.method} has no field {name!r}; it has {[f.name for f in self.fields]}")

    @property
    def numel(self) -> int:
        """Elements of the dense tensor the payload stands for."""
        n = 1
        for size in self.shape:
            n *= size
        return n

    @property
    def dense_bytes(self) -> int:
        """Bytes of the dense tensor in fp32: the reference of every compression ratio."""
        return self.numel * FP32_BYTES

    def nbytes(self, packed: bool = True) -> int:
        """Total wire bytes in the packed or naive form."""
        return sum(f.nbytes(packed) for f in self.fields)

    @property
    def bytes_naive(self) -> int:
        """Bytes as a straightforward implementation sends them (one byte per sign, int64 indices, fp32 scales)."""
        return self.nbytes(packed=False)

    @property
    def bytes_packed(self) -> int:
        """Bytes with bits packed, narrow or delta-coded indices and entropy coding where the method has it."""
        return self.nbytes(packed=True)

    def ratio(self, packed: bool = True) -> float:
        """Compression ratio against the dense fp32 tensor (``inf`` for an empty payload)."""
        sent = self.nbytes(packed)
        return float("inf") if sent == 0 else self.dense_bytes / sent

    @property
    def variable_size(self) -> bool:
        """True when the receiver cannot know the size in advance (the payload carries ``sizes``)."""
        return any(f.message == "sizes" for f in self.fields)

    def messages(self, packed: bool = True) -> list[Message]:
        """The collectives this payload turns into, in issue order, with per-rank bytes.

        - ``all_reduce``: one message.
        - ``all_gather``: a size exchange first when the size varies (an all-gather of the
          ``sizes`` field), then the body.
        - ``parameter_server``: one ``push`` message to the server (the server's reply is
          its own payload).
        - ``chained_all_reduce``: one ``all_reduce`` per field group, each depending on the
          previous one.
        """
        groups: dict[str, list[Field]] = {}
        for item in self.fields:
            groups.setdefault(item.message, []).append(item)

        def message(collective: CollectiveFit, label: str, members: list[Field]) -> Message:
            return Message(collective, sum(m.nbytes(packed) for m in members), label, tuple(m.name for m in members))

        if self.collective is CollectiveFit.PARAMETER_SERVER:
            everything = [f for members in groups.values() for f in members]
            return [message(CollectiveFit.PARAMETER_SERVER, "push", everything)]
        if self.collective is CollectiveFit.CHAINED_ALL_REDUCE:
            return [message(CollectiveFit.ALL_REDUCE, label, members) for label, members in groups.items()]
        out: list[Message] = []
        if "sizes" in groups:
            out.append(message(CollectiveFit.ALL_GATHER, "size_exchange", groups.pop("sizes")))
        body = [f for members in groups.values() for f in members]
        out.append(message(self.collective, "body", body))
        return out

    def to_wire(self, packed: bool = True) -> dict[str, torch.Tensor]:
        """The actual bytes of every sent field, as uint8 tensors keyed by field name."""
        wire = {}
        for item in self.fields:
            coding = item.coding(packed)
            if coding is not None:
                wire[item.name] = coding.encode(item.data)
        return wire

    def from_wire(self, wire: Mapping[str, torch.Tensor], packed: bool = True) -> Payload:
        """A copy of this payload whose field contents are decoded from ``wire``.

        The receiver's side: field shapes and dtypes come from this payload (a receiver
        knows them from the method's parameters and the size exchange). Fields that are
        not sent in this form keep their content.
        """
        fields = []
        for item in self.fields:
            coding = item.coding(packed)
            if coding is None:
                fields.append(item)
                continue
            fields.append(replace(item, data=coding.decode(wire[item.name], item.data)))
        return replace(self, fields=tuple(fields))

    def describe(self) -> str:
        """One line per field: name, shape, in-memory dtype, naive and packed coding and bytes."""
        lines = [f"{self.method} payload for {tuple(self.shape)} ({self.collective.value}):"]
        for item in self.fields:
            naive = item.naive.describe() if item.naive else "not sent"
            packed = item.packed.describe() if item.packed else "not sent"
            lines.append(
                f"  {item.name}: {tuple(item.data.shape)} {str(item.data.dtype).removeprefix('torch.')}, "
                f"naive {naive} = {item.bytes_naive} B, packed {packed} = {item.bytes_packed} B"
            )
        lines.append(f"  total: naive {self.bytes_naive} B, packed {self.bytes_packed} B")
        return "\n".join(lines)
