"""Character-level tokenizer: the vocabulary is stored in the model's metadata as one string."""

from __future__ import annotations

import numpy as np

from edge.errors import DataError


class CharTokenizer:
    """Maps each character of ``vocab`` to its index."""

    def __init__(self, vocab: str) -> None:
        if len(set(vocab)) != len(vocab):
            raise DataError("the vocabulary repeats a character.")
        self.vocab = vocab
        self._index = {c: i for i, c in enumerate(vocab)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The sorted set of characters in ``text``."""
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int64); a character outside the vocabulary is an error naming it."""
        try:
            return np.array([self._index[c] for c in text], dtype=np.int64)
        except KeyError as exc:
            raise DataError(f"the text holds {exc.args[0]!r}, which is not in the model's {len(self)}-character "
                            "vocabulary.") from None

    def decode(self, ids: np.ndarray | list[int]) -> str:
        return "".join(self.vocab[int(i)] for i in ids)
