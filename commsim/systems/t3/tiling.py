"""How a GEMM writes its output: tiles, reduce-scatter chunks, waves and their memory traffic.

The output ``C[M,N]`` is cut into ``tile_m x tile_n`` macro-tiles, one per
workgroup. Tiles are numbered in *grouped* order (as GEMM libraries raster for
L2 reuse): bands of ``group_rows`` tile rows, each band walked column by column.
The reduce-scatter cuts that order into ``tp`` contiguous **chunks** (chunk
``c`` is what rank ``c`` owns in the end) — a chunk is a set of whole tiles.

A GPU runs its tiles in **waves**: one tile per compute unit (one workgroup per
CU, as for large macro-tiles), so a wave is the next ``cus`` tiles of the GPU's
tile order. T3 staggers the order per GPU — chunk ``g`` first on GPU ``g``, then
``g-1``, ``g-2``, … — so that each GPU first produces what its ring neighbour
needs first; the other variants use the same order (it does not change a
GEMM's cost, only which chunk finishes when).

Memory traffic of a wave: each tile reads its ``tile_m x K`` row block of ``A``
and ``K x tile_n`` column block of ``B`` unless the block is still in the L2
(an LRU over whole blocks of ``l2_bytes``), and writes its ``tile_m x tile_n``
output (edge tiles count their real size). Every tile costs a full tile of
arithmetic, edge tiles too (wave quantisation and padding are real costs).

>>> grid = TileGrid(m=1024, n=512, k=256, tile_m=128, tile_n=128, group_rows=8)
>>> grid.tiles, chunk_bounds(grid.tiles, 4).tolist()
(32, [0, 8, 16, 24, 32])
>>> plan = wave_plan(grid, tp=4, gpu=1, cus=10, l2_bytes=16e6)
>>> plan.chunk_order.tolist(), [len(w) for w in plan.tiles]
([1, 0, 3, 2], [10, 10, 10, 2])
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from commsim.errors import ConfigError

__all__ = ["TileGrid", "WavePlan", "chunk_bounds", "wave_plan"]


@dataclass(frozen=True)
class TileGrid:
    """The output tiles of a GEMM ``C[m,n] = A[m,k]·B[k,n]`` (elements of ``element_bytes`` bytes)."""

    m: int
    n: int
    k: int
    tile_m: int = 128
    tile_n: int = 128
    group_rows: int = 8
    element_bytes: int = 2

    @property
    def rows(self) -> int:
        """Tile rows, ``ceil(m / tile_m)``."""
        return -(-self.m // self.tile_m)

    @property
    def cols(self) -> int:
        """Tile columns, ``ceil(n / tile_n)``."""
        return -(-self.n // self.tile_n)

    @property
    def tiles(self) -> int:
        """Number of output tiles."""
        return self.rows * self.cols

    @cached_property
    def row_col(self) -> tuple[np.ndarray, np.ndarray]:
        """Tile row and column of each tile number, in grouped raster order."""
        g = max(1, self.group_rows)
        rows, cols = [], []
        for band in range(0, self.rows, g):
            height = min(g, self.rows - band)
            c, r = np.meshgrid(np.arange(self.cols), np.arange(band, band + height), indexing="ij")
            rows.append(r.reshape(-1))
            cols.append(c.reshape(-1))
        return np.concatenate(rows), np.concatenate(cols)

    @cached_property
    def tile_bytes(self) -> np.ndarray:
        """Output bytes of each tile (edge tiles are smaller)."""
        r, c = self.row_col
        h = np.minimum(self.tile_m, self.m - r * self.tile_m)
        w = np.minimum(self.tile_n, self.n - c * self.tile_n)
        return (h * w * self.element_bytes).astype(float)

    @property
    def tile_flops(self) -> float:
        """Arithmetic of one (padded) tile, FLOP: ``2·tile_m·tile_n·k``."""
        return 2.0 * self.tile_m * self.tile_n * self.k

    def a_block_bytes(self, row: int) -> float:
        """Bytes of the ``A`` row block of tile row ``row``."""
        return float(min(self.tile_m, self.m - row * self.tile_m) * self.k * self.element_bytes)

    def b_block_bytes(self, col: int) -> float:
        """Bytes of the ``B`` column block of tile column ``col``."""
        return float(min(self.tile_n, self.n - col * self.tile_n) * self.k * self.element_bytes)


def chunk_bounds(tiles: int, parts: int) -> np.ndarray:
    """Tile-number boundaries of ``parts`` contiguous chunks of ``tiles`` tiles (as even as possible)."""
    return (np.arange(parts + 1) * tiles) // parts


@dataclass
class WavePlan:
    """The waves one GPU runs for one GEMM (or one piece of a decomposed GEMM).

    ``tiles[w]`` are the tile numbers of wave ``w``; ``flops[w]``, ``read_bytes[w]``
    and ``write_bytes[w]`` its arithmetic (padded), DRAM reads after the L2 and
    output bytes; ``chunk_of_tile`` maps a tile number to its reduce-scatter chunk;
    ``chunk_order`` is the order the GPU produces the chunks in;
    ``chunk_tile_count[c]`` the tiles of chunk ``c``. Per wave, ``wave_chunks[w]``
    and ``wave_counts[w]`` are the chunks it writes tiles of and how many, and
    ``first_bytes[w]`` / ``first_tiles[w]`` the output bytes and tiles of the
    GPU's first chunk in it (what T3 stores remotely).
    """

    tiles: list[np.ndarray]
    flops: np.ndarray
    read_bytes: np.ndarray
    write_bytes: np.ndarray
    chunk_of_tile: np.ndarray
    chunk_order: np.ndarray
    chunk_tile_count: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    wave_chunks: list[np.ndarray] = field(default_factory=list)
    wave_counts: list[np.ndarray] = field(default_factory=list)
    first_bytes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    first_tiles: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def waves(self) -> int:
        """Number of waves."""
        return len(self.tiles)


def wave_plan(grid: TileGrid, *, tp: int, gpu: int, cus: int, l2_bytes: float, l2_reuse: float = 1.0,
              staggered: bool = True, tile_range: tuple[int, int] | None = None) -> WavePlan:
    """The waves GPU ``gpu`` of a ring of ``tp`` runs on ``cus`` compute units.

    ``l2_reuse`` is the fraction of the LRU model's L2 hits that happen (1: all;
    0: every tile reads its own operand blocks from DRAM).

    With ``staggered`` the chunks run in the order ``gpu, gpu-1, …, gpu+1``
    (mod ``tp``), else ``0, 1, …``. ``tile_range`` restricts the plan to the
    tiles ``[lo, hi)`` of the grouped order (one piece of a decomposed GEMM);
    its chunks are then ``tp`` equal cuts of that range.
    """
    lo, hi = tile_range if tile_range is not None else (0, grid.tiles)
    bounds = lo + chunk_bounds(hi - lo, tp)
    if np.any(np.diff(bounds) < 1):
        raise ConfigError(field="tp", value=tp, rule=f"is more than the {hi - lo} tiles to cut into chunks of at least "
                          "one tile", fix="use a smaller tensor-parallel degree or a larger GEMM")
    chunk_of_tile = np.full(grid.tiles, -1, dtype=np.int64)
    for c in range(tp):
        chunk_of_tile[bounds[c]:bounds[c + 1]] = c
    order = (gpu - np.arange(tp)) % tp if staggered else np.arange(tp)
    sequence = np.concatenate([np.arange(bounds[c], bounds[c + 1]) for c in order])
    waves = [sequence[i:i + cus] for i in range(0, sequence.size, cus)]
    rows, cols = grid.row_col
    lru: OrderedDict[tuple[str, int], float] = OrderedDict()
    held = 0.0
    reads = np.zeros(len(waves))
    for w, tiles in enumerate(waves):
        needed = [("a", int(r)) for r in np.unique(rows[tiles])] + [("b", int(c)) for c in np.unique(cols[tiles])]
        for key in needed:
            if key in lru:
                lru.move_to_end(key)
                continue
            size = grid.a_block_bytes(key[1]) if key[0] == "a" else grid.b_block_bytes(key[1])
            reads[w] += size
            lru[key] = size
            held += size
        while held > l2_bytes and lru:
            _, size = lru.popitem(last=False)
            held -= size
    if l2_reuse < 1.0:   # only part of the ideal reuse happens: the rest is read by every tile itself
        private = np.array([sum(grid.a_block_bytes(int(r)) for r in rows[t]) +
                            sum(grid.b_block_bytes(int(c)) for c in cols[t]) for t in waves])
        reads = private - l2_reuse * (private - reads)
    flops = np.array([t.size * grid.tile_flops for t in waves])
    writes = np.array([grid.tile_bytes[t].sum() for t in waves])
    counts = np.bincount(chunk_of_tile[sequence], minlength=tp)
    per_wave = [np.unique(chunk_of_tile[t], return_counts=True) for t in waves]
    first = chunk_of_tile[sequence] == order[0]
    first_of = [first[i:i + cus] for i in range(0, sequence.size, cus)]
    first_bytes = np.array([grid.tile_bytes[t[f]].sum() for t, f in zip(waves, first_of, strict=True)])
    first_tiles = np.array([int(f.sum()) for f in first_of], dtype=np.int64)
    return WavePlan(tiles=waves, flops=flops, read_bytes=reads, write_bytes=writes, chunk_of_tile=chunk_of_tile,
                    chunk_order=order, chunk_tile_count=counts, wave_chunks=[c for c, _ in per_wave],
                    wave_counts=[n for _, n in per_wave], first_bytes=first_bytes, first_tiles=first_tiles)
