"""ObjectStore on a folder: bucket `b` is `root/b/`, object `n` is the file `root/b/n`, so the
images can be browsed in a file manager.

Content type and metadata, when they say more than the name does, ride on the data file as
an extended attribute (`user.bananabatch`), set on the temp file before it is published, so
they appear with the bytes in one rename and cost no file of their own. Where the
filesystem keeps no extended attributes (or on a system Python offers no call for them)
they live in a sidecar outside the bucket folders,
`root/.meta/<bucket>/<name>@<generation>.json`. The generation is the data file's mtime in
nanoseconds, which every write sets to a fresh, strictly increasing value before the file is
published. Keying the sidecar by generation lets it be written *before* the data appears, so
a reader never pairs new bytes with old metadata (and no reader looks for it before it is
whole, so it needs no temp file of its own). Both records carry the name and size they were
written for; a file edited in place, or a file a user drops into a bucket folder by hand, is
still an object, typed by its extension. A write whose content type is that guess and which
has no metadata records nothing: most objects (images without metadata, JSONL) are such.

Writes go to a temp file under `root/.tmp/` (same filesystem, so the final rename is atomic)
and are published with os.replace, or os.link when the object must not exist yet: link fails
atomically if the name is taken, so concurrent if_absent writers cannot both win. A process
killed at any point leaves the previous version (or nothing) visible, never part of a file;
at worst a temp file in `.tmp`. Per object that is one file created, written, stamped
(mtime, attribute) through its descriptor and renamed; folders this store made or saw are
remembered, not made again for every object.
"""

from __future__ import annotations

import errno
import itertools
import json
import mimetypes
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from stat import S_ISREG
from typing import IO, Any

from bananabatch.core.limits import object_name_problem, unwritable_name
from bananabatch.errors import NotFound, PermanentError
from bananabatch.ports import ObjectInfo

_META_DIR = ".meta"
_TMP_DIR = ".tmp"
_DEFAULT_CONTENT_TYPE = "application/octet-stream"
_XATTR = "user.bananabatch"
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
# errno values meaning "this filesystem keeps no (user) extended attributes".
_NO_XATTRS = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.E2BIG}
_temp_seq = itertools.count()
_COPY_CHUNK = 1024 * 1024
# Bucket folders sit next to .meta and .tmp, so a bucket may not start with a dot.
_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,221}")

_generation_lock = threading.Lock()
_last_generation = 0


def _next_generation() -> int:
    """Wall-clock nanoseconds, bumped so that no two writes in this process share one."""
    global _last_generation
    with _generation_lock:
        _last_generation = max(time.time_ns(), _last_generation + 1)
        return _last_generation


class FolderObjectStore:
    """ObjectStore on a local folder. Buckets are created on first write."""

    # System calls, not network waits: nothing to overlap (see ObjectStore).
    write_concurrency = 1

    def __init__(self, root: Path | str, *, xattrs: bool | None = None) -> None:
        """xattrs: keep content type and metadata in an extended attribute (True), in
        sidecars (False), or whichever the folder's filesystem supports (None)."""
        self.root = Path(root).resolve()
        self._tmp = self.root / _TMP_DIR
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._dirs: set[Path] = {self._tmp}
        self._xattrs = _probe_xattrs(self._tmp) if xattrs is None else xattrs

    # --- helpers for local tools ---------------------------------------------------------

    def path(self, bucket: str, name: str) -> Path:
        """Where the object's bytes are (or would be) on disk."""
        return self._bucket_dir(bucket).joinpath(*_segments(bucket, name))

    def ensure_bucket(self, bucket: str) -> Path:
        directory = self._bucket_dir(bucket)
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    # --- ObjectStore ---------------------------------------------------------------------

    def uri(self, bucket: str, name: str) -> str:
        return self.path(bucket, name).as_uri()

    def stat(self, bucket: str, name: str) -> ObjectInfo | None:
        path = self.path(bucket, name)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not _is_regular(st):
            return None
        return self._info(bucket, name, st)

    @contextmanager
    def open_read(self, bucket: str, name: str) -> Iterator[IO[bytes]]:
        path = self.path(bucket, name)
        try:
            handle = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(
                f"object {bucket}/{name}: expected a file at {path}, found none"
            ) from None
        with handle:
            yield handle

    @contextmanager
    def open_write(
        self,
        bucket: str,
        name: str,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> Iterator[IO[bytes]]:
        dest = self._writable_path(bucket, name)
        meta = _check_metadata(bucket, name, metadata)
        temp, fd = self._create_temp()
        try:
            with os.fdopen(fd, "wb") as sink:
                yield sink
                sink.flush()
                stamp = self._stamp(sink.fileno(), bucket, name, content_type, meta)
            # Renamed into place: nothing left to remove.
            self._publish(bucket, name, dest, temp, stamp, if_absent=False)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def write_bytes(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        if_absent: bool = False,
    ) -> bool:
        dest = self._writable_path(bucket, name)
        meta = _check_metadata(bucket, name, metadata)
        temp, fd = self._create_temp()
        published = False
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                stamp = self._stamp(fd, bucket, name, content_type, meta)
            finally:
                os.close(fd)
            published = self._publish(bucket, name, dest, temp, stamp, if_absent)
            return published
        finally:
            # A replace consumed the temp file; a link (if_absent) or a failure left it.
            if if_absent or not published:
                temp.unlink(missing_ok=True)

    def read_bytes(self, bucket: str, name: str) -> bytes:
        with self.open_read(bucket, name) as source:
            return source.read()

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._bucket_dir(bucket)
        directory, slash, partial = prefix.rpartition("/")
        if slash:
            # No valid object name lies under a prefix with an empty, "." or ".." segment.
            if any(seg in ("", ".", "..") for seg in directory.split("/")):
                return
            base = base.joinpath(*directory.split("/"))
            directory += "/"
        yield from self._walk(bucket, base, directory, partial)

    def copy(self, src_bucket: str, src_name: str, dst_bucket: str, dst_name: str) -> None:
        info = self.stat(src_bucket, src_name)
        if info is None:
            raise NotFound(f"copy source {src_bucket}/{src_name}: expected an object, found none")
        with (
            self.open_read(src_bucket, src_name) as source,
            self.open_write(
                dst_bucket,
                dst_name,
                content_type=info.content_type or _DEFAULT_CONTENT_TYPE,
                metadata=info.metadata,
            ) as sink,
        ):
            shutil.copyfileobj(source, sink, _COPY_CHUNK)

    def delete(self, bucket: str, name: str) -> None:
        path = self.path(bucket, name)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return
        if not _is_regular(st):
            return
        path.unlink(missing_ok=True)
        self._sidecar(bucket, name, st.st_mtime_ns).unlink(missing_ok=True)

    def signed_url(self, bucket: str, name: str, *, expires_in: timedelta) -> str:
        # The local stand-in for a V4 signed URL: the object's file:// URL with the same
        # lifetime parameter, so the emulator reads and times both alike. Nothing outside
        # this machine can follow it (a real Gemini key with the local backend cannot read
        # local reference images; the README says so).
        seconds = int(expires_in.total_seconds())
        return f"{self.uri(bucket, name)}?X-Goog-Expires={seconds}"

    # --- internals -----------------------------------------------------------------------

    def _writable_path(self, bucket: str, name: str) -> Path:
        """path(), for a write: a name some store could not hold (a file name over 255 bytes
        with its sidecar, a Cloud Storage name over 1,024) is refused before anything is
        written, as a PermanentError, never an OSError the caller would retry."""
        path = self.path(bucket, name)
        problem = object_name_problem(name)
        if problem is not None:
            raise PermanentError(unwritable_name(bucket, name, problem))
        return path

    def _bucket_dir(self, bucket: str) -> Path:
        if not _BUCKET_RE.fullmatch(bucket):
            raise PermanentError(
                f"bucket name {bucket!r}: expected letters, digits, '.', '_' or '-', "
                "not starting with '.'"
            )
        return self.root / bucket

    def _sidecar(self, bucket: str, name: str, generation: int) -> Path:
        parent, _, leaf = name.rpartition("/")
        directory = self.root / _META_DIR / bucket
        if parent:
            directory = directory.joinpath(*parent.split("/"))
        return directory / f"{leaf}@{generation}.json"

    def _create_temp(self) -> tuple[Path, int]:
        """A new temp file, open for writing: named by process and sequence (no random
        bytes to draw), a random name if a dead process's file of that name is left."""
        temp = self._tmp / f"{os.getpid()}-{next(_temp_seq)}.part"
        try:
            return temp, os.open(temp, _CREATE_FLAGS, 0o666)
        except FileExistsError:
            temp = self._tmp / f"{uuid.uuid4().hex}.part"
            return temp, os.open(temp, _CREATE_FLAGS, 0o666)
        except FileNotFoundError:
            # .tmp was removed under us (a user cleaning the folder): make it again.
            self._tmp.mkdir(parents=True, exist_ok=True)
            return temp, os.open(temp, _CREATE_FLAGS, 0o666)

    def _stamp(
        self, fd: int, bucket: str, name: str, content_type: str, metadata: dict[str, str]
    ) -> _Stamp:
        """Give the written temp file its generation and, when they say more than its name,
        its content type and metadata; all through the open descriptor."""
        generation = _next_generation()
        os.utime(fd, ns=(generation, generation))
        st = os.fstat(fd)
        # Filesystems with coarse timestamps round what we set; the sidecar must match
        # what stat will report later.
        generation = st.st_mtime_ns
        if not metadata and content_type == guessed_content_type(name):
            return _Stamp(generation, None)
        record = json.dumps(
            {"name": name, "size": st.st_size, "content_type": content_type, "metadata": metadata}
        ).encode()
        if self._xattrs:
            try:
                os.setxattr(fd, _XATTR, record)
                return _Stamp(generation, None)
            except OSError as exc:
                if exc.errno not in _NO_XATTRS:
                    raise
                # Too large for an attribute here, or a filesystem without them.
        sidecar = self._sidecar(bucket, name, generation)
        self._ensure_dir(sidecar.parent)
        side_fd = os.open(sidecar, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.write(side_fd, record)
        finally:
            os.close(side_fd)
        return _Stamp(generation, sidecar)

    def _ensure_dir(self, directory: Path) -> None:
        if directory not in self._dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._dirs.add(directory)

    def _publish(
        self,
        bucket: str,
        name: str,
        dest: Path,
        temp: Path,
        stamp: _Stamp,
        if_absent: bool,
    ) -> bool:
        previous = self._generation_of(dest)
        try:
            try:
                self._ensure_dir(dest.parent)
                self._place(temp, dest, if_absent)
            except FileNotFoundError:
                # The folder was removed since this store saw it: make it again.
                self._dirs.discard(dest.parent)
                self._ensure_dir(dest.parent)
                self._place(temp, dest, if_absent)
        except FileExistsError:
            if stamp.sidecar is not None:
                stamp.sidecar.unlink(missing_ok=True)
            if if_absent and dest.is_file():
                return False
            raise self._conflict(bucket, name, dest) from None
        except (NotADirectoryError, IsADirectoryError, PermissionError) as exc:
            if stamp.sidecar is not None:
                stamp.sidecar.unlink(missing_ok=True)
            raise self._conflict(bucket, name, dest) from exc
        if previous is not None and previous != stamp.generation:
            self._sidecar(bucket, name, previous).unlink(missing_ok=True)
        return True

    @staticmethod
    def _place(temp: Path, dest: Path, if_absent: bool) -> None:
        if if_absent:
            os.link(temp, dest)
        else:
            os.replace(temp, dest)

    def _conflict(self, bucket: str, name: str, dest: Path) -> PermanentError:
        return PermanentError(
            f"object {bucket}/{name}: cannot be a file at {dest}, because that path or one "
            "of its parents is taken by a folder or file of another object"
        )

    @staticmethod
    def _generation_of(path: Path) -> int | None:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_mtime_ns if _is_regular(st) else None

    def _info(self, bucket: str, name: str, st: os.stat_result) -> ObjectInfo:
        record = self._read_sidecar(bucket, name, st)
        if record is None:
            content_type = guessed_content_type(name)
            metadata: dict[str, str] = {}
        else:
            content_type = str(record.get("content_type") or _DEFAULT_CONTENT_TYPE)
            metadata = {str(k): str(v) for k, v in dict(record.get("metadata") or {}).items()}
        return ObjectInfo(
            bucket=bucket,
            name=name,
            size=st.st_size,
            content_type=content_type,
            metadata=metadata,
            generation=str(st.st_mtime_ns),
            updated=datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC),
        )

    def _read_sidecar(self, bucket: str, name: str, st: os.stat_result) -> dict[str, Any] | None:
        """The object's record: its extended attribute, else its sidecar (a store written
        where attributes are not kept, or before they were used)."""
        record: Any = None
        if self._xattrs:
            try:
                record = json.loads(os.getxattr(self.path(bucket, name), _XATTR))
            except (OSError, ValueError):
                record = None
            if _matches(record, name, st):
                return dict(record)
        try:
            record = json.loads(self._sidecar(bucket, name, st.st_mtime_ns).read_bytes())
        except (OSError, ValueError):
            return None
        return dict(record) if _matches(record, name, st) else None

    def _walk(
        self, bucket: str, directory: Path, name_prefix: str, partial: str
    ) -> Iterator[ObjectInfo]:
        try:
            with os.scandir(directory) as it:
                entries = [e for e in it if e.name.startswith(partial)]
        except (FileNotFoundError, NotADirectoryError):
            return
        # Sorting a folder's entries with "/" appended to sub-folders yields names in
        # global string order: "a-b" < "a/x" < "ab", as Cloud Storage lists them.
        keyed = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                keyed.append((entry.name + "/", entry, True))
            elif entry.is_file():
                keyed.append((entry.name, entry, False))
        keyed.sort(key=lambda item: item[0])
        for key, entry, is_dir in keyed:
            if is_dir:
                yield from self._walk(bucket, Path(entry.path), name_prefix + key, "")
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue  # deleted while we listed
            yield self._info(bucket, name_prefix + key, st)


@dataclass(frozen=True)
class _Stamp:
    """What a write gave its temp file: the generation, and the sidecar if one was needed."""

    generation: int
    sidecar: Path | None


def _matches(record: Any, name: str, st: os.stat_result) -> bool:
    # A file edited in place keeps its mtime (and its attributes) only by accident; the size
    # check catches most such edits, and a stale record is then ignored rather than trusted.
    return (
        isinstance(record, dict) and record.get("name") == name and record.get("size") == st.st_size
    )


def _probe_xattrs(directory: Path) -> bool:
    """Whether files in directory keep user extended attributes (Linux; tmpfs since 6.6)."""
    if not hasattr(os, "setxattr"):
        return False
    probe = directory / f"xattr-probe-{os.getpid()}-{next(_temp_seq)}"
    try:
        fd = os.open(probe, _CREATE_FLAGS, 0o666)
    except OSError:
        return False
    try:
        os.setxattr(fd, _XATTR, b"{}")
        return os.getxattr(fd, _XATTR) == b"{}"
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def _segments(bucket: str, name: str) -> list[str]:
    segments = name.split("/")
    if (
        not name
        or "\x00" in name
        or "\\" in name
        or any(seg in ("", ".", "..") for seg in segments)
    ):
        raise PermanentError(
            f"object name {name!r} in bucket {bucket}: expected '/'-separated segments, none "
            "empty, '.' or '..', no leading or trailing '/', no backslash or NUL"
        )
    return segments


def _check_metadata(bucket: str, name: str, metadata: Mapping[str, str] | None) -> dict[str, str]:
    checked: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise PermanentError(
                f"metadata of {bucket}/{name}: expected str keys and values, found "
                f"{type(key).__name__} {key!r} = {type(value).__name__}"
            )
        checked[key] = value
    return checked


def _is_regular(st: os.stat_result) -> bool:
    return S_ISREG(st.st_mode)


# Types mimetypes does not know (it depends on the machine's mime.types) but this project
# writes by the thousand.
_TYPES_BY_SUFFIX = {".jsonl": "application/jsonl"}


def guessed_content_type(name: str) -> str:
    """The content type of an object without a sidecar, from its name."""
    suffix = name[name.rfind(".") :] if "." in name.rpartition("/")[2] else ""
    known = _TYPES_BY_SUFFIX.get(suffix.lower())
    return known or mimetypes.guess_type(name)[0] or _DEFAULT_CONTENT_TYPE
