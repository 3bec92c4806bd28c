"""Streaming per-channel statistics of unit activations, in O(channels) memory."""

from __future__ import annotations

import torch


class ChannelStats:
    """Count, mean and sum of squared deviations per channel, merged batch by batch.

    Each batch is reduced in float64 on its own device, then merged into the running totals
    with Chan et al.'s parallel update, which stays exact to rounding however many tokens
    arrive (no sum-of-squares cancellation). The reduction is a few operations per channel
    and token, negligible beside the projections that produced the activations.
    """

    def __init__(self, channels: int, device: torch.device | str = "cpu"):
        self.count = 0
        self.mean = torch.zeros(channels, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(channels, dtype=torch.float64, device=device)

    def update(self, values: torch.Tensor) -> None:
        """Add rows of ``values`` ([tokens, channels]) to the statistics."""
        batch_count = values.shape[0]
        if batch_count == 0:
            return
        batch_var, batch_mean = torch.var_mean(values.double(), dim=0, correction=0)
        batch_m2 = batch_var * batch_count
        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.mean += delta * (batch_count / total)
        self.m2 += batch_m2 + delta.square() * (self.count * batch_count / total)
        self.count = total

    @property
    def variance(self) -> torch.Tensor:
        """Population variance over all tokens seen (zeros before any token)."""
        return self.m2 / max(self.count, 1)

    @property
    def sum_of_squares(self) -> torch.Tensor:
        """Sum over tokens of x^2, i.e. the squared L2 norm of each channel's activations."""
        return self.m2 + self.count * self.mean.square()
