"""The local sentence embedding for the semantic prompt cache: WordLlama's ``l2_supercat`` model.

The weights (32k x 256, float16, 16 MB) and the tokenizer ship inside the ``wordllama`` wheel, so
nothing is downloaded at run time. The files are opened directly: the package's own loader looks
for the tokenizer in a folder the wheel does not have and then tries the network.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

import numpy as np
from numpy.typing import NDArray
from safetensors import safe_open
from tokenizers import Tokenizer
from wordllama.inference import WordLlamaInference

MODEL_NAME = "wordllama-l2_supercat-256"
DIMENSIONS = 256


class TextEmbedder:
    """Unit-length float32 vectors for texts (cosine similarity is their dot product)."""

    def __init__(self) -> None:
        package = files("wordllama")
        tokenizer = Tokenizer.from_file(str(package / "tokenizers" / "l2_supercat_tokenizer_config.json"))
        with safe_open(str(package / "weights" / "l2_supercat_256.safetensors"), framework="np") as weights:
            table = weights.get_tensor("embedding.weight")
        self._model = WordLlamaInference(table, tokenizer)

    def embed(self, text: str) -> NDArray[np.float32]:
        vector = self._model.embed([text], norm=True)[0]
        return np.asarray(vector, dtype=np.float32)


@lru_cache(maxsize=1)
def shared_embedder() -> TextEmbedder:
    """One embedder per process (loading it takes ~0.2 s and 16 MB)."""
    return TextEmbedder()
