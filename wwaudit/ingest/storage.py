"""Byte access for model files and their external data: local folders and object-store URLs.

Every byte wwaudit reads from a model comes through here, so the safety rules live in one place
whatever the storage: a local file is opened by `safe_open` (no '..', no absolute path, no
symbolic or hard link), an object-store URL (`s3://`, `gs://`, any fsspec protocol) is read with
fsspec by byte range, and its external data may only name keys below the model's own prefix
(`location_parts` refuses the same escapes as for a folder). Readers of other formats use
`open_data` too.

fsspec (and s3fs for S3, gcsfs for GCS) is the optional extra `wwaudit[remote]`; without it a URL
gives one line saying what to install. Credentials and endpoints come from the usual places of
each backend (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ~/.aws).
"""

from __future__ import annotations

import errno
import mmap
import os
import posixpath
import re
import stat
from dataclasses import dataclass
from typing import Any

from wwaudit.errors import InputError

# scheme://... (two letters at least: 'C:\\x' is a Windows path, not a URL).
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
# protobuf refuses messages above 2 GiB (the same limit as for local files).
PROTOBUF_LIMIT = 2**31


# Flags of every open of a file named by the model: never follow a symbolic link in the last
# component, never block (a FIFO named as data would otherwise hang the audit), no fd leak.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
# Walking folder by folder with dir_fd makes every component checkable (POSIX); elsewhere the
# weaker realpath comparison is all there is.
_OPENAT = os.open in os.supports_dir_fd and bool(_NOFOLLOW) and hasattr(os, "O_DIRECTORY")


def location_parts(location: str) -> list[str]:
    """The path components of an external-data location, refusing every form of escape.

    Both separators count ('\\' is a separator on Windows, where the same file may be audited),
    so '..\\x' is refused everywhere; empty and '.' components are dropped.
    """
    if not location:
        raise InputError("external data has an empty location")
    if "\x00" in location:
        raise InputError("external data location contains a NUL byte")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location):
        raise InputError(f"external data location '{location}' is an absolute path: refusing to read outside the model's folder")
    parts = [p for p in location.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InputError(f"external data location '{location}' climbs out of the model's folder with '..': refusing")
    if not parts:
        raise InputError(f"external data location '{location}' names the model's folder, not a file")
    return parts


def _open_error(location: str, exc: OSError, what: str = "file") -> InputError:
    if exc.errno == errno.ENOENT:
        return InputError(f"external data file '{location}' not found beside the model")
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return InputError(f"external data location '{location}' passes through a symbolic link ({what}): refusing")
    return InputError(f"external data file '{location}' cannot be opened: {exc.strerror}")


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_within(base_dir: str, parts: list[str], location: str) -> int:
    """Open base_dir/parts component by component, no symbolic link anywhere below base_dir."""
    if not _OPENAT:
        base_real = os.path.realpath(base_dir)
        target = os.path.join(base_real, *parts)
        if os.path.realpath(target) != os.path.normpath(target):
            raise InputError(f"external data location '{location}' passes through a symbolic link: refusing")
        try:
            return os.open(target, _READ_FLAGS)
        except OSError as exc:
            raise _open_error(location, exc) from None
    try:
        dir_fd = os.open(base_dir, _DIR_FLAGS)
    except OSError as exc:
        raise InputError(f"the model's folder cannot be opened for external data: {exc.strerror}") from None
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.ENOTDIR and _is_link(part, dir_fd):
                    exc.errno = errno.ELOOP  # Linux answers ENOTDIR for a symlinked folder
                raise _open_error(location, exc, "folder") from None
            os.close(dir_fd)
            dir_fd = next_fd
        try:
            return os.open(parts[-1], _READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise _open_error(location, exc) from None
    finally:
        os.close(dir_fd)


def safe_open(base_dir: str, location: str) -> tuple[int, os.stat_result]:
    """Open `location` inside `base_dir` refusing every path escape; returns (fd, fstat).

    The checks are made on the open file descriptor, not on a path looked up again later, so a
    file swapped between check and use cannot slip through: '..' and absolute paths are refused
    before any system call, every folder below `base_dir` and the file itself are opened with
    O_NOFOLLOW (a symbolic link anywhere fails), and the opened file must be a regular file with
    one hard link (a hard link is indistinguishable from the original and can point anywhere on
    the same file system).
    """
    parts = location_parts(location)
    fd = _open_within(base_dir, parts, location)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InputError(f"external data '{location}' is not a regular file")
    if st.st_nlink > 1:
        os.close(fd)
        raise InputError(f"external data file '{location}' is a hard link ({st.st_nlink} names): refusing")
    return fd, st


def map_range(fd: int, offset: int, length: int, what: str) -> memoryview:
    """Bytes [offset, offset+length) of the open regular file `fd`, memory-mapped read-only.

    The range is checked against the file's size now (a file truncated after opening gives an
    InputError, not a SIGBUS at first touch of a page that was checked when the header was read).
    """
    size = os.fstat(fd).st_size
    if offset < 0 or length < 0 or offset + length > size:
        raise InputError(f"{what}: bytes {offset}..{offset + length} lie beyond the end of the file ({size} bytes)")
    if length == 0:
        return memoryview(b"")
    page = mmap.ALLOCATIONGRANULARITY
    start = (offset // page) * page
    mm = mmap.mmap(fd, offset + length - start, access=mmap.ACCESS_READ, offset=start)
    return memoryview(mm)[offset - start : offset - start + length]


def is_url(path: str) -> bool:
    """Whether `path` names an object-store URL (anything but a plain path or file://)."""
    match = _URL.match(path)
    return match is not None and match.group(1).lower() != "file"


def local_path(path: str) -> str:
    """A file:// URL as the local path it names (read with the local file's safety checks)."""
    if _URL.match(path) and path[:7].lower() == "file://":
        return path[7:] or "/"
    return path


def _filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) of a URL; one line when fsspec or the backend is missing."""
    scheme = url.split("://", 1)[0].lower()
    try:
        import fsspec
    except ImportError:
        raise InputError(f"{url}: reading {scheme}:// URLs needs fsspec: pip install 'wwaudit[remote]'") from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise InputError(
            f"{url}: the {scheme}:// backend is not installed ({_first_line(exc)}): pip install 'wwaudit[remote]'"
        ) from None
    except ValueError as exc:
        raise InputError(f"{url}: unknown URL scheme '{scheme}' ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def remote_error(url: str, exc: BaseException) -> InputError:
    """One sentence for whatever an object store raised (backends raise their own exception types)."""
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{url}: no such object")
    if isinstance(exc, PermissionError):
        return InputError(f"{url}: access denied (check the credentials): {_first_line(exc)}")
    if isinstance(exc, IsADirectoryError):
        return InputError(f"{url}: is a prefix (folder), not an object")
    return InputError(f"{url}: cannot be read: {type(exc).__name__}: {_first_line(exc)}")


def read_remote_model(url: str) -> bytes:
    """The bytes of a model file at an object-store URL, size-checked before the download."""
    fs, path = _filesystem(url)
    try:
        info = fs.info(path)
        if info.get("type") == "directory":
            raise IsADirectoryError(path)
        size = int(info.get("size") or 0)
        if size == 0:
            raise InputError(f"{url}: is empty (0 bytes)")
        if size >= PROTOBUF_LIMIT:
            raise InputError(f"{url}: {size} bytes exceeds protobuf's 2 GiB limit (use external data)")
        return bytes(fs.cat_file(path))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - s3fs, gcsfs, aiohttp and botocore raise their own types
        raise remote_error(url, exc) from None


def model_base(path: str) -> str:
    """Where a model's external data must come from: its folder, or its URL's prefix."""
    if is_url(path):
        return path.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(path))


@dataclass
class DataFile:
    """One opened external-data file or object: its size, and reads of byte ranges."""

    name: str
    size: int
    _mapped: Any = None  # local: an open file descriptor (mapped per read)
    _fs: Any = None  # remote: the fsspec filesystem
    _path: str = ""

    def read(self, offset: int, length: int) -> memoryview:
        """Bytes [offset, offset+length): a memory map of a local file, one ranged GET of an object."""
        if offset + length > self.size:
            raise InputError(f"bytes {offset}..{offset + length} lie beyond the end of '{self.name}' ({self.size} bytes)")
        if length == 0:
            return memoryview(b"")
        if self._fs is None:
            return map_range(self._mapped, offset, length, self.name)
        try:
            data = self._fs.cat_file(self._path, start=offset, end=offset + length)
        except Exception as exc:  # noqa: BLE001 - backends raise their own types
            raise remote_error(f"{self.name}", exc) from None
        if len(data) != length:
            raise InputError(f"'{self.name}': the store returned {len(data)} bytes for a range of {length}")
        return memoryview(data)

    def close(self) -> None:
        """Release the local file descriptor (an open memory map stays valid)."""
        if self._fs is None and self._mapped is not None:
            os.close(self._mapped)
            self._mapped = None


def open_data(base: str, location: str) -> DataFile:
    """Open external data `location` below `base` (a folder or a URL prefix), refusing every escape.

    For a URL the key is built from the checked components only, so it always lies below the
    model's prefix: '..', absolute paths and empty names are refused by `location_parts`, a
    '//' or '\\\\' cannot smuggle in another bucket, and percent-escapes, queries and fragments
    are refused. Local files keep all of `safe_open`'s checks.
    """
    if not is_url(base):
        fd, st = safe_open(base, location)
        return DataFile(location, st.st_size, _mapped=fd)
    parts = location_parts(location)
    if re.search(r"[%?#]", location):  # '%2e%2e/' is '../' to an HTTP server; '?' '#' change the object
        raise InputError(f"external data location '{location}' holds '%', '?' or '#', which a URL would interpret: refusing")
    url = base + "/" + "/".join(parts)
    fs, path = _filesystem(url)
    prefix = _filesystem(base + "/")[1].rstrip("/")
    if not posixpath.normpath(path).startswith(prefix + "/"):
        raise InputError(f"external data location '{location}' leaves the model's prefix: refusing")
    size = _object_sizes.get(url)
    if size is None:
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise InputError(f"external data file '{location}' not found beside the model ({url})") from None
        except Exception as exc:  # noqa: BLE001 - backends raise their own types
            raise remote_error(url, exc) from None
        if info.get("type") == "directory":
            raise InputError(f"external data '{location}' is a prefix (folder), not an object")
        size = int(info.get("size") or 0)
        if len(_object_sizes) < 4096:
            _object_sizes[url] = size
    return DataFile(url, size, _fs=fs, _path=path)


# Sizes of data objects already looked up by this process: a 7B model reads ~450 tensors from one
# object, and one HEAD per tensor would double the requests. Every ranged GET is still checked
# for its length, so an object replaced meanwhile cannot yield a short or misplaced read.
_object_sizes: dict[str, int] = {}
