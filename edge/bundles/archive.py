"""Read a bundle source (a .tar / .tar.gz / .tar.zst archive or a directory) member by member into a
staging directory, refusing path tricks, links, device nodes and oversized members as they stream
past, and hashing each file while it is written; and pack a bundle directory into an archive.

The archive format is recognised by its magic bytes, not its file name.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, Literal

import zstandard

from edge.bundles.errors import (
    BundleArchiveError,
    BundleDuplicateMemberError,
    BundleLinkError,
    BundlePathError,
    BundleSpecialFileError,
    BundleTooLargeError,
)
from edge.bundles.manifest import MANIFEST_NAME, SIGNATURE_NAME

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
Compression = Literal["none", "gz", "zst"]
# What reading a member's bytes raises when the archive is corrupt or cut short.
_READ_ERRORS = (tarfile.TarError, EOFError, zstandard.ZstdError, gzip.BadGzipFile, zlib.error)


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps that bound what one install may write."""

    max_member_bytes: int = 512 * 1024 * 1024
    max_total_bytes: int = 1024 * 1024 * 1024
    max_members: int = 4096


@dataclass(frozen=True, slots=True)
class FileDigest:
    """What was written for one member: its sha256 (hex) and size in bytes."""

    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class _Member:
    """One entry of a source, already classified: a regular file (with a byte stream) or a dir."""

    name: str
    is_dir: bool
    size: int
    stream: IO[bytes] | None


def safe_name(raw: str) -> str | None:
    """Normalise a member name to a plain relative POSIX path; None for the archive root ('.').

    Refuses absolute paths, '..', backslashes, NUL and empty components: each is a way to write
    outside the staging directory or to alias another member."""
    if "\x00" in raw or "\\" in raw:
        raise BundlePathError(f"member name {raw!r} contains NUL or a backslash")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise BundlePathError(f"member {raw!r} has an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise BundlePathError(f"member {raw!r} climbs out of the bundle with '..'")
    return "/".join(parts) if parts else None


def _tar_members(fileobj: BinaryIO, mode: Literal["r|", "r|gz"]) -> Iterator[_Member]:
    try:
        with tarfile.open(fileobj=fileobj, mode=mode) as tar:
            for info in tar:
                yield _classify_tar(tar, info)
    except (*_READ_ERRORS, OSError) as e:
        raise BundleArchiveError(f"archive is corrupt or truncated: {e}") from e


def _classify_tar(tar: tarfile.TarFile, info: tarfile.TarInfo) -> _Member:
    if info.issym() or info.islnk():
        raise BundleLinkError(f"member {info.name!r} is a link to {info.linkname!r}")
    if info.isdir():
        return _Member(info.name, True, 0, None)
    if not info.isreg() or info.issparse():
        raise BundleSpecialFileError(f"member {info.name!r} is not a regular file or directory")
    return _Member(info.name, False, info.size, tar.extractfile(info))


def _dir_members(root: Path) -> Iterator[_Member]:
    """Walk a bundle directory without following links; the same checks as an archive."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                raise BundleLinkError(f"{rel!r} is a symbolic link")
            if stat.S_ISDIR(st.st_mode):
                yield _Member(rel, True, 0, None)
            elif stat.S_ISREG(st.st_mode):
                with path.open("rb") as f:
                    yield _Member(rel, False, st.st_size, f)
            else:
                raise BundleSpecialFileError(f"{rel!r} is not a regular file or directory")


def iter_source(source: Path) -> Iterator[_Member]:
    """Members of a directory or an archive whose format is recognised by its first bytes."""
    if source.is_dir():
        yield from _dir_members(source)
        return
    try:
        f = source.open("rb")
    except OSError as e:
        raise BundleArchiveError(f"cannot open bundle {source}: {e.strerror}") from e
    with f:
        head = f.read(512)
        f.seek(0)
        if head.startswith(_GZIP_MAGIC):
            yield from _tar_members(f, "r|gz")
        elif head.startswith(_ZSTD_MAGIC):
            reader = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
            with reader:
                yield from _tar_members(reader, "r|")
        elif len(head) >= 262 and head[257:262] == b"ustar":
            yield from _tar_members(f, "r|")
        else:
            raise BundleArchiveError(
                f"{source.name} is neither a bundle directory nor a .tar/.tar.gz/.tar.zst archive"
            )


def _copy(stream: IO[bytes], dest: Path, cap: int) -> FileDigest:
    """Write a member to a new file (never through an existing path or link), hashing as it goes."""
    digest = hashlib.sha256()
    written = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        while chunk := stream.read(CHUNK):
            written += len(chunk)
            if written > cap:
                raise BundleTooLargeError(f"{dest.name} is larger than the {cap} byte limit")
            digest.update(chunk)
            out.write(chunk)
    return FileDigest(digest.hexdigest(), written)


def extract(source: Path, staging: Path, limits: Limits) -> dict[str, FileDigest]:
    """Stream every member of `source` into `staging`; return name -> digest of each file written."""
    digests: dict[str, FileDigest] = {}
    seen: set[str] = set()
    total = 0
    for count, member in enumerate(iter_source(source), start=1):
        if count > limits.max_members:
            raise BundleTooLargeError(f"bundle has more than {limits.max_members} members")
        name = safe_name(member.name)
        if name is None:
            continue
        if name in seen:
            raise BundleDuplicateMemberError(f"member {name!r} appears twice")
        seen.add(name)
        dest = staging.joinpath(*PurePosixPath(name).parts)
        if member.is_dir:
            _mkdirs(staging, dest)
            continue
        if member.size > limits.max_member_bytes:
            raise BundleTooLargeError(
                f"member {name!r} is {member.size} bytes, over the {limits.max_member_bytes} limit"
            )
        if total + member.size > limits.max_total_bytes:
            raise BundleTooLargeError(f"bundle is larger than {limits.max_total_bytes} bytes")
        _mkdirs(staging, dest.parent)
        assert member.stream is not None
        cap = min(limits.max_member_bytes, limits.max_total_bytes - total)
        try:
            digests[name] = _copy(member.stream, dest, cap)
        except _READ_ERRORS as e:
            raise BundleArchiveError(f"archive is corrupt or truncated at {name!r}: {e}") from e
        except FileExistsError as e:
            raise BundleDuplicateMemberError(f"member {name!r} collides with another") from e
        except (IsADirectoryError, NotADirectoryError) as e:
            raise BundlePathError(f"member {name!r} collides with a directory or file") from e
        total += digests[name].size
    logger.debug("extracted %d files, %d bytes from %s", len(digests), total, source.name)
    return digests


def _mkdirs(staging: Path, path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise BundlePathError(
            f"{path.relative_to(staging).as_posix()!r} collides with a file of the bundle"
        ) from e


def pack(bundle_dir: Path, out: Path, compression: Compression = "none") -> Path:
    """Write bundle_dir as an archive: manifest.json (and .sig) first so installers can check
    member names against it as they stream; plain files only, owner/mtime normalised."""
    names = sorted(
        p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()
    )
    first = [n for n in (MANIFEST_NAME, SIGNATURE_NAME) if n in names]
    ordered = first + [n for n in names if n not in first]
    with out.open("wb") as raw:
        sink: BinaryIO = raw
        zctx = None
        if compression == "zst":
            zctx = zstandard.ZstdCompressor(level=10).stream_writer(raw, closefd=False)
            sink = zctx
        mode: Literal["w|", "w|gz"] = "w|gz" if compression == "gz" else "w|"
        with tarfile.open(fileobj=sink, mode=mode, format=tarfile.PAX_FORMAT) as tar:
            for name in ordered:
                _add_file(tar, bundle_dir / name, name)
        if zctx is not None:
            zctx.close()  # type: ignore[no-untyped-call]
    return out


def _add_file(tar: tarfile.TarFile, path: Path, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.size = path.stat().st_size
    info.mode = 0o644
    info.mtime = int(path.stat().st_mtime)
    with path.open("rb") as f:
        tar.addfile(info, f)
