"""The errors mpips reports to users as one line, without a traceback."""
from __future__ import annotations


class MpipsError(ValueError):
    """A user-facing error: its message names the file, line, rank or setting at fault."""


class ConfigError(MpipsError):
    """A bad setting."""


class TopologyError(MpipsError):
    """The job's ranks cannot be split as asked."""


class DataError(MpipsError):
    """Bad or missing input data."""


class CheckpointError(MpipsError):
    """A checkpoint that is missing, incomplete, damaged or does not fit this job."""


class ProtocolError(RuntimeError):
    """A message or step the protocol does not allow: a bug or a mixed-up job, never user
    input, so it keeps its traceback (not an ``MpipsError``)."""
