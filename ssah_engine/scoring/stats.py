"""Streaming per-channel statistics of unit activations, in O(channels) memory."""

from __future__ import annotations

import torch


class ChannelStats:
    """Count, mean and sum of squared deviations per channel, merged batch by batch.

    Each batch is summed in float64 around a shift close to the mean (the running mean, or
    the batch's first row at the start), so squaring loses nothing to cancellation; the
    batch's mean and squared deviations are then merged into the totals with Chan et al.'s
    parallel update. The sums run as matrix-vector products: several times faster on
    CPU than a reduction along the token dimension, and negligible beside the projections.
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
        values = values.double()
        shift = self.mean if self.count else values[0]
        shifted = values - shift
        ones = shifted.new_ones(1, batch_count)
        shifted_sum = (ones @ shifted).squeeze(0)
        shifted_squares = (ones @ shifted.mul_(shifted)).squeeze(0)
        batch_mean = shift + shifted_sum / batch_count
        batch_m2 = (shifted_squares - shifted_sum.square() / batch_count).clamp_min(0)
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
