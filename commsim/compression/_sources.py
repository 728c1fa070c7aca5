"""Where tensors to compress come from: layer shapes, ``.pt`` files and real backward passes.

>>> shapes = resnet18_shapes()
>>> shapes["conv1.weight"], shapes["fc.weight"], len(shapes)
((64, 3, 3, 3), (10, 512), 62)
>>> sum(math.prod(s) for s in shapes.values())      # the CIFAR ResNet-18 of the PowerSGD paper
11173962
>>> tensors = synthetic_tensors({"w": (4, 8)}, seed=1)
>>> tensors["w"].shape
torch.Size([4, 8])
>>> parse_shape("1024x1024")
(1024, 1024)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from commsim.compression._models import make_task
from commsim.errors import ConfigError

__all__ = [
    "resnet18_shapes",
    "synthetic_tensors",
    "load_tensors",
    "model_gradients",
    "parse_shape",
]

TensorKind = Literal["gradient", "weight"]
ModelName = Literal["transformer", "convnet"]


def resnet18_shapes(variant: Literal["cifar", "imagenet"] = "cifar", num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of ResNet-18 (He et al., 2016), named as in torchvision.

    ``cifar`` (default) is the 32x32 variant the PowerSGD paper trains: a 3x3 stem
    convolution, no max-pool, 10 classes, 11,173,962 parameters. ``imagenet`` has the 7x7
    stem and 1000 classes (11,689,512 parameters). Convolutions have no bias; every
    batch norm contributes a weight and a bias (running statistics are buffers, not sent).
    """
    if variant not in ("cifar", "imagenet"):
        raise ConfigError(field="variant", value=variant, rule="must be cifar or imagenet", fix="pick one of them")
    classes = num_classes if num_classes is not None else (10 if variant == "cifar" else 1000)
    shapes: dict[str, tuple[int, ...]] = {}
    shapes["conv1.weight"] = (64, 3, 3, 3) if variant == "cifar" else (64, 3, 7, 7)
    shapes["bn1.weight"] = shapes["bn1.bias"] = (64,)
    in_channels = 64
    for stage, (channels, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        for block in range(2):
            prefix = f"layer{stage}.{block}."
            block_in = in_channels if block == 0 else channels
            shapes[prefix + "conv1.weight"] = (channels, block_in, 3, 3)
            shapes[prefix + "bn1.weight"] = shapes[prefix + "bn1.bias"] = (channels,)
            shapes[prefix + "conv2.weight"] = (channels, channels, 3, 3)
            shapes[prefix + "bn2.weight"] = shapes[prefix + "bn2.bias"] = (channels,)
            if block == 0 and (stride != 1 or block_in != channels):
                shapes[prefix + "downsample.0.weight"] = (channels, block_in, 1, 1)
                shapes[prefix + "downsample.1.weight"] = shapes[prefix + "downsample.1.bias"] = (channels,)
        in_channels = channels
    shapes["fc.weight"] = (classes, 512)
    shapes["fc.bias"] = (classes,)
    return shapes


def synthetic_tensors(
    shapes: Mapping[str, Sequence[int]], *, kind: TensorKind = "gradient", seed: int = 0
) -> dict[str, torch.Tensor]:
    """Fill named shapes with realistic values (fp32), reproducibly.

    - ``gradient``: heavy-tailed, as measured gradients are: Student-t with 3 degrees of
      freedom, scaled by ``1e-2 / sqrt(fan_in)`` (``fan_in`` = product of all but the first
      dimension; the size of a 1-D tensor).
    - ``weight``: Kaiming-normal (``std = sqrt(2 / fan_in)``) for tensors of two or more
      dimensions; for 1-D tensors, ``1 + N(0, 0.1)`` if the name ends in ``weight``
      (normalisation scales) and ``N(0, 0.01)`` otherwise (biases).

    Any mapping of name to shape works, e.g. transformer layer shapes.
    """
    if kind not in ("gradient", "weight"):
        raise ConfigError(field="kind", value=kind, rule="must be gradient or weight", fix="pick one of them")
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, raw_shape in shapes.items():
        shape = _check_shape(raw_shape, name)
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
        if kind == "gradient":
            chi_square = torch.zeros(shape)
            for _ in range(3):
                chi_square += torch.randn(shape, generator=generator) ** 2
            student_t = torch.randn(shape, generator=generator) / torch.sqrt(chi_square / 3).clamp(min=1e-12)
            out[name] = student_t * (1e-2 / math.sqrt(fan_in))
        elif len(shape) > 1:
            out[name] = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
        elif name.endswith("weight"):
            out[name] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            out[name] = 0.01 * torch.randn(shape, generator=generator)
    return out


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Floating-point tensors from a ``.pt`` file holding a tensor or a (nested) dict of tensors.

    Nested dicts (``{"model": state_dict}``) are flattened with dotted names. Integer and
    boolean tensors (step counters, masks) and empty tensors are skipped: there is nothing
    to compress in them. Anything else is an error that names the offending entry.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            field="file", value=str(path), rule="does not exist or is not a file", fix="check the path to the .pt file"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types (pickle, zip, weights-only checks)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            field="file",
            value=str(path),
            rule=f"is not a file torch.load can read with weights_only=True ({first_line[:160]})",
            fix="save it with torch.save(tensor_or_dict_of_tensors, path)",
        ) from None
    if isinstance(loaded, torch.Tensor):
        flat = {"tensor": loaded}
    elif isinstance(loaded, Mapping):
        flat = _flatten(loaded, "", str(path))
    else:
        raise ConfigError(
            field="file",
            value=str(path),
            rule=f"holds a {type(loaded).__name__}, not a tensor or a dict of tensors",
            fix="save a tensor or a dict of tensors, e.g. torch.save(model.state_dict(), path)",
        )
    tensors = {k: v.detach() for k, v in flat.items() if v.is_floating_point() and v.numel() > 0}
    if not tensors:
        raise ConfigError(
            field="file",
            value=str(path),
            rule="holds no non-empty floating-point tensor",
            fix="save float tensors (gradients, weights or updates)",
        )
    return tensors


def model_gradients(model: ModelName = "transformer", *, seed: int = 0, batch_size: int = 8) -> dict[str, torch.Tensor]:
    """Gradients of one real backward pass of a small model on its synthetic task (CPU, well under a second).

    ``transformer``: :class:`TinyTransformerLM` (2 layers, d_model 128, vocab 256, about 0.5M
    parameters); ``convnet``: :class:`TinyConvNet` (three conv stages, about 24k parameters).
    """
    if model not in ("transformer", "convnet"):
        raise ConfigError(field="model", value=model, rule="must be transformer or convnet", fix="pick one of them")
    network, task = make_task(model, size="small", seed=seed)
    inputs, targets = task.batch(batch_size, torch.Generator().manual_seed(seed + 1))
    loss = task.loss(network(inputs), targets)
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in network.named_parameters() if p.grad is not None}


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1024x1024"`` (also ``,`` or ``*`` separated) to a shape tuple of positive sizes.

    Every separator must sit between two sizes: ``10x`` or ``x10`` is an error, not ``(10,)``.
    """
    cleaned = text.strip().lower()
    if not re.fullmatch(r"\d+(?:\s*[x,*×]\s*\d+|\s+\d+)*", cleaned):
        shape: tuple[int, ...] = ()
    else:
        shape = tuple(int(p) for p in re.split(r"[x,*× ]+", cleaned) if p)
    if not shape or any(size <= 0 for size in shape):
        raise ConfigError(
            field="shape",
            value=text,
            rule="is not a shape of positive integers",
            fix="write sizes separated by x, e.g. 1024x1024 or 1000001",
        )
    return shape


def _check_shape(shape: Any, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        out = ()
    if not out or any(s <= 0 for s in out):
        raise ConfigError(
            field=f"shapes[{name!r}]",
            value=shape,
            rule="must be a non-empty sequence of positive integers",
            fix="give a shape such as (512, 256)",
        )
    return out


def _flatten(mapping: Mapping[Any, Any], prefix: str, source: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, Mapping):
            out.update(_flatten(value, name + ".", source))
        else:
            raise ConfigError(
                field=f"file entry {name!r}",
                value=type(value).__name__,
                rule="is not a tensor (the file must hold a tensor or a dict of tensors)",
                fix="save only tensors, e.g. torch.save(model.state_dict(), path)",
                source=source,
            )
    return out
