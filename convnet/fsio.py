"""Writing files safely: the one atomic write every tool uses, symlink-safe opens.

    write_atomic(path, data)            bytes (or write_atomic(path, write=fn): fn(f) writes)
    open_append(path)                   a text file appended to, never through a symlink
    read_regular(path)                  bytes of a regular file (a FIFO or device is refused, not read)
    remove_temporaries(folder, names)   what a killed write_atomic left beside `names`

write_atomic writes a temporary file beside the target (".NAME.XXXXXXXX.tmp",
created with O_EXCL, so a symlink planted under that name is never
followed), flushes and fsyncs it, renames it over the target with
os.replace (which replaces a symlink planted at the target itself, never its
target) and fsyncs the folder. A crash or kill -9 at any instant leaves the
old file or the new one, never half of one; any exception (disk full,
Ctrl-C) removes the temporary before it propagates. What kill -9 leaves is a
temporary file, which remove_temporaries deletes on the next start.
"""
import os
import stat
import tempfile

TMP_SUFFIX = ".tmp"


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()                 # what open() would give a new file


def temp_prefix(path):
    """The prefix of write_atomic's temporaries for path: ".NAME."."""
    return "." + os.path.basename(path) + "."


def fsync_dir(folder):
    """Make a rename in folder durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, data=None, write=None, make_parent=False):
    """Replace path by bytes `data` (or by what `write(f)` writes to a binary file), atomically."""
    if (data is None) == (write is None):
        raise TypeError("write_atomic takes data or write, not both")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if make_parent:
        os.makedirs(folder, exist_ok=True)
    if os.path.isdir(path) and not os.path.islink(path):
        raise IsADirectoryError(21, "is a folder, expected a file", path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TMP_SUFFIX, dir=folder)
    done = False
    try:
        with os.fdopen(fd, "wb") as f:
            if data is not None:
                f.write(data)
            else:
                write(f)
            f.flush()
            os.fchmod(f.fileno(), _MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        done = True
    except OSError as e:
        if e.errno is not None and e.filename in (None, tmp):     # name the file the caller knows
            raise OSError(e.errno, e.strerror, path) from None
        raise
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    fsync_dir(folder)


def open_append(path):
    """A text file opened for appending (created if missing); a symlink at path is refused (ELOOP)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if os.path.islink(path):
            raise OSError(e.errno, "is a symbolic link; refusing to write through it", path) from None
        raise
    return os.fdopen(fd, "a", encoding="utf-8")


def is_regular(path):
    """True for a regular file (or a symlink to one); False for FIFOs, devices, sockets, folders."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def kind_of(path):
    """"a FIFO", "a folder", ... for messages."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return e.strerror or "missing"
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a file")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path):
    """The bytes of a regular file. A FIFO, device or folder raises OSError before any read
    (opened non-blocking, so a FIFO with no writer cannot hang us)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(22, f"{kind_of(path)}, not a regular file", os.fspath(path))
        chunks = []
        while True:
            b = os.read(fd, 1 << 24)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove_temporaries(folder, names=None):
    """Delete the temporaries a killed write_atomic left in folder: those of the file names
    `names`, or every ".*.tmp" when names is None. Returns the names removed."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    prefixes = tuple(temp_prefix(n) for n in names) if names is not None else (".",)
    removed = []
    for name in entries:
        if name.startswith(prefixes) and name.endswith(TMP_SUFFIX):
            try:
                os.unlink(os.path.join(folder, name))
                removed.append(name)
            except OSError:
                pass
    return removed
