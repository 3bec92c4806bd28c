"""Streaming per-channel statistics of unit activations, in O(channels) memory."""

from __future__ import annotations

import torch


class ChannelStats:
    """Count, mean and sum of squared deviations per channel, accumulated batch by batch.

    Sums run in float64 around a fixed shift (the first token seen), so the squared sums lose
    nothing to cancellation: what is left is the spread of activations around one of their own
    values, never a large mean. Each batch costs a handful of kernels (two matrix-vector
    products), negligible beside the projections that produced the activations, and nothing
    syncs a GPU.
    """

    def __init__(self, channels: int, device: torch.device | str = "cpu"):
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.shifted_sum = torch.zeros(channels, dtype=torch.float64, device=device)
        self.shifted_squares = torch.zeros(channels, dtype=torch.float64, device=device)

    def update(self, values: torch.Tensor) -> None:
        """Add rows of ``values`` ([tokens, channels]) to the statistics."""
        if values.shape[0] == 0:
            return
        values = values.double()
        if self.shift is None:
            self.shift = values[0].clone()
        shifted = values - self.shift
        ones = shifted.new_ones(1, shifted.shape[0])
        self.shifted_sum += (ones @ shifted).squeeze(0)
        self.shifted_squares += (ones @ shifted.mul_(shifted)).squeeze(0)
        self.count += values.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        if self.shift is None:
            return torch.zeros_like(self.shifted_sum)
        return self.shift + self.shifted_sum / self.count

    @property
    def m2(self) -> torch.Tensor:
        """Sum over tokens of squared deviations from the mean."""
        return (self.shifted_squares - self.shifted_sum.square() / max(self.count, 1)).clamp_min(0)

    @property
    def variance(self) -> torch.Tensor:
        """Population variance over all tokens seen (zeros before any token)."""
        return self.m2 / max(self.count, 1)

    @property
    def sum_of_squares(self) -> torch.Tensor:
        """Sum over tokens of x^2, i.e. the squared L2 norm of each channel's activations."""
        return self.m2 + self.count * self.mean.square()
