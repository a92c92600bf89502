"""Errors raised by radpipe.

Every error a user can cause derives from :class:`PipelineError` and from the
builtin that best describes it, so callers may catch either. Messages say what
was expected, what was found, where, and how to fix it; the CLI prints them on
one line and exits with status 2.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

MAX_SHOWN_PROBLEMS = 20
#: The last line of a radpipe error in a formatted traceback (what a loader worker sends back as text).
_TRACEBACK_LINE = re.compile(r"^(?:pipeline|transforms|models)(?:\.\w+)*\.(\w+Error): (.+)$", re.MULTILINE)


class PipelineError(Exception):
    """Base class of every error radpipe raises on bad input or configuration."""


class ConfigError(PipelineError, ValueError):
    """A configuration key or value is unknown or invalid."""


class ManifestError(PipelineError, ValueError):
    """A manifest (CSV) is malformed or inconsistent."""


class DicomReadError(PipelineError, OSError):
    """A DICOM file or series cannot be read or assembled."""


class NotAnImageError(DicomReadError):
    """A valid DICOM file that holds no image (SR, RTSTRUCT, presentation state, DICOMDIR, no pixel data)."""


class ImageReadError(PipelineError, OSError):
    """A non-DICOM image file (NIfTI, NRRD, MHA) cannot be read."""


class UnknownModelError(PipelineError, KeyError):
    """A backbone name is not in the registry."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class WeightsError(PipelineError, ValueError):
    """Pretrained weights cannot be found, read or mapped onto the model."""


class RunError(PipelineError, ValueError):
    """A run directory is missing files or is inconsistent."""


def format_problems(problems: Sequence[str], limit: int = MAX_SHOWN_PROBLEMS) -> str:
    """Join problems into one message: the first ``limit`` of them plus a count of the rest.

    Args:
        problems: human-readable problem descriptions.
        limit: how many to show.

    Returns:
        A single string, problems separated by ``"; "``.
    """
    shown = "; ".join(problems[:limit])
    rest = len(problems) - limit
    if rest > 0:
        shown += f"; ... and {rest} more"
    return f"{len(problems)} problem(s): {shown}"


def pipeline_error_in(exc: BaseException) -> PipelineError | None:
    """The :class:`PipelineError` behind ``exc`` (``exc`` itself, or one in its ``raise ... from`` chain), or None.

    MONAI wraps an exception raised inside a transform in ``RuntimeError("applying transform ...")`` (once
    per nesting level); the CLI unwraps it to print the real cause on one line. A loader's worker process
    sends the error back as the text of its traceback: the last radpipe error named in that text is
    returned, rebuilt as a :class:`PipelineError` with its message.

    Example:
        >>> try:
        ...     try:
        ...         raise ConfigError("bad value")
        ...     except ConfigError as inner:
        ...         raise RuntimeError("applying transform") from inner
        ... except RuntimeError as outer:
        ...     print(pipeline_error_in(outer))
        bad value
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, PipelineError):
            return current
        seen.add(id(current))
        current = current.__cause__  # not __context__: a bug raised while handling a PipelineError keeps its traceback
    found = _TRACEBACK_LINE.findall(str(exc))
    return PipelineError(found[-1][1]) if found else None
