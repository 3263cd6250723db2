"""Specific bundle refusals. Each names one reason a bundle is refused so that the CLI, the API and
the tests can tell them apart; all inherit from the shared tree in edge/errors.py."""

from __future__ import annotations

from edge.errors import (
    BundleError,
    BundleHashMismatchError,
    BundleIncompatibleError,
    BundleSchemaError,
    BundleSignatureError,
    BundleUnsafeError,
)


class BundleArchiveError(BundleError):
    """The source is not a readable .tar / .tar.gz / .tar.zst archive or bundle directory."""

    code = "bundle_archive"


class BundlePathError(BundleUnsafeError):
    """A member name is absolute, climbs out with '..', or is otherwise not a plain relative path."""

    code = "bundle_unsafe_path"


class BundleLinkError(BundleUnsafeError):
    """A member is a symbolic or hard link."""

    code = "bundle_unsafe_link"


class BundleSpecialFileError(BundleUnsafeError):
    """A member is a device node, FIFO or anything other than a regular file or directory."""

    code = "bundle_unsafe_special"


class BundleUnlistedFileError(BundleUnsafeError):
    """A member is not listed in the manifest's files table."""

    code = "bundle_unlisted_file"


class BundleDuplicateMemberError(BundleUnsafeError):
    """The same member name appears twice: the second copy could overwrite a checked file."""

    code = "bundle_duplicate_member"


class BundleTooLargeError(BundleError):
    """A member, the total, or the member count exceeds the configured limits."""

    code = "bundle_too_large"
    http_status = 413


class BundleMissingFileError(BundleError):
    """A file the manifest lists is absent."""

    code = "bundle_missing_file"


class BundleSizeMismatchError(BundleHashMismatchError):
    """A file's size differs from the manifest's files table."""

    code = "bundle_size_mismatch"


class BundleSchemaVersionError(BundleSchemaError):
    """The manifest declares a schema_version this runtime does not read."""

    code = "bundle_schema_version"


class BundleArchMismatchError(BundleIncompatibleError):
    """A HEF targets a different Hailo architecture than the device's."""

    code = "bundle_arch_mismatch"


class BundleDimensionError(BundleIncompatibleError):
    """The embedder's output dimension differs from the index's."""

    code = "bundle_dimension_mismatch"


class BundleModelError(BundleError):
    """A model file does not load or its inputs/outputs differ from what the manifest declares."""

    code = "bundle_model_invalid"


class BundleUnsignedError(BundleSignatureError):
    """The device requires signed bundles and this one carries no manifest.sig."""

    code = "bundle_unsigned"


class BundleBadSignatureError(BundleSignatureError):
    """manifest.sig does not verify against any trusted public key (wrong key or tampered)."""

    code = "bundle_bad_signature"


class BundleConflictError(BundleError):
    """A different bundle with the same bundle_id is already installed; ids are immutable."""

    code = "bundle_conflict"
    http_status = 409


class BundleSelfTestError(BundleError):
    """The bundle loaded but its own reference scans do not identify as themselves."""

    code = "bundle_selftest_failed"


class NoPreviousBundleError(BundleError):
    """Rollback was asked for but no previous bundle is recorded."""

    code = "bundle_no_previous"
    http_status = 409


class BundleOutputError(BundleError):
    """A bundle build's output folder is taken (not empty, and no --force) or overlaps its inputs."""

    code = "bundle_output_exists"
    http_status = 409
