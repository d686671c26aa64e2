"""Two user models as a user would write them: plain torch, nothing from ss-engine.

    ss-engine train --model examples/byom_models.py:tabular_mlp --dataset byom/cancer.csv ...
"""
import torch
from torch import nn


def tabular_mlp() -> nn.Sequential:
    """30 features -> 2 logits (benign / malignant), with a BatchNorm folded at conversion."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(30, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(p=0.0),
        nn.Linear(32, 16), nn.ReLU(),
        nn.Linear(16, 2),
    )


def digits_cnn() -> nn.Sequential:
    """8x8 grey digits -> 10 logits: two small convolutions, nested Sequentials."""
    torch.manual_seed(2)
    features = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    )
    head = nn.Sequential(nn.Flatten(), nn.Identity(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return nn.Sequential(features, head)
