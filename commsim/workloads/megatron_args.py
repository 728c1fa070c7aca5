"""Megatron-LM command-line arguments → a model shape and a :class:`~commsim.workloads.TrainingConfig`.

So that the arguments of a real ``pretrain_gpt.py`` job can be pasted as they are.
Every argument is either **used** (it sets a model shape or a training field),
**ignored** with a stated reason (learning rate, data paths, logging: they do not
change the time of a step in this model), or **unknown**: an error that lists the
closest known arguments. Nothing is dropped silently.

>>> parsed = parse_megatron_args(["--num-layers", "96", "--hidden-size", "12288", "--num-attention-heads", "96",
...     "--seq-length", "2048", "--max-position-embeddings", "2048", "--micro-batch-size", "1",
...     "--global-batch-size", "64", "--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "8",
...     "--sequence-parallel", "--bf16", "--lr", "6e-5"], gpus=64)
>>> parsed.training["tp"], parsed.training["pp"], parsed.training["dp"], parsed.training["num_micro_batches"]
(8, 8, 1, 64)
>>> parsed.ignored
['--lr (optimizer hyper-parameter: does not change the time of a step)']
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from commsim.errors import ConfigError
from commsim.workloads.models import TransformerSpec, load_model

__all__ = ["MegatronArgs", "parse_megatron_args", "MODEL_FLAGS", "TRAINING_FLAGS",
           "IGNORED_FLAGS"]

MODEL_FLAGS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "--num-layers": ("layers", int),
    "--hidden-size": ("hidden", int),
    "--num-attention-heads": ("heads", int),
    "--num-query-groups": ("kv_heads", int),
    "--kv-channels": ("head_dim", int),
    "--ffn-hidden-size": ("ffn_hidden", int),
    "--max-position-embeddings": ("max_seq_len", int),
    "--vocab-size": ("vocab", int),
}
"""Arguments that set the model's shape: flag → (:class:`TransformerSpec` field, value parser)."""

TRAINING_FLAGS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "--seq-length": ("seq_len", int),
    "--micro-batch-size": ("micro_batch_size", int),
    "--tensor-model-parallel-size": ("tp", int),
    "--pipeline-model-parallel-size": ("pp", int),
    "--recompute-granularity": ("recompute", str),
    "--expert-model-parallel-size": ("ep", int),
    "--context-parallel-size": ("cp", int),
    "--num-experts": ("num_experts", int),
    "--moe-router-topk": ("top_k", int),
    "--moe-expert-capacity-factor": ("capacity_factor", float),
}
"""Arguments that set a training field directly: flag → (:class:`TrainingConfig` field, value parser)."""

SWITCHES: dict[str, tuple[str, str, Any]] = {
    "--sequence-parallel": ("training", "sequence_parallel", True),
    "--use-distributed-optimizer": ("training", "distributed_optimizer", True),
    "--recompute-activations": ("training", "recompute", "selective"),
    "--bf16": ("training", "dtype", "bf16"),
    "--fp16": ("training", "dtype", "fp16"),
    "--use-flash-attn": ("training", "flash_attention", True),
    "--swiglu": ("model", "gated_ffn", True),
    "--group-query-attention": ("model", None, None),
    "--untie-embeddings-and-output-weights": ("model", "tied_embeddings", False),
    "--disable-bias-linear": ("model", "bias", False),
}
"""Flags without a value: flag → (model or training, field, value); ``None`` field: only enables another flag."""

OTHER_FLAGS = ("--global-batch-size", "--num-layers-per-virtual-pipeline-stage", "--normalization",
               "--position-embedding-type")
"""Arguments with a value that need more than a field copy (handled by :func:`parse_megatron_args`)."""

_HYPER = "optimizer hyper-parameter: does not change the time of a step"
_IO = "data, checkpoint or logging setting: outside the step"
_NUMERIC = "numerics or initialisation: does not change the time of a step"
IGNORED_FLAGS: dict[str, tuple[str, bool]] = {
    **{f: (_HYPER, True) for f in ("--lr", "--min-lr", "--lr-decay-style", "--lr-decay-iters", "--lr-warmup-iters",
                                   "--lr-warmup-fraction", "--weight-decay", "--clip-grad", "--adam-beta1",
                                   "--adam-beta2", "--adam-eps", "--train-iters", "--train-samples",
                                   "--lr-decay-samples", "--lr-warmup-samples", "--optimizer")},
    **{f: (_IO, True) for f in ("--data-path", "--vocab-file", "--merge-file", "--tokenizer-type", "--tokenizer-model",
                                "--split", "--save", "--load", "--save-interval", "--eval-interval", "--eval-iters",
                                "--log-interval", "--tensorboard-dir", "--wandb-project", "--exit-interval",
                                "--num-workers", "--data-cache-path", "--distributed-backend")},
    **{f: (_NUMERIC, True) for f in ("--init-method-std", "--attention-dropout", "--hidden-dropout", "--seed",
                                     "--loss-scale", "--initial-loss-scale", "--min-loss-scale",
                                     "--loss-scale-window", "--norm-epsilon", "--rotary-percent",
                                     "--rotary-base")},
    **{f: (_IO, False) for f in ("--no-load-optim", "--no-load-rng", "--log-throughput", "--log-timers-to-tensorboard",
                                 "--no-save-optim", "--no-save-rng", "--use-mcore-models", "--use-checkpoint-args")},
    **{f: (_NUMERIC, False) for f in ("--attention-softmax-in-fp32", "--accumulate-allreduce-grads-in-fp32",
                                      "--apply-query-key-layer-scaling", "--no-masked-softmax-fusion",
                                      "--no-bias-gelu-fusion", "--no-bias-dropout-fusion",
                                      "--no-gradient-accumulation-fusion", "--no-async-tensor-model-parallel-allreduce",
                                      "--overlap-grad-reduce", "--overlap-param-gather")},
    "--recompute-method": ("commsim recomputes every layer of the granularity given (Megatron's uniform method "
                           "over all layers)", True),
    "--recompute-num-layers": ("commsim recomputes every layer of the granularity given", True),
}
"""Arguments accepted and not used: flag → (why, takes a value). ``--overlap-grad-reduce`` is how
commsim always runs the data-parallel reduction (buckets overlap the backward pass)."""


@dataclass
class MegatronArgs:
    """The outcome of :func:`parse_megatron_args`.

    ``model``: :class:`TransformerSpec` fields given; ``training``: the
    :class:`TrainingConfig` fields (with ``dp`` and ``num_micro_batches``
    derived); ``ignored``: each ignored argument with its reason.
    """

    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    global_batch_size: int | None = None
    layers_per_virtual_stage: int | None = None

    def spec(self, base: TransformerSpec | str | None = None) -> TransformerSpec:
        """The model: ``base`` (a catalog name or spec) with the given shapes on top, or the shapes alone."""
        if base is not None:
            spec = base if isinstance(base, TransformerSpec) else load_model(base)
            data = {**spec.model_dump(), **self.model}
            if "hidden" in self.model or "heads" in self.model:
                data.pop("head_dim", None)
            return TransformerSpec(**data)
        missing = [flag for flag in ("--num-layers", "--hidden-size", "--num-attention-heads")
                   if MODEL_FLAGS[flag][0] not in self.model]
        if missing:
            raise ConfigError(field=missing[0], rule="is required without --model",
                              fix="give the model's shape (--num-layers, --hidden-size, --num-attention-heads) or "
                                  "name a catalog model with --model")
        data = {"name": "megatron-args", "ffn_hidden": 4 * self.model["hidden"], "vocab": 50257,
                "max_seq_len": self.training.get("seq_len", 2048), **self.model}
        if "seq_len" in self.training:
            data["max_seq_len"] = max(data["max_seq_len"], self.training["seq_len"])
        return TransformerSpec(**data)


def _value(flag: str, text: str, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(text)
    except ValueError:
        kind = {int: "an integer", float: "a number"}.get(parse, "a value")  # type: ignore[call-overload]
        raise ConfigError(field=flag, value=text, rule=f"must be {kind}", fix=f"give {flag} {kind}") from None


def _known() -> list[str]:
    return [*MODEL_FLAGS, *TRAINING_FLAGS, *SWITCHES, *OTHER_FLAGS, *IGNORED_FLAGS]


def _split(args: list[str]) -> list[tuple[str, str | None]]:
    """``--flag value`` / ``--flag=value`` / ``--switch`` as (flag, value or None)."""
    takes_value = {*MODEL_FLAGS, *TRAINING_FLAGS, *OTHER_FLAGS, *(f for f, (_, v) in IGNORED_FLAGS.items() if v)}
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        item = args[i]
        if not item.startswith("--"):
            raise ConfigError(field="arguments", value=item, rule="is not a --flag",
                              fix="give Megatron-LM arguments as --flag VALUE or --flag")
        flag, eq, inline = item.partition("=")
        if flag not in takes_value and flag not in SWITCHES and flag not in IGNORED_FLAGS:
            close = difflib.get_close_matches(flag, _known(), n=3, cutoff=0.6)
            raise ConfigError(field=flag, rule="is not a Megatron-LM argument commsim knows",
                              fix=(f"did you mean {', '.join(close)}? " if close else "")
                              + "see `commsim train --help` for the arguments used and ignored")
        if flag in takes_value:
            if eq:
                out.append((flag, inline))
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                out.append((flag, args[i + 1]))
                i += 1
            else:
                raise ConfigError(field=flag, rule="needs a value", fix=f"give {flag} VALUE")
        else:
            out.append((flag, None))
        i += 1
    return out


def parse_megatron_args(args: list[str], *, gpus: int) -> MegatronArgs:
    """Read Megatron-LM arguments for a job on ``gpus`` GPUs.

    Data parallelism is ``gpus / (tp · pp · cp)``; ``--global-batch-size`` gives
    the micro-batches per step, ``global / (micro · dp)``;
    ``--num-layers-per-virtual-pipeline-stage n`` gives ``layers / (pp · n)``
    virtual stages. A value that does not divide is an error naming the rule.
    """
    out = MegatronArgs()
    for flag, text in _split(args):
        if flag in IGNORED_FLAGS:
            out.ignored.append(f"{flag} ({IGNORED_FLAGS[flag][0]})")
        elif flag in MODEL_FLAGS:
            name, parse = MODEL_FLAGS[flag]
            out.model[name] = _value(flag, text or "", parse)
        elif flag in TRAINING_FLAGS:
            name, parse = TRAINING_FLAGS[flag]
            out.training[name] = _value(flag, text or "", parse)
        elif flag in SWITCHES:
            where, name, value = SWITCHES[flag]
            if name is not None:
                (out.model if where == "model" else out.training)[name] = value
        elif flag == "--global-batch-size":
            out.global_batch_size = _value(flag, text or "", int)
        elif flag == "--num-layers-per-virtual-pipeline-stage":
            out.layers_per_virtual_stage = _value(flag, text or "", int)
        elif flag == "--normalization":
            norms = {"layernorm": "layernorm", "rmsnorm": "rmsnorm"}
            out.model["norm"] = _choice(flag, text or "", norms)
        elif flag == "--position-embedding-type":
            out.model["position"] = _choice(flag, text or "", {"learned_absolute": "learned", "rope": "rotary"})
    _derive(out, gpus)
    return out


def _choice(flag: str, text: str, choices: dict[str, str]) -> str:
    found = choices.get(text.lower())
    if found is None:
        raise ConfigError(field=flag, value=text, rule="is not a choice commsim models",
                          fix=f"use one of {', '.join(choices)}")
    return found


def _derive(out: MegatronArgs, gpus: int) -> None:
    t = out.training
    tp, pp, cp = t.get("tp", 1), t.get("pp", 1), t.get("cp", 1)
    for flag, value in (("--tensor-model-parallel-size", tp), ("--pipeline-model-parallel-size", pp),
                        ("--context-parallel-size", cp)):
        if value < 1:
            raise ConfigError(field=flag, value=value, rule="must be at least 1", fix="give a positive size")
    if gpus % (tp * pp * cp):
        raise ConfigError(field="--num-gpus", value=gpus, rule=f"is not a multiple of tp·pp·cp = {tp * pp * cp}",
                          fix="choose parallel sizes whose product divides the GPUs, or give --num-gpus")
    dp = gpus // (tp * pp * cp)
    t["dp"] = dp
    mbs = t.get("micro_batch_size", 1)
    if out.global_batch_size is not None:
        if out.global_batch_size % (mbs * dp):
            raise ConfigError(field="--global-batch-size", value=out.global_batch_size,
                              rule=f"is not a multiple of micro-batch size × data-parallel size = {mbs} × {dp}",
                              fix=f"use a multiple of {mbs * dp}")
        t["num_micro_batches"] = out.global_batch_size // (mbs * dp)
    if out.layers_per_virtual_stage is not None:
        layers = out.model.get("layers")
        if layers is None or layers % (pp * out.layers_per_virtual_stage):
            raise ConfigError(field="--num-layers-per-virtual-pipeline-stage", value=out.layers_per_virtual_stage,
                              rule=f"times pp = {pp} must divide --num-layers ({layers})",
                              fix="give --num-layers and a layer count per virtual stage that divides layers / pp")
        t["virtual_pipeline_stages"] = layers // (pp * out.layers_per_virtual_stage)
    if t.get("recompute") not in (None, "full", "selective"):
        raise ConfigError(field="--recompute-granularity", value=t["recompute"], rule="is not full or selective",
                          fix="use --recompute-granularity full or selective")
