"""Example scripts quoted whole by the docs (docs/pipelines.md); tests/e2e/test_pipeline.py runs them."""
