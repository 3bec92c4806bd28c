import os

# Tests never reach a model hub: a missing local file must fail at once, not retry over the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
