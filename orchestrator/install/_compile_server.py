"""A bytecode compiler, run by the target's own interpreter as a long-lived process (see ``bytecode.py``).

Run as ``python -I -S _compile_server.py INSTALLER_PID``: a script, not an
import, since the target may be another Python without ``orchestrator``.
Standard library only, and valid Python 3.6 (no ``from __future__ import
annotations``; annotations that name generics are strings).

One JSON request per line on stdin, ``{"hash": ALGORITHM, "paths": [...]}``;
one JSON answer per line on stdout, ``{"compiled": [[source, pyc, digest,
size], ...]}`` or ``{"error": "Type: message"}``. Files that do not compile
are left out of the answer: pip, too, installs them.

A .pyc is what ``py_compile.compile(path, dfile=path)`` writes in its default
timestamp mode (PEP 552 header: magic, flags 0, source mtime and size; then
the marshalled code), written straight into a new file instead of a temporary
file renamed into place: the install's rollback, not the rename, keeps a
failed wheel from leaving anything behind. The .pyc hash for RECORD is
computed here, in parallel, from the bytes in hand. This measured 7 % less
work than py_compile; py_compile itself still handles what this does not:
SOURCE_DATE_EPOCH (hash-based .pyc), a .pyc that already exists, and
interpreters older than 3.7 (another header).

Its argument is the installer's process id: once the installer is gone
(killed), it writes no more files, so the next run, undoing the install from
its journal, does not race a compiler finishing its chunk.
"""

import base64
import hashlib
import json
import marshal
import os
import py_compile
import sys
import warnings

DIRECT = sys.version_info >= (3, 7) and "SOURCE_DATE_EPOCH" not in os.environ
if DIRECT:
    import importlib.util

    MAGIC = importlib.util.MAGIC_NUMBER
folders = set()  # type: set[str]


def compile_file(path: str) -> "tuple[str | None, bytes | None]":
    with open(path, "rb") as file:
        source = file.read()
        status = os.fstat(file.fileno())
    try:
        code = compile(source, path, "exec", dont_inherit=True)
    except Exception:
        return None, None
    pyc = importlib.util.cache_from_source(path)
    data = b"".join([
        MAGIC, bytes(4), (int(status.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little"),
        (status.st_size & 0xFFFFFFFF).to_bytes(4, "little"), marshal.dumps(code),
    ])
    for _ in range(5):
        folder = os.path.dirname(pyc)
        if folder not in folders:
            os.makedirs(folder, exist_ok=True)
            folders.add(folder)
        try:
            handle = os.open(pyc, os.O_WRONLY | os.O_CREAT | os.O_EXCL, (status.st_mode | 0o200) & 0o666)
            break
        except FileExistsError:
            return pyc_of(path)
        except FileNotFoundError:
            # A rollback of another wheel removed an empty, shared __pycache__.
            folders.discard(folder)
    else:
        raise FileNotFoundError(folder)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(handle, view):]
    finally:
        os.close(handle)
    return pyc, data


def pyc_of(path: str) -> "tuple[str | None, bytes | None]":
    try:
        pyc = py_compile.compile(path, dfile=path, doraise=True)
    except py_compile.PyCompileError:
        return None, None
    if pyc is None:  # py_compile's answer when it writes nothing
        return None, None
    with open(pyc, "rb") as file:
        return pyc, file.read()


def serve(installer: int) -> None:
    warnings.simplefilter("ignore")  # nobody reads this stderr; pip hides them too
    for line in sys.stdin.buffer:
        request = json.loads(line)
        compiled = []
        try:
            for path in request["paths"]:
                if os.getppid() != installer:
                    sys.exit(1)
                pyc, data = compile_file(path) if DIRECT else pyc_of(path)
                if pyc is not None and data is not None:
                    digest = hashlib.new(request["hash"], data).digest()
                    compiled.append([path, pyc, base64.urlsafe_b64encode(digest).decode().rstrip("="), len(data)])
            answer = {"compiled": compiled}  # type: dict[str, object]
        except Exception as exc:
            answer = {"error": "%s: %s" % (type(exc).__name__, exc)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
