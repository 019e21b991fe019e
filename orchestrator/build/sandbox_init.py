"""The first process inside an ``unshare`` sandbox: it shapes the namespaces, then runs the hook as their init.

``unshare --user --map-root-user --pid --fork --kill-child --mount --mount-proc [--net]`` gives
new namespaces and nothing else; this script, run there as PID 1, does what bubblewrap would:

1. opens each folder to keep (the build's writable ones, the interpreter) while it is still visible;
2. makes every mount read-only (``mount_setattr`` with ``AT_RECURSIVE``, Linux 5.12);
3. covers ``/tmp``, the home folders and ``/dev/shm`` with empty tmpfs mounts;
4. binds the kept folders back where they were, read-only or writable;
5. brings ``lo`` up when the network namespace is new (only loopback inside);
6. drops every capability (the bounding set, then its own), since a root of the user namespace
   could otherwise remount the host writable, and forks the hook in a session of its own.

As PID 1 it reaps orphans and exits with the hook's status (128 + N for signal N, as bwrap does)
once the hook has ended; its exit takes every other process of the namespace with it, so a daemon
the build left dies here. It needs no signal handler: stopping a build signals every process of
its tree, the hook included, and the kernel keeps other signals from a namespace's PID 1.

It is a script of the standard library only, run with ``-I -S`` before every hook, so it imports
little (no ``json``, ``socket`` or ``signal``: they would double its start-up) and takes its
arguments as plain options::

    sandbox_init.py [--probe] [--hide DIR]... [--ro PATH]... [--rw DIR]... [--step NAME]... [--cwd DIR] -- CMD...

It calls libc through ``ctypes`` because Python has no ``mount``. ``--probe`` tries every step
and prints the names of those that worked, one per line; otherwise only the ``--step`` ones are
taken, and the first that fails stops the hook (status 125).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import sys
from collections.abc import Callable

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_BIND, MS_REC = 1, 2, 4, 4096, 16384
SYS_MOUNT_SETATTR = 442  # one number on every architecture since Linux 5.1's unified table
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY = 1
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
AF_INET, SOCK_DGRAM, SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 2, 2, 0x8913, 0x8914, 1
STEPS = ("read-only host", "private home and /tmp", "loopback", "no capabilities")

_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {target}")


def _read_only(path: str, *, on: bool, recursive: bool) -> None:
    attr = _MountAttr(attr_set=MOUNT_ATTR_RDONLY if on else 0, attr_clr=0 if on else MOUNT_ATTR_RDONLY)
    flags = AT_RECURSIVE if recursive else 0
    _check(_libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr),
                         ctypes.sizeof(attr)), f"mount_setattr {path}")


def _bind(fd: int, path: str, *, writable: bool) -> None:
    """Bind the folder (or file) open as ``fd`` at ``path``, making the mount point in a tmpfs if needed."""
    if not os.path.lexists(path):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(path)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "x").close()
    _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
    _read_only(path, on=not writable, recursive=True)


def _loopback_up() -> None:
    sock = _libc.socket(AF_INET, SOCK_DGRAM, 0)
    if sock < 0:
        _check(sock, "socket")
    try:
        request = struct.pack("16sH", b"lo", 0) + bytes(22)  # struct ifreq: a name, then the flags
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP) + bytes(22))
    finally:
        os.close(sock)


def _drop_capabilities() -> None:
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the kernel's last capability
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    _check(_libc.capset(header, bytes(24)), "capset")


def shape(spec: dict[str, list[str]], *, strict: bool) -> list[str]:
    """Apply ``spec`` (``hide``: folders to cover, ``ro`` and ``rw``: paths to keep, ``step``: the steps to
    take) to this process's namespaces; return the steps that worked. ``strict``: the first that fails raises."""
    done: list[str] = []
    keep = [(path, False) for path in spec["ro"]] + [(path, True) for path in spec["rw"]]
    fds = [(os.open(path, os.O_PATH | os.O_CLOEXEC), path, writable) for path, writable in keep if os.path.exists(path)]

    def step(name: str, action: Callable[[], None]) -> None:
        if name not in spec["step"]:
            return
        try:
            action()
        except OSError:
            if strict:
                raise
        else:
            done.append(name)

    def read_only_host() -> None:
        _read_only("/", on=True, recursive=True)
        for fd, path, writable in fds:
            if writable:
                _bind(fd, path, writable=True)

    def private_folders() -> None:
        for path in spec["hide"]:
            if os.path.isdir(path):
                _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        for fd, path, writable in fds:  # back in, what lies under a hidden folder
            if any(path == hidden or path.startswith(hidden.rstrip("/") + "/") for hidden in spec["hide"]):
                _bind(fd, path, writable=writable)

    step("read-only host", read_only_host)
    step("private home and /tmp", private_folders)
    step("loopback", _loopback_up)
    step("no capabilities", _drop_capabilities)
    for fd, _, _ in fds:
        os.close(fd)
    return done


def _init(cmd: list[str]) -> int:
    """Run ``cmd`` as the child of this PID 1; its status once it ends."""
    child = os.fork()
    if child == 0:
        try:
            os.setsid()
            os.execv(cmd[0], cmd)
        except OSError as exc:
            print(f"orchestrate sandbox: cannot run {cmd[0]}: {exc.strerror}", file=sys.stderr)
        os._exit(127)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def parse(argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The spec (each option's values, in order) and the command after ``--``."""
    spec: dict[str, list[str]] = {"hide": [], "ro": [], "rw": [], "step": [], "cwd": [], "probe": []}
    args = iter(argv)
    for arg in args:
        if arg == "--":
            break
        if arg == "--probe":
            spec["probe"], spec["step"] = ["yes"], list(STEPS)
        else:
            spec[arg.removeprefix("--")].append(next(args))
    return spec, list(args)


def main() -> int:
    spec, cmd = parse(sys.argv[1:])
    if spec["probe"]:
        print("\n".join(shape(spec, strict=False)))
        return 0
    try:
        shape(spec, strict=True)
        os.chdir(spec["cwd"][0] if spec["cwd"] else os.getcwd())  # the folder as the new mounts show it
    except OSError as exc:
        print(f"orchestrate sandbox: {exc.strerror}", file=sys.stderr)
        return 125
    return _init(cmd)


if __name__ == "__main__":
    sys.exit(main())
