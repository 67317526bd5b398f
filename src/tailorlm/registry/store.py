"""The blob store: every file of every version, once, named by the sha256 of its bytes.

    <registry>/blobs/<first 2 hex>/<64 hex>      read-only; the digest is the name and the check
    <registry>/checkouts/<manifest sha256>/...   a version's folder, hard links to its blobs
    <registry>/tmp/                              writes in progress

A blob is written aside (tmp/), fsynced, then renamed to its digest: a crash leaves either no blob
or a whole one, and an orphan in tmp/ that `gc` removes. Two versions that hold the same bytes (a
hybrid's LoRA shared by the versions that add client soft prompts) share one blob. Paths inside
the store are built from hex digests only, never from a name a user gave.

A checkout is how a version becomes a folder `load_adapter` reads: materialized aside from the
blobs, each checked against its digest, and renamed into place once whole, so every reader sees a
complete folder or none. Checkouts are a cache: `gc` may remove them, a read makes them again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path

from tailorlm.errors import TailorError

HEX64 = re.compile(r"[0-9a-f]{64}")
# One segment of a file's path inside a version: the files an adapter folder holds
# (adapter.json, weight/adapter_model.safetensors, variants/client_a/...), never '..' or hidden.
SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
CHUNK = 1 << 20


def check_relpath(rel: str) -> str:
    parts = rel.split("/")
    if not rel or any(not SEGMENT.fullmatch(p) for p in parts):
        raise TailorError(f"file name {rel!r} cannot be stored: use letters, digits, '_', '.', "
                          f"'+' or '-' in each part of the path")
    return rel


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        self.checkouts = self.root / "checkouts"
        for d in (self.blobs, self.tmp, self.checkouts):
            d.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not HEX64.fullmatch(digest):
            raise TailorError(f"{digest!r} is not a sha256 digest")
        return self.blobs / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put_file(self, source: Path) -> tuple[str, int]:
        """Copy a file into the store; returns (sha256, size). Hashes the bytes it copies, so a
        file changed while being read is stored as what was read, under that digest."""
        tmp = self.tmp / f"blob-{os.getpid()}-{uuid.uuid4().hex}"
        digest, size = hashlib.sha256(), 0
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        return self._commit(tmp, digest.hexdigest()), size

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self.has(digest):
            return digest
        tmp = self.tmp / f"blob-{os.getpid()}-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return self._commit(tmp, digest)

    def _commit(self, tmp: Path, digest: str) -> str:
        target = self.path(digest)
        if target.exists():  # the same bytes are already stored: keep the one there
            tmp.unlink()
            return digest
        target.parent.mkdir(exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
        fsync_dir(target.parent)
        return digest

    def read_bytes(self, digest: str) -> bytes:
        data = self.path(digest).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise TailorError(f"blob {digest[:12]} is damaged (its bytes no longer hash to its "
                              f"name); run `tailor registry verify`")
        return data

    def hash_of(self, digest: str) -> str | None:
        """The sha256 of the blob's bytes as they are now, or None when it is missing."""
        path = self.path(digest)
        if not path.is_file():
            return None
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def all_digests(self) -> set[str]:
        return {p.name for p in self.blobs.glob("??/*") if HEX64.fullmatch(p.name)}

    # -- checkouts ------------------------------------------------------------------------------

    def checkout(self, manifest_digest: str, files: list[tuple[str, str]]) -> Path:
        """The folder of a version: (relative path, sha256) per file, made once and reused."""
        if not HEX64.fullmatch(manifest_digest):
            raise TailorError(f"{manifest_digest!r} is not a sha256 digest")
        target = self.checkouts / manifest_digest
        if target.is_dir():
            if self._intact(target, files):
                return target
            # someone wrote into it (its folders are read-only, but not to root): set it aside
            aside = self.checkouts / f".tmp-damaged-{os.getpid()}-{uuid.uuid4().hex}"
            os.rename(target, aside)
            remove_tree(aside)
        tmp = self.checkouts / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            for rel, digest in files:
                dest = tmp / check_relpath(rel)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if self.hash_of(digest) != digest:
                    raise TailorError(f"blob {digest[:12]} of {rel} is missing or damaged; run "
                                      f"`tailor registry verify`")
                try:
                    os.link(self.path(digest), dest)  # read-only, the same inode as the blob
                except OSError:
                    shutil.copyfile(self.path(digest), dest)
            for folder in sorted({p for p in tmp.rglob("*") if p.is_dir()} | {tmp}, reverse=True):
                os.chmod(folder, 0o555)  # nothing is added to or removed from a version
            try:
                os.rename(tmp, target)
            except OSError:  # another reader made it first: theirs is as good as ours
                if not target.is_dir():
                    raise
        finally:
            if tmp.exists():
                remove_tree(tmp)
        return target

    def _intact(self, folder: Path, files: list[tuple[str, str]]) -> bool:
        """The checkout holds exactly the version's files, each still a link to its blob: a check
        by listing, without hashing. (Where links were not possible it is made again each time.)"""
        expected = {rel: digest for rel, digest in files}
        present = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
        if set(present) != set(expected):
            return False
        for rel, path in present.items():
            blob = self.path(expected[rel])
            st, bt = path.stat(), blob.stat() if blob.exists() else None
            if bt is None or (st.st_ino, st.st_dev) != (bt.st_ino, bt.st_dev):
                return False
        return True


def remove_tree(path: Path) -> None:
    """rmtree for a checkout, whose folders are read-only."""
    for folder in [path, *(p for p in path.rglob("*") if p.is_dir())]:
        try:
            os.chmod(folder, 0o755)
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)
