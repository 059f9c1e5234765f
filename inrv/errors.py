"""The exceptions inrv raises.

Every error a user can cause (bad file, bad option, missing device) is an :class:`InrvError`
subclass with a one-line message; the CLI maps each class to an exit code (see ``docs/cli.md``).
"""

from __future__ import annotations


class InrvError(Exception):
    """Base class of every error inrv raises on purpose."""

    exit_code = 1


class InputError(InrvError, ValueError):
    """The input is unusable: unreadable file, wrong type, unsupported dtype or dimension."""

    exit_code = 2


class FormatError(InputError):
    """An ``.inrv`` file is corrupt, truncated, hostile or not an ``.inrv`` file at all."""


class ChecksumError(FormatError):
    """A section or the header of an ``.inrv`` file fails its checksum."""


class UnsupportedVersionError(FormatError):
    """The file was written by a newer, incompatible format version."""


class LimitError(FormatError):
    """A field of an ``.inrv`` file exceeds a safety limit (size, voxels, tensors)."""


class UsageError(InrvError):
    """Options that cannot work together, an output that exists without ``--force``, ..."""

    exit_code = 2


class DeviceError(InrvError):
    """The requested device (e.g. ``cuda``) is not available."""

    exit_code = 2


class RunError(InrvError):
    """A run failed for a reason that is not the input's fault (out of memory, disk full, ...)."""

    exit_code = 1
