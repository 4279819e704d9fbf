"""The model: feature scaling and a small MLP, in one module."""

import torch
from torch import nn

N_FEATURES = 4
HIDDEN = 64


class Classifier(nn.Module):
    """Standardize inputs, then a two-hidden-layer MLP that returns logits.

    The scaling statistics are buffers, so they travel in the same
    state_dict as the weights and cannot drift apart from them.
    """

    def __init__(self, n_classes: int, n_features: int = N_FEATURES):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.net = nn.Sequential(
            nn.Linear(n_features, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)
