"""Small models and synthetic tasks that give real gradients on a CPU in seconds.

- :class:`TinyTransformerLM`: a decoder-only transformer language model trained on
  token sequences from a random sparse Markov chain (:class:`MarkovTokens`), so the
  loss can fall well below ``log(vocab_size)``.
- :class:`TinyConvNet`: a small convolutional classifier trained on noisy class
  templates (:class:`TemplateImages`).

Both tasks draw batches from a ``torch.Generator``, so every run is reproducible.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import nn

from commsim.errors import ConfigError

__all__ = ["TinyTransformerLM", "TinyConvNet", "MarkovTokens", "TemplateImages", "SyntheticTask", "make_task"]


class _Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        attended, _ = self.attention(h, h, h, attn_mask=mask, need_weights=False)
        x = x + attended
        return x + self.mlp(self.norm2(x))


class TinyTransformerLM(nn.Module):
    """Pre-norm decoder-only transformer: token and position embeddings, ``n_layers`` blocks, a head.

    ``forward(tokens)`` takes ``(batch, length)`` token ids and returns
    ``(batch, length, vocab_size)`` logits under a causal mask.
    """

    def __init__(
        self,
        vocab_size: int = 256,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int = 512,
        max_len: int = 64,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        positions = torch.arange(length, device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)[None]
        mask = torch.triu(torch.full((length, length), float("-inf"), device=tokens.device), diagonal=1)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.norm(x))


class TinyConvNet(nn.Module):
    """Conv(3x3)-ReLU-MaxPool stages, global average pooling and a linear classifier."""

    def __init__(self, in_channels: int = 3, channels: tuple[int, ...] = (16, 32, 64), num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(previous, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images).mean(dim=(2, 3)))


class SyntheticTask(ABC):
    """A data source and loss for one of the models: ``batch`` gives inputs and targets."""

    @abstractmethod
    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of one batch, drawn with ``generator``."""

    @abstractmethod
    def loss(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of ``output`` against ``targets``."""


class MarkovTokens(SyntheticTask):
    """Token sequences from a random Markov chain where each token has ``branching`` likely successors.

    The best achievable loss is the chain's entropy rate (about ``log(branching)`` nats),
    well below the ``log(vocab_size)`` of an untrained model.
    """

    def __init__(self, vocab_size: int = 256, length: int = 32, branching: int = 4, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.vocab_size = vocab_size
        self.length = length
        successors = torch.randint(0, vocab_size, (vocab_size, branching), generator=generator)
        weights = torch.rand((vocab_size, branching), generator=generator) + 0.5
        self.transitions = torch.zeros(vocab_size, vocab_size).scatter_add_(1, successors, weights)
        self.transitions /= self.transitions.sum(dim=1, keepdim=True)

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.empty((batch_size, self.length + 1), dtype=torch.int64)
        tokens[:, 0] = torch.randint(0, self.vocab_size, (batch_size,), generator=generator)
        # A loop over positions (not elements): each step samples the whole batch at once.
        for position in range(self.length):
            rows = self.transitions[tokens[:, position]]
            tokens[:, position + 1] = torch.multinomial(rows, 1, generator=generator).squeeze(1)
        return tokens[:, :-1], tokens[:, 1:]

    def loss(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), targets.reshape(-1))

    @property
    def chance_loss(self) -> float:
        """Cross-entropy of a uniform prediction (nats)."""
        return math.log(self.vocab_size)


class TemplateImages(SyntheticTask):
    """Images of ``num_classes`` classes: a smooth random template per class plus Gaussian noise."""

    def __init__(
        self, num_classes: int = 10, channels: int = 3, size: int = 16, noise: float = 1.0, seed: int = 0
    ) -> None:
        generator = torch.Generator().manual_seed(seed)
        coarse = torch.randn((num_classes, channels, 4, 4), generator=generator)
        self.templates = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        self.num_classes = num_classes
        self.noise = noise

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, self.num_classes, (batch_size,), generator=generator)
        images = self.templates[labels] + self.noise * torch.randn(
            (batch_size, *self.templates.shape[1:]), generator=generator
        )
        return images, labels

    def loss(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(output, targets)


def make_task(model: str, *, size: str = "small", seed: int = 0) -> tuple[nn.Module, SyntheticTask]:
    """A freshly initialised model (seeded) and its synthetic task.

    ``model`` is ``transformer`` or ``convnet``; ``size`` is ``small`` (gradients for tables)
    or ``tiny`` (fast enough to train with every compressor in the convergence check).
    """
    if model not in ("transformer", "convnet") or size not in ("small", "tiny"):
        raise ConfigError(field="model, size", value=(model, size), rule="is not a tiny model of the convergence check",
                          fix="use model transformer or convnet, size small or tiny")
    # nn.Module initialisation draws from the global generator: seed it without disturbing the caller's.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model == "transformer":
            if size == "tiny":
                return TinyTransformerLM(64, 32, 2, 2, 64, 16), MarkovTokens(64, 16, 2, seed)
            return TinyTransformerLM(), MarkovTokens(256, 32, 4, seed)
        if size == "tiny":
            return TinyConvNet(1, (8, 16), 10), TemplateImages(10, 1, 12, 1.0, seed)
        return TinyConvNet(), TemplateImages(10, 3, 32, 1.0, seed)
