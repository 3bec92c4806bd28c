"""The `ssah` command line: the engine's fixtures (tiny models, small sets) serve these tests too."""

from tests.engine.conftest import _deterministic, safety_set, tiny_llama, utility_set  # noqa: F401
