"""One exception tree. Every error carries a human message, an optional fix hint and a stable code."""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error the runtime raises on purpose."""

    code = "edge_error"
    http_status = 500

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class ConfigError(EdgeError):
    code = "config_invalid"
    http_status = 500


class BadImageError(EdgeError):
    """The bytes are not an image we can decode (corrupt, truncated, empty, wrong type)."""

    code = "bad_image"
    http_status = 400


class ImageTooLargeError(BadImageError):
    """The image header announces more pixels (or the body more bytes) than the configured limit."""

    code = "image_too_large"
    http_status = 413


class BundleError(EdgeError):
    """A bundle is missing, malformed, tampered with or incompatible."""

    code = "bundle_invalid"
    http_status = 422


class BundleNotFoundError(BundleError):
    code = "bundle_not_found"
    http_status = 404


class BundleHashMismatchError(BundleError):
    code = "bundle_hash_mismatch"


class BundleSchemaError(BundleError):
    code = "bundle_schema"


class BundleIncompatibleError(BundleError):
    """Valid bundle, wrong device: HEF arch, embedding dimension, schema version."""

    code = "bundle_incompatible"


class BundleUnsafeError(BundleError):
    """Archive member with a path trick, link, device node or unlisted file."""

    code = "bundle_unsafe"


class BundleSignatureError(BundleError):
    code = "bundle_signature"
    http_status = 403


class BackendError(EdgeError):
    """An inference backend failed to load or run."""

    code = "backend_error"
    http_status = 503


class BackendUnavailableError(BackendError):
    code = "backend_unavailable"


class BackendTimeoutError(BackendError):
    code = "backend_timeout"
    http_status = 504


class SourceError(EdgeError):
    """A frame source failed to open or stopped delivering."""

    code = "source_error"
    http_status = 503


class NotFoundError(EdgeError):
    code = "not_found"
    http_status = 404


class AuthError(EdgeError):
    code = "unauthorized"
    http_status = 401
