"""Write small wheels for tests and benchmarks: valid ones, and ones broken on purpose."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from packaging.utils import canonicalize_name

Corruption = Literal["hash", "hash-last", "truncate", "unrecorded"]
"""``hash``: the first file differs from its RECORD hash; ``hash-last``: the last one does
(so it is found after the others were written); ``truncate``: the zip is cut in half;
``unrecorded``: a file is missing from RECORD."""


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def write_wheel(
    folder: Path,
    name: str,
    version: str = "1.0",
    *,
    files: Mapping[str, str | bytes] | None = None,
    console_scripts: Mapping[str, str] | None = None,
    data_files: Mapping[str, str | bytes] | None = None,
    corrupt: Corruption | None = None,
    requires_dist: Sequence[str] = (),
    tag: str = "py3-none-any",
) -> Path:
    """Write ``{name}-{version}-{tag}.whl`` into ``folder`` and return its path.

    ``files`` are archive-root paths (default: ``{module}/__init__.py`` with
    ``VERSION``); ``console_scripts`` maps a script name to ``module:function``;
    ``data_files`` maps ``scheme/path`` (e.g. ``scripts/tool``) to contents under
    the ``.data`` folder; files under ``scripts/`` are stored executable;
    ``requires_dist`` become ``Requires-Dist`` lines of its METADATA; ``tag`` is its
    compatibility tag (e.g. ``cp27-none-any`` for a wheel no Python 3 installs).
    """
    dist = canonicalize_name(name).replace("-", "_")
    module = dist
    if files is None:
        files = {f"{module}/__init__.py": f"VERSION = {version!r}\n"}
    dist_info = f"{dist}-{version}.dist-info"
    data_dir = f"{dist}-{version}.data"
    members: dict[str, bytes] = {path: _bytes(content) for path, content in files.items()}
    executables = set()
    for path, content in (data_files or {}).items():
        members[f"{data_dir}/{path}"] = _bytes(content)
        if path.startswith("scripts/"):
            executables.add(f"{data_dir}/{path}")
    requires = "".join(f"Requires-Dist: {requirement}\n" for requirement in requires_dist)
    members[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requires}".encode()
    members[f"{dist_info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: tests/wheels.py\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
    )
    if console_scripts:
        lines = "".join(f"{script} = {target}\n" for script, target in console_scripts.items())
        members[f"{dist_info}/entry_points.txt"] = f"[console_scripts]\n{lines}".encode()
    recorded = dict(members)
    if corrupt == "unrecorded":
        del recorded[next(iter(files))]
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in recorded.items())
    members[f"{dist_info}/RECORD"] = f"{record}{dist_info}/RECORD,,\n".encode()
    if corrupt in ("hash", "hash-last"):
        tampered = list(files)[0 if corrupt == "hash" else -1]
        members[tampered] = members[tampered] + b"# tampered\n"

    wheel = folder / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in members.items():
            info = zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (0o100755 if path in executables else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    if corrupt == "truncate":
        data = wheel.read_bytes()
        wheel.write_bytes(data[: len(data) // 2])
    return wheel


def _bytes(content: str | bytes) -> bytes:
    return content.encode() if isinstance(content, str) else content
