"""Text for language models: token windows from a text file or the tinyshakespeare text shipped in the zoo.

Specs (the model's metadata supplies the tokenizer and the window length, ``task.context``):

- ``tinyshakespeare:split=val`` (the last 10 % of the corpus, shipped) or ``split=calib`` (the first 64 KB of the
  training part, shipped);
- ``file.txt``, optionally ``file.txt:split=val`` (last 10 %) or ``split=train`` (first 90 %);
- parameters ``context=N`` (tokens per window) and ``windows=N`` (at most N windows, from the start).

Windows do not overlap; each predicts its own tokens 2..N from the ones before (no cache across windows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.artifact import Meta
from edge.errors import DataError

TEXT_DIR = Path(__file__).resolve().parents[1] / "zoo" / "text"
NAMED = {"tinyshakespeare": {"val": "tinyshakespeare_val.txt", "calib": "tinyshakespeare_calib.txt"}}
SPLITS = ("all", "train", "val")
VAL_FRACTION = 0.1


def is_text_spec(name: str) -> bool:
    """True for a named corpus or a .txt file."""
    return name in NAMED or Path(name).suffix.lower() == ".txt"


def read_text(name: str, params: dict[str, str]) -> str:
    """The text a spec names, split as asked."""
    split = params.get("split")
    if name in NAMED:
        files = NAMED[name]
        split = split or "val"
        if split not in files:
            raise DataError(f"'{name}' ships the splits {', '.join(files)}; got split={split}.")
        return (TEXT_DIR / files[split]).read_text(encoding="utf-8")
    path = Path(name)
    if not path.is_file():
        raise DataError("no such text file.", where=name)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError("the text file is not UTF-8.", where=name) from None
    split = split or "all"
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}; got {split}.", where=name)
    cut = int(len(text) * (1 - VAL_FRACTION))
    return {"all": text, "train": text[:cut], "val": text[cut:]}[split]


def load_token_windows(spec: str, meta: Meta) -> np.ndarray:
    """Token windows (windows, tokens) int64 for a language model: named text, a .txt file or an .npz of ids."""
    from edge.data.registry import parse_spec

    name, params = parse_spec(spec)
    if is_text_spec(name):
        return text_windows_for(name, params, meta)
    path = Path(name)
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise DataError("no such file.", where=name)
        with np.load(path) as data:
            if "x" not in data:
                raise DataError("the .npz has no array named x (token windows).", where=name)
            x = data["x"]
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
            raise DataError(f"x must hold token ids (windows, tokens) of integers; got {x.dtype} {x.shape}.",
                            where=name)
        return x.astype(np.int64)
    raise DataError("a language model reads a .txt file, 'tinyshakespeare[:split=val|calib]' or an .npz whose x "
                    "holds token windows.", where=name)


def text_windows_for(name: str, params: dict[str, str], meta: Meta) -> np.ndarray:
    """Token windows (windows, context) int64 of the named text, tokenized with the model's tokenizer."""
    from edge.families.llm.export import tokenizer_of

    tokenizer = tokenizer_of(meta)
    if tokenizer is None:
        raise DataError("this language model carries no tokenizer in its metadata, so text cannot be tokenized; "
                        "give token windows as an .npz with x (windows, tokens) instead.")
    context = _positive(params, "context", int(meta.task.get("context", 128)), minimum=2)
    limit = _positive(params, "windows", None, minimum=1)
    tokens = tokenizer.encode(read_text(name, params))
    count = len(tokens) // context
    if count == 0:
        raise DataError(f"the text has {len(tokens)} tokens, fewer than one window of {context}.", where=name)
    if limit is not None:
        count = min(count, limit)
    return tokens[: count * context].reshape(count, context)


def _positive(params: dict[str, str], key: str, default: int | None, minimum: int) -> int | None:
    if key not in params:
        return default
    value = params[key]
    if not value.isdigit() or int(value) < minimum:
        raise DataError(f"dataset parameter {key} must be an integer >= {minimum}; got '{value}'.")
    return int(value)
