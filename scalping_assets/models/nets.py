"""Sequence classifiers over a window of feature vectors (batch, time, features) -> 3 class logits.

All three read the window forward only: the LSTM is unidirectional, the Transformer attends with a
causal mask, and every model answers from the last time step (or from pooling over the window,
which lies entirely in the past of the prediction).
"""

from __future__ import annotations

import math

import torch
from torch import nn

N_CLASSES = 3


def _head(width: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, N_CLASSES))


class LSTMScalper(nn.Module):
    """Stacked LSTM -> multi-head self-attention (the last step attends over the window) -> MLP head."""

    def __init__(self, n_features: int, hidden: int = 64, layers: int = 2, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.head = _head(hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(x)
        last = states[:, -1:, :]
        attended, _ = self.attention(last, states, states, need_weights=False)
        return self.head(self.norm(last + attended)[:, 0, :])


class CNNMicrostructure(nn.Module):
    """1-D convolution blocks with pooling, then global average pooling over time and a head.

    The head also sees the last time step of the final block: averaging alone would dilute the most
    recent ticks, which carry most of what a short horizon can know.
    """

    def __init__(self, n_features: int, hidden: int = 64, layers: int = 2, kernel: int = 5, dropout: float = 0.1):
        super().__init__()
        blocks: list[nn.Module] = []
        width = n_features
        for _ in range(layers):
            blocks += [
                nn.Conv1d(width, hidden, kernel, padding=kernel // 2),
                nn.BatchNorm1d(hidden),
                nn.ReLU(),
                nn.MaxPool1d(2, ceil_mode=True),
            ]
            width = hidden
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.head = _head(2 * hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(x.transpose(1, 2))  # (batch, channels, time)
        pooled = torch.cat([features.mean(dim=2), features[:, :, -1]], dim=1)
        return self.head(self.dropout(pooled))


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal encoding of the position in the window."""

    def __init__(self, width: int, max_length: int = 4096):
        super().__init__()
        position = torch.arange(max_length).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, width, 2) * (-math.log(10_000.0) / width))
        table = torch.zeros(max_length, width)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency[: width // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table[: x.shape[1]]


class TransformerScalper(nn.Module):
    """Projection + positional encoding -> causal Transformer encoder -> last-token head."""

    def __init__(self, n_features: int, hidden: int = 64, layers: int = 2, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.project = nn.Linear(n_features, hidden)
        self.position = PositionalEncoding(hidden)
        layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = _head(hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        mask = torch.triu(torch.full((length, length), float("-inf"), device=x.device), diagonal=1)
        encoded = self.encoder(self.position(self.project(x)), mask=mask)
        return self.head(encoded[:, -1, :])
