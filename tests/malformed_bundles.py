"""Tiny but complete bundles for store / install tests, and a corpus of ways to break them.

`make_bundle` writes a valid bundle (tiny ONNX detector and embedder, a usearch index, a SQLite
catalogue, self-test scans, a manifest with its files table). Each `MALFORMED` case turns a copy of
it into an archive that an installer must refuse with one specific error class.
"""

from __future__ import annotations

# onnxruntime must be imported before usearch: the other order crashes the interpreter with the
# wheels this project pins (observed with onnxruntime 1.31 + usearch 2.26).
import onnxruntime  # noqa: F401  isort: skip

import hashlib
import io
import json
import shutil
import sqlite3
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from usearch.index import Index

from edge.bundles import errors as be
from edge.bundles.archive import pack
from edge.bundles.manifest import MANIFEST_NAME, SIGNATURE_NAME
from edge.errors import BundleError, BundleHashMismatchError, BundleSchemaError

DIM = 16
CARDS = ("c001", "c002", "c003")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _embedder_onnx(path: Path, dim: int, h: int = 224, w: int = 160) -> None:
    """(N,3,h,w) -> global mean per channel -> fixed linear map -> (N, dim) 'embedding'."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(3, dim)).astype(np.float32), "W")
    nodes = [
        helper.make_node("ReduceMean", ["images", "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["embedding"]),
    ]
    axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
    graph = helper.make_graph(
        nodes,
        "embedder",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, h, w])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        [weight, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)


def _detector_onnx(path: Path, size: int = 64) -> None:
    """(1,3,size,size) -> strided conv -> (1, 6, N) 'output0' with the YOLO-OBB layout."""
    weight = numpy_helper.from_array(np.zeros((6, 3, 8, 8), dtype=np.float32), "K")
    shape = numpy_helper.from_array(np.array([1, 6, -1], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["images", "K"], ["feat"], strides=[8, 8]),
        helper.make_node("Reshape", ["feat", "shape"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 6, None])],
        [weight, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)


def _index(path: Path, dim: int, n: int) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = Index(ndim=dim, metric="cos", dtype="f16")
    index.add(np.arange(n, dtype=np.uint64), vectors)
    index.save(str(path))


def _catalogue(path: Path) -> None:
    con = sqlite3.connect(path)
    with con:
        con.execute(
            "CREATE TABLE cards (card_id TEXT PRIMARY KEY, name TEXT, set_id TEXT, set_name TEXT,"
            " number TEXT, rarity TEXT, image_ref TEXT)"
        )
        con.execute("CREATE TABLE rows (key INTEGER PRIMARY KEY, card_id TEXT, view TEXT)")
        for i, card in enumerate(CARDS):
            con.execute(
                "INSERT INTO cards VALUES (?,?,?,?,?,?,?)",
                (card, f"Card {i}", "s1", "Set", str(i), "common", f"{card}.jpg"),
            )
            con.execute("INSERT INTO rows VALUES (?,?,?)", (2 * i, card, "upright"))
            con.execute("INSERT INTO rows VALUES (?,?,?)", (2 * i + 1, card, "rot180"))
    con.close()


def files_table(bundle: Path) -> dict[str, dict[str, object]]:
    """sha256 and size of every file except manifest.json / manifest.sig."""
    return {
        p.relative_to(bundle).as_posix(): {"sha256": _sha(p), "size": p.stat().st_size}
        for p in sorted(bundle.rglob("*"))
        if p.is_file() and p.name not in (MANIFEST_NAME, SIGNATURE_NAME)
    }


def make_bundle(
    out: Path,
    bundle_id: str = "base",
    *,
    dim: int = DIM,
    onnx_dim: int | None = None,
    hef_arch: str | None = None,
) -> Path:
    """Write a complete, valid bundle directory (unless onnx_dim differs from dim) and return it."""
    out.mkdir(parents=True)
    _detector_onnx(out / "detector.onnx")
    _embedder_onnx(out / "embedder.onnx", onnx_dim or dim)
    _index(out / "index.usearch", dim, 2 * len(CARDS))
    _catalogue(out / "catalogue.sqlite")
    (out / "selftest").mkdir()
    for i, card in enumerate(CARDS):
        img = np.full((88, 63, 3), 40 * (i + 1), dtype=np.uint8)
        cv2.imwrite(str(out / "selftest" / f"{card}.jpg"), img)
    if hef_arch:
        (out / "embedder.hef").write_bytes(b"HEF-test-double" * 8)
    write_manifest(out, _manifest_dict(out, bundle_id, dim, hef_arch))
    return out


def _input(h: int, w: int) -> dict[str, object]:
    return {
        "height": h,
        "width": w,
        "mean": [123.675, 116.28, 103.53],
        "std": [58.395, 57.12, 57.375],
    }


def _manifest_dict(out: Path, bundle_id: str, dim: int, hef_arch: str | None) -> dict[str, object]:
    embedder: dict[str, object] = {
        "file": "embedder.onnx",
        "sha256": _sha(out / "embedder.onnx"),
        "input": _input(224, 160),
        "output_name": "embedding",
        "embedding_dim": dim,
    }
    if hef_arch:
        embedder["hef"] = {
            "file": "embedder.hef",
            "sha256": _sha(out / "embedder.hef"),
            "arch": hef_arch,
        }
    return {
        "schema_version": 1,
        "bundle_id": bundle_id,
        "created": "2026-01-01T00:00:00Z",
        "catalogue": {
            "sha256": _sha(out / "catalogue.sqlite"),
            "name": "test",
            "card_count": len(CARDS),
        },
        "detector": {
            "file": "detector.onnx",
            "sha256": _sha(out / "detector.onnx"),
            "input": {
                **_input(64, 64),
                "resize": "letterbox",
                "mean": [0, 0, 0],
                "std": [255, 255, 255],
            },
            "output_name": "output0",
        },
        "embedder": embedder,
        "index": {"sha256": _sha(out / "index.usearch"), "dim": dim, "count": 2 * len(CARDS)},
        "selftest": {f"selftest/{c}.jpg": c for c in CARDS},
    }


def write_manifest(bundle: Path, manifest: dict[str, object]) -> None:
    """Write manifest.json with a fresh files table."""
    manifest = {**manifest, "files": files_table(bundle)}
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def rebrand(src: Path, dst: Path, bundle_id: str) -> Path:
    """Copy a bundle under a new bundle_id (cheaper than building one)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / MANIFEST_NAME).read_text())
    manifest["bundle_id"] = bundle_id
    (dst / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    (dst / SIGNATURE_NAME).unlink(missing_ok=True)
    return dst


# -- tar surgery -----------------------------------------------------------------------------------


def tar_of(bundle: Path, out: Path, extra: Callable[[tarfile.TarFile], None] | None = None) -> Path:
    """A plain tar of `bundle` (manifest first) plus whatever `extra` appends."""
    pack(bundle, out)
    if extra is not None:
        with tarfile.open(out, "a") as tar:
            extra(tar)
    return out


def add_member(
    tar: tarfile.TarFile,
    name: str,
    data: bytes = b"x",
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _edit_manifest(bundle: Path, edit: Callable[[dict[str, object]], None]) -> None:
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    edit(manifest)
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))


@dataclass(frozen=True)
class Case:
    """One malformed bundle: how to make its archive from a copy of the base, what must be raised."""

    name: str
    error: type[BundleError]
    make: Callable[[Path, Path], Path]  # (copy of the base bundle dir, work dir) -> archive path
    limits: dict[str, int] | None = None


def _corrupt_file(b: Path, w: Path) -> Path:
    data = bytearray((b / "catalogue.sqlite").read_bytes())
    data[-1] ^= 0xFF
    (b / "catalogue.sqlite").write_bytes(bytes(data))
    return tar_of(b, w / "x.tar")


def _grow_file(b: Path, w: Path) -> Path:
    with (b / "catalogue.sqlite").open("ab") as f:
        f.write(b"\0")
    return tar_of(b, w / "x.tar")


def _drop_file(b: Path, w: Path) -> Path:
    (b / "selftest" / "c002.jpg").unlink()
    return tar_of(b, w / "x.tar")


def _unlisted(b: Path, w: Path) -> Path:
    (b / "notes.txt").write_text("not in the manifest")
    return tar_of(b, w / "x.tar")


def _manifest_edit(edit: Callable[[dict[str, object]], None]) -> Callable[[Path, Path], Path]:
    def make(b: Path, w: Path) -> Path:
        _edit_manifest(b, edit)
        return tar_of(b, w / "x.tar")

    return make


def _set(path: tuple[str, ...], value: object) -> Callable[[dict[str, object]], None]:
    def edit(m: dict[str, object]) -> None:
        node: dict[str, object] = m
        for key in path[:-1]:
            node = node[key]  # type: ignore[assignment]
        node[path[-1]] = value

    return edit


_SPEC_OF = {
    "detector.onnx": "detector",
    "embedder.onnx": "embedder",
    "index.usearch": "index",
    "catalogue.sqlite": "catalogue",
}


def _with_file(name: str, data: bytes) -> Callable[[Path, Path], Path]:
    """Replace a listed file by `data` and re-list it honestly, so only the content check bites."""

    def make(b: Path, w: Path) -> Path:
        (b / name).write_bytes(data)
        manifest = json.loads((b / MANIFEST_NAME).read_text())
        manifest[_SPEC_OF[name]]["sha256"] = _sha(b / name)
        write_manifest(b, manifest)
        return tar_of(b, w / "x.tar")

    return make


def _not_json(b: Path, w: Path) -> Path:
    (b / MANIFEST_NAME).write_text("{not json")
    return tar_of(b, w / "x.tar")


def _no_manifest(b: Path, w: Path) -> Path:
    (b / MANIFEST_NAME).unlink()
    return tar_of(b, w / "x.tar")


def _rebuilt(**kwargs: object) -> Callable[[Path, Path], Path]:
    def make(b: Path, w: Path) -> Path:
        manifest = json.loads((b / MANIFEST_NAME).read_text())
        other = make_bundle(w / "rebuilt", manifest["bundle_id"], **kwargs)  # type: ignore[arg-type]
        return tar_of(other, w / "x.tar")

    return make


def _raw(data: bytes) -> Callable[[Path, Path], Path]:
    def make(b: Path, w: Path) -> Path:
        (w / "x.tar").write_bytes(data)
        return w / "x.tar"

    return make


def _truncated(b: Path, w: Path) -> Path:
    full = tar_of(b, w / "full.tar").read_bytes()
    (w / "x.tar").write_bytes(full[: len(full) // 2 + 100])
    return w / "x.tar"


def _extra(fn: Callable[[tarfile.TarFile], None]) -> Callable[[Path, Path], Path]:
    return lambda b, w: tar_of(b, w / "x.tar", fn)


MALFORMED: tuple[Case, ...] = (
    Case("absolute path", be.BundlePathError, _extra(lambda t: add_member(t, "/etc/evil"))),
    Case(
        "dot-dot path", be.BundlePathError, _extra(lambda t: add_member(t, "selftest/../../evil"))
    ),
    Case(
        "symlink",
        be.BundleLinkError,
        _extra(lambda t: add_member(t, "l", kind=tarfile.SYMTYPE, link="/etc/passwd")),
    ),
    Case(
        "hardlink",
        be.BundleLinkError,
        _extra(lambda t: add_member(t, "h", kind=tarfile.LNKTYPE, link="manifest.json")),
    ),
    Case(
        "char device",
        be.BundleSpecialFileError,
        _extra(lambda t: add_member(t, "dev", kind=tarfile.CHRTYPE)),
    ),
    Case(
        "fifo",
        be.BundleSpecialFileError,
        _extra(lambda t: add_member(t, "pipe", kind=tarfile.FIFOTYPE)),
    ),
    Case(
        "duplicate member",
        be.BundleDuplicateMemberError,
        _extra(lambda t: add_member(t, "detector.onnx")),
    ),
    Case("unlisted file", be.BundleUnlistedFileError, _unlisted),
    Case(
        "oversized member",
        be.BundleTooLargeError,
        lambda b, w: tar_of(b, w / "x.tar"),
        {"max_member_bytes": 4096},
    ),
    Case(
        "too many members",
        be.BundleTooLargeError,
        lambda b, w: tar_of(b, w / "x.tar"),
        {"max_members": 3},
    ),
    Case("hash mismatch", BundleHashMismatchError, _corrupt_file),
    Case("size mismatch", be.BundleSizeMismatchError, _grow_file),
    Case("missing listed file", be.BundleMissingFileError, _drop_file),
    Case(
        "unknown schema version",
        be.BundleSchemaVersionError,
        _manifest_edit(_set(("schema_version",), 99)),
    ),
    Case("manifest not json", BundleSchemaError, _not_json),
    Case("manifest missing field", BundleSchemaError, _manifest_edit(lambda m: m.pop("embedder"))),
    Case(
        "bundle id path trick", BundleSchemaError, _manifest_edit(_set(("bundle_id",), "../../etc"))
    ),
    Case("no manifest", BundleSchemaError, _no_manifest),
    Case(
        "spec hash differs from files table",
        BundleHashMismatchError,
        _manifest_edit(_set(("detector", "sha256"), "0" * 64)),
    ),
    Case("hef arch mismatch", be.BundleArchMismatchError, _rebuilt(hef_arch="hailo8")),
    Case(
        "index dim differs from embedder",
        be.BundleDimensionError,
        _manifest_edit(_set(("index", "dim"), 32)),
    ),
    Case("onnx output dim differs", be.BundleDimensionError, _rebuilt(onnx_dim=32)),
    Case(
        "corrupt onnx", be.BundleModelError, _with_file("embedder.onnx", b"not an onnx graph" * 10)
    ),
    Case("corrupt index", be.BundleModelError, _with_file("index.usearch", b"\0" * 64)),
    Case("not an archive", be.BundleArchiveError, _raw(b"PK\x03\x04 a zip, not a tar" * 40)),
    Case("truncated archive", be.BundleArchiveError, _truncated),
)
