"""Exception types raised by seem-vos.

Every error a user can cause derives from :class:`VosError`, so front ends (CLI, API, workers) can turn
them into a clear message (or a 4xx) without catching unrelated bugs.
"""


class VosError(Exception):
    """Base class of every error caused by bad input or an unusable environment."""


class VideoError(VosError):
    """A video or frame folder cannot be opened or decoded."""


class PromptError(VosError):
    """A prompt is malformed or does not fit the video (coordinates, mask size, object ids)."""


class UnsupportedPromptError(PromptError):
    """The chosen engine cannot use this kind of prompt."""


class EngineError(VosError):
    """An engine cannot be created or used as asked (unknown name, bad option, engine misuse)."""


class CheckpointError(VosError):
    """A model checkpoint is missing, unreadable or does not match the model."""


class DownloadError(VosError):
    """Model weights could not be downloaded (no network, bad checksum, server error)."""


class WeightsNotAllowedError(CheckpointError):
    """A weights path lies outside the configured weights folder, where service workers may not read."""


class DatasetError(VosError):
    """An evaluation dataset has a malformed or incomplete layout."""
