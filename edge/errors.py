"""The toolkit's errors: one base class, one subclass per place where things go wrong.

    EdgeError
    ├── ModelReadError      reading a model file: "Reading model 'x.onnx': ..."
    ├── ModelWriteError     writing a model or run folder
    ├── MetadataError       embedded metadata missing, malformed or of a newer schema
    ├── DataError           a dataset spec, file or array that cannot be used
    ├── PassError           a conversion pass that failed or got bad parameters
    ├── EngineError         an inference engine missing or refusing a model
    └── TargetError         a deployment target that is unknown or unreachable

The CLI catches ``EdgeError`` once and prints its message as one line with a non-zero exit.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class of every error the toolkit raises on purpose."""

    prefix = ""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        text = f"{self.prefix} '{where}': {message}" if where and self.prefix else message
        super().__init__(text)


class ModelReadError(EdgeError):
    """A model file could not be read."""

    prefix = "Reading model"


class ModelWriteError(EdgeError):
    """A model or result file could not be written."""

    prefix = "Writing"


class MetadataError(EdgeError):
    """The embedded toolkit metadata is missing, malformed or from a newer schema."""

    prefix = "Metadata of"


class DataError(EdgeError):
    """A dataset spec, data file or array cannot be used."""

    prefix = "Reading data"


class PassError(EdgeError):
    """A conversion pass failed or was given bad parameters."""

    prefix = "Pass"


class EngineError(EdgeError):
    """An inference engine is missing or refused the model."""

    prefix = "Engine"


class TargetError(EdgeError):
    """A deployment target is unknown or cannot be reached."""

    prefix = "Target"
