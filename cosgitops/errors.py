"""The error hierarchy.

Every failure a user can cause or meet derives from :class:`CosgitopsError`; the CLI
catches only this class and maps it to an exit code. Anything else is a bug (exit 3).

Following python-tuf, "the remote data is bad" (:class:`RemoteDataError`) is kept
apart from "the download failed" (:class:`DownloadError`): the first is an attack or a
broken publisher and must never be retried into acceptance, the second is transient.
"""

from __future__ import annotations

from typing import Any


class CosgitopsError(Exception):
    """Base class: a message for the user plus an optional hint saying what to do."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, location: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.location = location

    def __str__(self) -> str:
        prefix = f"{self.location}: " if self.location else ""
        return f"{prefix}{self.message}"


class UsageError(CosgitopsError):
    """The command line or the configuration asks for something impossible."""

    exit_code = 2


class ConfigError(CosgitopsError):
    """cosgitops.yaml, an agent config or an environment setting is wrong."""


class SourceError(CosgitopsError):
    """A YAML file could not be loaded safely (size, encoding, syntax, duplicates, bombs)."""


class ValidationError(CosgitopsError):
    """Validation found errors; carries the diagnostics."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        location: str | None = None,
        diagnostics: list[Any] | None = None,
    ):
        super().__init__(message, hint=hint, location=location)
        # cosgitops.validate.Diagnostic objects, errors and warnings
        self.diagnostics: list[Any] = list(diagnostics or ())


class GitError(CosgitopsError):
    """A git operation failed (unknown ref, not a repository)."""


class InvalidReferenceError(CosgitopsError):
    """An image reference could not be parsed."""


class RegistryError(CosgitopsError):
    """The registry refused a request or answered something unexpected."""


class AuthenticationError(RegistryError):
    """The registry wants credentials we do not have, or refused the ones we sent."""


class NotFoundError(CosgitopsError):
    """A manifest, blob, tag, release or file does not exist."""


class BuildError(CosgitopsError):
    """Building an image failed."""


class SigningError(CosgitopsError):
    """Signing failed, or a key could not be loaded."""


class KeyFileError(SigningError):
    """A key file is malformed, or its password is wrong."""


class VerificationError(CosgitopsError):
    """A signature, digest or piece of metadata did not verify."""


class PublishError(CosgitopsError):
    """Publishing the release index failed."""


class ConcurrentPublishError(PublishError):
    """Another publisher changed the index while we were writing."""


class DeviceError(CosgitopsError):
    """The device agent refused or failed an operation."""


class RemoteDataError(CosgitopsError):
    """Data from the network is bad: wrong digest, bad signature, expired, replayed, too big.

    Never retried: retrying cannot turn bad data into good data.
    """


class DownloadError(CosgitopsError):
    """The transfer itself failed (connection, timeout, HTTP error); retrying may help."""


class IntegrityError(RemoteDataError):
    """Bytes do not match the digest or size they were promised under."""
