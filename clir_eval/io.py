"""File plumbing shared by every reader and writer: atomic writes, input errors, hashes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, NamedTuple


_BOM = "\ufeff"
# `\s` on a str pattern is the same test as str.isspace (both Py_UNICODE_ISSPACE), run in C: a per-character
# generator over every docid of a 1,000-hit run was the largest cost of writing it.
_WHITESPACE = re.compile(r"\s")


def has_whitespace(value: str) -> bool:
    """Whether ``value`` contains any character ``str.isspace`` calls whitespace (ids must be single tokens)."""
    return _WHITESPACE.search(value) is not None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# C's strtod grammar (what trec_eval's atof reads), in the C locale: ASCII only, no underscores. Hexadecimal
# first, so "0x1p3" is 8.0 while "0xg" still reads its leading "0".
_C_DOUBLE = re.compile(
    r"[ \t\n\v\f\r]*([+-]?(?:"
    r"0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?"
    r"|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?"
    r"|[nN][aA][nN](?:\([0-9A-Za-z_]*\))?))"
)
_C_LONG = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


class CNumber(NamedTuple):
    """A number read as C reads it: ``value``, and whether the whole text was the number (``exact``)."""

    value: float
    exact: bool


def _plain(text: str) -> bool:
    """ASCII without underscores, spaces or control characters: where Python's float/int agree with C."""
    return text.isascii() and text.isprintable() and "_" not in text and " " not in text


def c_atof(text: str) -> CNumber | None:
    """``text`` read as C's ``atof`` reads it (trec_eval's score reader): the longest leading ``strtod`` number.

    ``"0_9"`` is 0.0 (the number stops at the underscore), ``"1e5x"`` 100000.0, ``"0x1p3"`` 8.0, ``"1e999"``
    inf; Python's ``float`` would read ``"0_9"`` as 0.9 and ``"٩"`` (an Arabic-Indic nine) as 9.0.

    Returns:
        None when no number starts the text (``atof`` gives 0.0 there; the caller decides).
    """
    if _plain(text):
        try:  # on plain ASCII, Python's grammar is a subset of strtod's, with equal values
            return CNumber(float(text), True)
        except ValueError:
            pass
    match = _C_DOUBLE.match(text)
    if match is None:
        return None
    number = match[1]
    if "x" in number or "X" in number:
        try:
            value = float.fromhex(number)
        except OverflowError:  # strtod gives HUGE_VAL
            value = float("-inf") if number.startswith("-") else float("inf")
    else:
        value = float(number.split("(")[0])  # "nan(chars)": the chars only choose a NaN payload
    return CNumber(value, match.end() == len(text))


def c_number_or_refuse(path: str | os.PathLike, number: int, text: str, read: CNumber | None, what: str,
                       python_reads: Any) -> CNumber:
    """``read`` (a C reading of ``text``) when C saw a number; else C's 0 where Python's ``python_reads`` (``float``
    or ``int``) sees one (``"٩"``, non-ASCII digits: trec_eval's number, not pytrec_eval-reader's); refused where no
    reader sees a number (``"high"``), naming ``what`` (``"score"``, ``"relevance"``)."""
    if read is not None:
        return read
    try:
        python_reads(text)
    except ValueError:
        kind = "a number" if python_reads is float else "an integer"
        raise InputFileError(path, number, f"{what} {text!r} is not {kind}") from None
    return CNumber(python_reads(0), False)


def c_atol(text: str) -> CNumber | None:
    """``text`` read as C's ``atol`` reads it (trec_eval's relevance reader): leading decimal digits, saturated
    to a 64-bit long. ``"0_1"`` is 0, ``"1.5"`` 1, ``"0x10"`` 0. None when no digit starts the text."""
    if _plain(text):
        try:
            return CNumber(min(max(int(text), _LONG_MIN), _LONG_MAX), True)
        except ValueError:
            pass
    match = _C_LONG.match(text)
    if match is None:
        return None
    return CNumber(min(max(int(match[1]), _LONG_MIN), _LONG_MAX), match.end() == len(text))


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for a message, at most about ``limit`` characters however large or deep ``value`` is.

    ``reprlib`` stops at a few items per level and a few levels, so a YAML alias bomb (a list whose items
    are the same list, nested) is never expanded; a plain ``repr`` of one would run for hours.
    """
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxtuple, short.maxdict, short.maxset = 3, 6, 6, 6, 6
    short.maxstring = short.maxother = short.maxlong = limit
    try:
        text = short.repr(value)
    except ValueError:  # an int past Python's 4,300-digit str() limit
        text = f"<{type(value).__name__} of {value.bit_length()} bits>" if isinstance(value, int) else "<?>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


class InputFileError(ValueError):
    """Bad user input, located: ``path:line: message`` (line is 1-based, or None for whole-file problems)."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


#: What the system answers when it will not take an output (disk full, read-only, not allowed): bad input
#: to the command (the path it was given), not a bug.
REFUSED_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def _blame(exc: BaseException, path: Path, scratch: str | os.PathLike | None) -> BaseException:
    """``exc`` naming ``path`` (the output the user gave) when the system refused a write to it, to anything
    under it or under ``scratch`` (its temporary name), to no file in particular, or before ``scratch``
    existed; else ``exc`` unchanged."""
    if not isinstance(exc, OSError) or exc.errno not in REFUSED_ERRNOS:
        return exc
    where = exc.filename
    if scratch is not None and isinstance(where, str) and not any(
            Path(where).is_relative_to(p) for p in (path, scratch)):
        return exc  # the body's own file (an input it read): its name is the right one
    return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it onto ``path``, on error delete it.

    A reader never sees a half-written file under the final name, and an existing
    file is left untouched when writing fails. When the system refuses the write (disk full, read-only,
    permission: :data:`REFUSED_ERRNOS`) the ``OSError`` names ``path``, not the temporary file.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        binary = "b" in mode
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode, encoding=None if binary else encoding, newline=None if binary else "\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        blamed = _blame(exc, path, tmp)
        if blamed is exc:
            raise
        raise blamed from exc


@contextlib.contextmanager
def staged_outputs(target: str | os.PathLike) -> Iterator[Path]:
    """Build a command's outputs in a staging directory beside ``target`` and move them all in at the end.

    The outputs of one command appear together or not at all: a failure while writing (a full disk, say)
    leaves ``target`` as it was, and a failure while moving puts back what was moved. Files already in
    ``target`` that the command does not write are kept. The system's refusals name ``target``.

    Yields:
        The staging directory: write every output under it, at the path it has under ``target``.
    """
    import shutil

    target = Path(target)
    stage = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp creates 0700
        yield stage
        _move_in(stage, target)
    except BaseException as exc:
        blamed = _blame(exc, target, stage)
        if blamed is exc:
            raise
        raise blamed from exc
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)


def _move_in(stage: Path, target: Path) -> None:
    """Rename every file under ``stage`` to the same place under ``target``; undo all of it on failure."""
    if not target.exists():
        os.replace(stage, target)  # the whole set in one rename
        return
    files = sorted(p for p in stage.rglob("*") if not p.is_dir())
    backups = stage / ".replaced"
    moved: list[tuple[Path, Path, Path | None]] = []  # (staged file, final path, backup of what it replaced)
    created: list[Path] = []
    try:
        for file in files:
            final = target / file.relative_to(stage)
            for folder in reversed(final.relative_to(target).parents[:-1]):
                if not (target / folder).exists():
                    (target / folder).mkdir()
                    created.append(target / folder)
            backup = None
            if final.exists():
                backup = backups / file.relative_to(stage)
                backup.parent.mkdir(parents=True, exist_ok=True)
                os.replace(final, backup)
            moved.append((file, final, backup))
            os.replace(file, final)
    except BaseException:
        for file, final, backup in reversed(moved):
            with contextlib.suppress(OSError):
                if final.exists() and not file.exists():
                    os.replace(final, file)
                if backup is not None:
                    os.replace(backup, final)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def write_csv(frame: Any, path: str | os.PathLike, *, index: bool = False) -> Path:
    """Write a pandas DataFrame atomically as CSV with ``\n`` line ends; returns the path.

    Floats are written as ``repr(float(x))``: pandas' own format writes a float32 score at float32's shortest
    digits (0.1f as ``0.1``), which reads back as a different float64.
    """
    with atomic_write(path) as handle:
        frame.to_csv(handle, index=index, lineterminator="\n", float_format=lambda x: repr(float(x)))
    return Path(path)


def safe_filename(name: str) -> str:
    """``name`` as one path component: characters other than letters, digits, ``-``, ``_`` and ``.`` become ``_``,
    and a name of dots only (``.``, ``..``, which would name this directory or its parent) becomes underscores."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"
    return "_" * len(safe) if not safe.strip(".") else safe


def inside(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path``, checked to resolve (symbolic links followed) inside the directory ``root``.

    Raises:
        ValueError: ``path`` would be written outside ``root`` (names taken from a manifest, e.g. ``..``).
    """
    root, path = Path(root), Path(path)
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{path}: refusing to write outside the output directory {root}")
    return path


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name beside ``path`` and rename it into place on success.

    An existing directory at ``path`` is replaced only once the new one is complete.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# Filesystems of the kernel's own state: a write there fails (or changes the system) rather than store a file.
_PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "pstore", "bpf",
    "configfs", "fusectl", "mqueue", "binfmt_misc", "efivarfs", "rpc_pipefs", "nsfs",
})
_PSEUDO_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))  # where /proc/self/mountinfo cannot be read


def _filesystem_type(path: Path) -> str | None:
    """The type of the filesystem mounted at the longest mount point above ``path`` (an absolute path), or None
    when /proc/self/mountinfo is unreadable (not Linux)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    best, kind = -1, None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        # Mount points escape space, tab, newline and backslash as octal (\040).
        mount = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4]))
        if path.is_relative_to(mount) and len(mount.parts) > best:
            best, kind = len(mount.parts), right.split()[0]
    return kind


def check_output_path(path: str | os.PathLike, directory: bool = False) -> Path:
    """Refuse, before the work that would fill it, an output path that cannot be written.

    Args:
        directory: ``path`` is a directory to write into (else a file to write).

    Raises:
        InputFileError: naming ``path`` as given: it exists as the other kind (a directory given for a file, or
            a file given for a directory), one of its parents is a file, it lies on a pseudo-filesystem
            (/proc, /sys, /dev), or the directory it would be written in (or created under) is not writable.
    """
    path = Path(path)
    if not directory and path.is_dir():
        raise InputFileError(path, None, "is a directory; give the path of the file to write")
    if directory and path.exists() and not path.is_dir():
        raise InputFileError(path, None, "is a file; give a directory to write into")
    # The nearest directory that exists: files (and atomic_write's temporaries) are created in or under it.
    existing = path if directory and path.is_dir() else None
    for parent in path.parents if existing is None else ():
        if parent.exists():
            if not parent.is_dir():
                raise InputFileError(parent, None, f"is a file, so {path} cannot be created under it")
            existing = parent
            break
    existing = existing if existing is not None else Path.cwd()
    resolved = existing.resolve()
    kind = _filesystem_type(resolved)
    if (kind in _PSEUDO_FILESYSTEMS if kind is not None
            else any(resolved.is_relative_to(root) for root in _PSEUDO_ROOTS)):
        raise InputFileError(path, None, f"lies on a pseudo-filesystem ({kind or resolved}); give a path on disk")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is" if existing == path else f"would be created in {existing}, which is"
        raise InputFileError(path, None, f"{what} not writable (read-only or no permission)")
    return path


@contextlib.contextmanager
def build_lock(path: str | os.PathLike, lock_dir: str | os.PathLike | None = None) -> Iterator[None]:
    """Hold an exclusive lock while ``path`` is checked and built.

    A second process (or thread) building the same index or step waits here, then finds it complete and
    reuses it, instead of building it a second time. The lock is ``flock``-based (``filelock``), so it
    is released when its holder dies. The lock file, ``.<name>.lock`` beside ``path`` or ``<name>.lock``
    in ``lock_dir``, stays: deleting it would let a waiter and a newcomer lock two different files.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    lock_file = Path(lock_dir) / f"{path.name}.lock" if lock_dir is not None else path.with_name(f".{path.name}.lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logging.getLogger(__name__).info("waiting for another process building %s", path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


_FILE_HASHES: dict[tuple[str, int, int, int], str] = {}


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, remembered in this process while the file's inode, size and mtime stay the
    same (a command hashes a 1M-document corpus for its validation memo and for its index key: once is enough)."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = _sha256_bytes(path, chunk_size)
    return _FILE_HASHES[key]


def _sha256_bytes(path: str | os.PathLike, chunk_size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(path: str | os.PathLike) -> str:
    """Hex SHA-256 over a directory's files (relative names and contents, sorted), or of a single file."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def read_text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line_without_newline)`` from a UTF-8 text file (``.gz`` transparently).

    A leading UTF-8 byte-order mark is removed (editors on Windows add one); left in place it would
    become part of the first id and silently change what that line means.

    Raises:
        InputFileError: the path is missing or a directory, a ``.gz`` file is truncated or not gzip at
            all, or a line is not valid UTF-8 (naming the line).
    """
    import gzip
    import zlib

    path = Path(path)
    if path.is_dir():
        raise InputFileError(path, None, "is a directory, expected a file")
    if not path.is_file():
        raise InputFileError(path, None, "no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    number = 0
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputFileError(path, number, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
                if number == 1 and text.startswith(_BOM):
                    text = text[1:]
                yield number, text.rstrip("\r\n")
    except gzip.BadGzipFile:
        raise InputFileError(path, None, "named .gz but is not gzip-compressed (rename it or compress it)") from None
    except (EOFError, zlib.error) as exc:
        # gzip reads lazily: a cut-off file fails only when the reader reaches the cut.
        raise InputFileError(path, number + 1, f"truncated or corrupt gzip data ({exc})") from None


def parse_yaml(text: str, path: str | os.PathLike) -> Any:
    """``yaml.safe_load`` of ``text`` (read from ``path``), refusing a key given twice in one mapping.

    PyYAML keeps the last of two equal keys without a word; in a config that silently drops a setting.

    Raises:
        InputFileError: invalid YAML or a duplicate key, naming the line.
    """
    import yaml

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    raise InputFileError(path, line, f"duplicate key {key!r} (first on line {first[key]})")
                first[key] = line
            except TypeError:  # an unhashable key: SafeLoader itself refuses it below
                pass
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    class StrictLoader(yaml.SafeLoader):
        pass

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or exc
        raise InputFileError(path, mark.line + 1 if mark is not None else None, f"invalid YAML ({problem})") from None
    except RecursionError:
        raise InputFileError(path, None, "invalid YAML (nested too deeply)") from None
    finally:
        loader.dispose()


#: The most values a YAML file may hold once its aliases are expanded; configs and manifests hold hundreds.
MAX_YAML_NODES = 1_000_000


def _check_expansion(root: Any, path: str | os.PathLike) -> None:
    """Refuse a composed YAML document that refers to itself or expands past :data:`MAX_YAML_NODES` values.

    An alias stands for its anchor's whole value: nine aliases of a list of nine aliases of ..., nine levels
    deep, is a few lines of text and 387 million values once walked (an "alias bomb"). Anything that walks it
    (an error message, a manifest, a hash) never ends, so it is refused here, counting each distinct node once.
    """
    import yaml

    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise InputFileError(path, node.start_mark.line + 1, "invalid YAML (an alias refers to the value that "
                                                                  "holds it)")
        in_progress.add(key)
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1
        in_progress.discard(key)
        if total > MAX_YAML_NODES:
            raise InputFileError(path, node.start_mark.line + 1, f"invalid YAML (its aliases expand to more than "
                                                                 f"{MAX_YAML_NODES:,} values: an alias bomb?)")
        sizes[key] = total
        return total

    size(root)


def read_json_or_none(path: str | os.PathLike) -> Any:
    """The JSON in ``path``, or None when it is absent or unreadable (a stamp to rebuild from, not input)."""
    import json

    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        logging.getLogger(__name__).warning("%s is unreadable; what it describes will be rebuilt", path)
        return None


def yaml_key_lines(node: object, prefix: str = "") -> dict[str, int]:
    """1-based line of every key of a composed YAML mapping, nested keys dotted (``splits.test.qrels``)."""
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return {}
    lines: dict[str, int] = {}
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode):
            dotted = f"{prefix}{key.value}"
            lines[dotted] = key.start_mark.line + 1
            lines.update(yaml_key_lines(value, dotted + "."))
    return lines
