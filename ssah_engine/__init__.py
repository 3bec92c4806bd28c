"""SSAH engine: find, test and protect the safety-critical units of a causal language model.

A plain library (torch, transformers, numpy): it knows nothing of HTTP, databases or queues,
never reads the environment and is driven by config objects.
"""

__version__ = "0.1.0"
