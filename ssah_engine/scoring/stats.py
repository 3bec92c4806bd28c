"""Streaming per-channel statistics of unit activations, in O(channels) memory."""

from __future__ import annotations

import torch


class ChannelStats:
    """Count, mean and sum of squared deviations per channel, accumulated batch by batch ("pooled").

    The variance is the population variance over every response token of every pair together.

    Sums run in float64 around a fixed shift (the first token seen), so the squared sums lose
    nothing to cancellation: what is left is the spread of activations around one of their own
    values, never a large mean. Each batch costs a handful of kernels (two matrix-vector
    products), negligible beside the projections that produced the activations, and nothing
    syncs a GPU.
    """

    def __init__(self, channels: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.shifted_sum = torch.zeros(channels, dtype=torch.float64, device=device)
        self.shifted_squares = torch.zeros(channels, dtype=torch.float64, device=device)

    def update(self, values: torch.Tensor, per_sample: list[int] | None = None) -> None:
        """Add rows of ``values`` ([tokens, channels]) to the statistics (pooled: ``per_sample`` is unused)."""
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


class FlapChannelStats:
    """The authors' statistic: FLAP's running per-sample update, reproduced quirk for quirk.

    One update per calibration pair, in the order given (the estimate depends on it). With
    ``n`` pairs seen and this pair's response tokens ``x_t``:

        mean <- mean * n / (n + 1) + mean_t(x_t) / (n + 1)      a mean of per-pair token means
        fluc <- 0                                               for the first pair: it adds nothing
        fluc <- fluc * (n - 1) / n + sum_t (x_t - mean)^2 / (n + 1)    afterwards

    where ``mean`` is the *updated* mean on both sides of the square (FLAP's ``old_baseline_inp``
    aliases the tensor it then updates in place). ``variance`` is ``fluc``: a per-pair sum of
    squares rather than a variance, which only rescales a layer's channels together. Kept in
    float64 (FLAP: float32).
    """

    def __init__(self, channels: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.count = 0  # response tokens seen
        self.samples = 0
        self._mean = torch.zeros(channels, dtype=torch.float64, device=device)
        self._fluc = torch.zeros(channels, dtype=torch.float64, device=device)

    def update(self, values: torch.Tensor, per_sample: list[int] | None = None) -> None:
        """Add the rows of ``values`` ([tokens, channels]), ``per_sample[i]`` of them for pair i, in order."""
        counts = per_sample if per_sample is not None else [values.shape[0]]
        for sample in values.double().split(counts):
            if sample.shape[0] == 0:
                continue
            n = self.samples
            self._mean.mul_(n / (n + 1)).add_(sample.mean(0) / (n + 1))
            if n == 0:
                self._fluc.zero_()
            else:
                self._fluc.mul_((n - 1) / n).add_((sample - self._mean).square().sum(0) / (n + 1))
            self.samples += 1
            self.count += sample.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self._mean.clone()

    @property
    def variance(self) -> torch.Tensor:
        return self._fluc.clone()

    @property
    def sum_of_squares(self) -> torch.Tensor:
        raise ValueError("the flap estimator serves WIFV only (Wanda needs a sum of squares)")


ESTIMATORS = {"pooled": ChannelStats, "flap": FlapChannelStats}  # keys: audit_config.ESTIMATORS
