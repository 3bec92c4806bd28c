"""Unit importance scores: WIFV (the paper's), Wanda and SNIP, all reduced to heads and neurons."""

from .scores import METHODS, DatasetScores, score_dataset, zscore

__all__ = ["METHODS", "DatasetScores", "score_dataset", "zscore"]
