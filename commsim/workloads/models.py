"""The model catalog: transformer shapes, parameter counts and per-layer GEMM shapes.

A :class:`TransformerSpec` describes a decoder-only transformer by its shapes
(layers, hidden size, heads, grouped-query KV heads, FFN width, vocabulary...).
The catalog is one YAML file per model in ``commsim/workloads/catalog/``, shipped
inside the package and read with :mod:`importlib.resources`; :func:`load_model`
finds a model by catalog name (or alias) or reads any YAML file given by path.

>>> spec = load_model("gpt3-175b")
>>> round(parameter_count(spec) / 1e9, 1)
174.6
>>> layer_gemms(spec, batch=1, seq_len=2048, tp=8)["fc2"].k   # FFN width / TP
6144

Counting rules (:func:`parameter_shapes`): embedding ``vocab x hidden``; learned
positions ``max_seq_len x hidden``; per block the Q/K/V/output projections
(K and V sized by ``kv_heads``), the FFN (three matrices when gated, two
otherwise), biases when ``bias`` is true, one or two norms (LayerNorm has a
weight, plus a bias when ``bias`` is true; RMSNorm a weight); a final norm; an output head unless the
embeddings are tied.
"""

from __future__ import annotations

import math
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from commsim.config import StrictModel, load_yaml, validate
from commsim.errors import ConfigError
from commsim.workloads._gemm import Gemm, TPShard, gemm_backward, layer_gemms, tp_shard

__all__ = [
    "CATALOG_DIR",
    "Gemm",
    "TPShard",
    "TransformerSpec",
    "catalog_names",
    "gemm_backward",
    "layer_gemms",
    "layer_parameter_shapes",
    "load_model",
    "parameter_count",
    "parameter_shapes",
    "parameters_by_layer",
    "tp_shard",
]

CATALOG_DIR = Path(str(resources.files("commsim.workloads.catalog")))
"""Where the catalog YAML files live (``commsim/workloads/catalog/`` of the installed package)."""

_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*([kKMBGT]?)\s*$")
_COUNT_SCALE = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def _parse_count(value: Any) -> Any:
    """Accept ``175e9``, ``"175B"``, ``"6.74 B"``, ``"350M"`` for a parameter count."""
    if isinstance(value, str):
        match = _COUNT.match(value)
        if not match:
            raise ConfigError(field="parameter count", value=value, rule="is not a parameter count",
                              fix="write a number such as 175e9 or '175B'")
        return float(match.group(1)) * _COUNT_SCALE[match.group(2)]
    return value


class TransformerSpec(StrictModel):
    """Shapes of a decoder-only transformer (all sizes are element counts, not bytes).

    Attributes
    ----------
    name, aliases:
        Catalog name and other names :func:`load_model` accepts.
    layers, hidden, heads, kv_heads, head_dim:
        Blocks, model width, query heads, key/value heads (grouped-query
        attention; equals ``heads`` when omitted), width of one head (``hidden /
        heads`` when omitted).
    ffn_hidden, gated_ffn:
        Width of the FFN; gated (SwiGLU: gate, up and down matrices) or not.
    vocab, max_seq_len, default_seq_len:
        Vocabulary size, longest and default sequence length in tokens.
    tied_embeddings, bias, norm, position, parallel_block:
        Output head shares the embedding; linear layers have biases;
        LayerNorm or RMSNorm; learned or rotary positions; attention and FFN
        computed in parallel from one norm (PaLM style, one all-reduce per block
        under tensor parallelism).
    nominal_params, published_params:
        The size in the model's name and the exact count its authors or
        checkpoint publish (``None`` when none is published).
    source:
        Where the shapes come from.
    """

    name: str
    aliases: list[str] = Field(default_factory=list)
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    ffn_hidden: int = Field(gt=0)
    gated_ffn: bool = False
    vocab: int = Field(gt=0)
    max_seq_len: int = Field(gt=0)
    default_seq_len: int = Field(gt=0)
    tied_embeddings: bool = True
    bias: bool = True
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    position: Literal["learned", "rotary"] = "learned"
    parallel_block: bool = False
    nominal_params: float | None = None
    published_params: float | None = None
    source: str = ""

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("kv_heads") is None and "heads" in data:
            data["kv_heads"] = data["heads"]
        heads, hidden = data.get("heads"), data.get("hidden")
        if data.get("head_dim") is None and isinstance(heads, int) and isinstance(hidden, int) and heads > 0:
            if hidden % heads:
                raise ConfigError(field="hidden", value=hidden,
                                  rule=f"is not a multiple of heads ({heads}), so the head width is unknown",
                                  fix="give head_dim explicitly")
            data["head_dim"] = hidden // heads
        if data.get("default_seq_len") is None and "max_seq_len" in data:
            data["default_seq_len"] = data["max_seq_len"]
        return data

    @field_validator("nominal_params", "published_params", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        return _parse_count(value)

    @field_validator("kv_heads")
    @classmethod
    def _kv_divides(cls, value: int, info: Any) -> int:
        heads = info.data.get("heads")
        if heads and heads % value:
            raise ConfigError(field="kv_heads", value=value, rule=f"must divide heads ({heads}) for grouped-query "
                              "attention", fix=f"give a divisor of {heads}, e.g. {heads} or 1")
        return value

    @field_validator("default_seq_len")
    @classmethod
    def _seq_fits(cls, value: int, info: Any) -> int:
        longest = info.data.get("max_seq_len")
        if longest and value > longest:
            raise ConfigError(field="default_seq_len", value=value, rule=f"exceeds max_seq_len ({longest})",
                              fix=f"give at most {longest}")
        return value

    @property
    def q_width(self) -> int:
        """Width of the concatenated query heads, ``heads * head_dim``."""
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        """Width of the concatenated key (or value) heads, ``kv_heads * head_dim``."""
        return self.kv_heads * self.head_dim


def layer_parameter_shapes(spec: TransformerSpec) -> dict[str, tuple[int, ...]]:
    """Name → shape of the parameters of one transformer block (linear weights are ``(out, in)``).

    >>> shapes = layer_parameter_shapes(load_model("llama-2-7b"))
    >>> shapes["attn.q.weight"], shapes["mlp.gate.weight"]
    ((4096, 4096), (11008, 4096))
    """
    h, f = spec.hidden, spec.ffn_hidden
    shapes: dict[str, tuple[int, ...]] = {}
    _norm(shapes, "attn_norm", spec)
    for part, width in (("q", spec.q_width), ("k", spec.kv_width), ("v", spec.kv_width)):
        shapes[f"attn.{part}.weight"] = (width, h)
        if spec.bias:
            shapes[f"attn.{part}.bias"] = (width,)
    shapes["attn.out.weight"] = (h, spec.q_width)
    if spec.bias:
        shapes["attn.out.bias"] = (h,)
    if not spec.parallel_block:
        _norm(shapes, "mlp_norm", spec)
    ins = ("gate", "up") if spec.gated_ffn else ("up",)
    for part in ins:
        shapes[f"mlp.{part}.weight"] = (f, h)
        if spec.bias:
            shapes[f"mlp.{part}.bias"] = (f,)
    shapes["mlp.down.weight"] = (h, f)
    if spec.bias:
        shapes["mlp.down.bias"] = (h,)
    return shapes


def parameter_shapes(spec: TransformerSpec) -> dict[str, tuple[int, ...]]:
    """Name → shape of every parameter of the model, blocks named ``layers.{i}.…``."""
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (spec.vocab, spec.hidden)}
    if spec.position == "learned":
        shapes["pos_embed.weight"] = (spec.max_seq_len, spec.hidden)
    block = layer_parameter_shapes(spec)
    for index in range(spec.layers):
        for name, shape in block.items():
            shapes[f"layers.{index}.{name}"] = shape
    _norm(shapes, "final_norm", spec)
    if not spec.tied_embeddings:
        shapes["lm_head.weight"] = (spec.vocab, spec.hidden)
    return shapes


def parameters_by_layer(spec: TransformerSpec) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Every parameter as ``(name, shape)``, grouped by the block it belongs to.

    The embeddings join block 0 and the final norm and output head the last
    block (where their gradients appear in the backward pass).

    >>> groups = parameters_by_layer(load_model("llama-2-7b"))
    >>> len(groups), groups[0][0]
    (32, ('embed.weight', (32000, 4096)))
    """
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[] for _ in range(spec.layers)]
    for name, shape in parameter_shapes(spec).items():
        if name.startswith("layers."):
            index = int(name.split(".")[1])
        elif name.startswith(("embed.", "pos_embed.")):
            index = 0
        else:  # final norm and output head
            index = spec.layers - 1
        groups[index].append((name, tuple(int(s) for s in shape)))
    return groups


def parameter_count(spec: TransformerSpec) -> int:
    """Number of parameters (elements) of the whole model, by the counting rules above."""
    block = sum(math.prod(s) for s in layer_parameter_shapes(spec).values())
    rest = sum(math.prod(s) for s in _outside_blocks(spec).values())
    return spec.layers * block + rest


def _outside_blocks(spec: TransformerSpec) -> dict[str, tuple[int, ...]]:
    """Embedding, positions, final norm and output head (what :func:`parameter_shapes` adds to the blocks)."""
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (spec.vocab, spec.hidden)}
    if spec.position == "learned":
        shapes["pos_embed.weight"] = (spec.max_seq_len, spec.hidden)
    _norm(shapes, "final_norm", spec)
    if not spec.tied_embeddings:
        shapes["lm_head.weight"] = (spec.vocab, spec.hidden)
    return shapes


def _norm(shapes: dict[str, tuple[int, ...]], name: str, spec: TransformerSpec) -> None:
    shapes[f"{name}.weight"] = (spec.hidden,)
    if spec.norm == "layernorm" and spec.bias:
        shapes[f"{name}.bias"] = (spec.hidden,)


# --------------------------------------------------------------------------- catalog


@cache
def _catalog() -> dict[str, Path]:
    """Lower-case name or alias → file, read once per process."""
    found: dict[str, Path] = {}
    if not CATALOG_DIR.is_dir():
        return found
    for path in sorted(CATALOG_DIR.glob("*.yaml")):
        spec = _load_file(path)
        for key in [spec.name, *spec.aliases]:
            found[key.lower()] = path
    return found


def catalog_names() -> list[str]:
    """The catalog's model names (not aliases), sorted."""
    return sorted({_load_file(path).name for path in set(_catalog().values())})


@cache
def _load_file(path: Path) -> TransformerSpec:
    return validate(TransformerSpec, load_yaml(path), source=str(path))


def load_model(name_or_path: str | Path) -> TransformerSpec:
    """Return the :class:`TransformerSpec` for a catalog name, an alias or a YAML file path.

    Raises :class:`~commsim.errors.ConfigError` for an unknown name (listing the
    known ones) or a file that breaks a rule (naming file, field and value).

    >>> load_model("Llama-2-70B").kv_heads
    8
    """
    text = str(name_or_path)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) and not path.is_file():
        raise ConfigError(field="model", value=text, rule="names a model YAML file that does not exist",
                          fix=f"check the path (relative to {Path.cwd()}), or use a catalog name such as "
                              f"{', '.join(catalog_names()[:4])}")
    if text.endswith((".yaml", ".yml")) or path.is_file():
        return validate(TransformerSpec, load_yaml(path), source=str(path))   # read afresh: the file may change
    found = _catalog().get(text.lower())
    if found is None:
        known = ", ".join(catalog_names()) or f"(none: {CATALOG_DIR} is missing)"
        raise ConfigError(field="model", value=text, rule="is not in the model catalog",
                          fix=f"use one of {known}, or give the path of a model YAML file")
    return _load_file(found)
