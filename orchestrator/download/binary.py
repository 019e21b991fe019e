"""The binary policy: which packages may come as wheels and which as sdists, as pip spells it.

``--no-binary`` and ``--only-binary`` take ``:all:``, ``:none:`` or comma-separated
project names and are applied in command-line order, exactly as pip's
``FormatControl`` applies them: ``:all:`` clears both lists and makes every package
source-only (or binary-only); ``:none:`` clears the list of its own option; a name
moves from the other list to this one; a name in either list beats ``:all:``. So
``--no-binary :all: --only-binary foo`` builds everything from source except ``foo``,
which must come as a wheel.

Per-package settings (``orchestrate.toml``) say ``"binary"`` (wheels only) or
``"source"`` (sdists only). They refine the command line: a package's setting applies
unless the command line names that package in a list it leaves in force; ``:all:``
and ``:none:`` do not erase them, so a farm run with ``--no-binary :all:`` still takes
the wheel of a package whose setting says ``binary``. pip has no per-package
``--prefer-binary``, so there is no per-package ``prefer`` either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from packaging.utils import InvalidName, NormalizedName, canonicalize_name

from orchestrator.errors import UsageError

__all__ = ["BinaryOption", "BinaryPolicy"]

BinaryOption = Literal["--no-binary", "--only-binary"]
"""The two pip options that restrict formats."""

_ALL = ":all:"
_NONE = ":none:"


@dataclass(frozen=True, slots=True, kw_only=True)
class BinaryPolicy:
    """Which formats each package may be installed from; the default allows both."""

    default: Literal["any", "binary", "source"] = "any"
    """What ``:all:`` set: ``binary`` (``--only-binary :all:``), ``source``
    (``--no-binary :all:``), or ``any`` (neither, or cleared by ``:none:``)."""
    no_binary: frozenset[NormalizedName] = frozenset()
    """Packages that must be built from sdists, whatever ``default`` says."""
    only_binary: frozenset[NormalizedName] = frozenset()
    """Packages that must come as wheels, whatever ``default`` says."""
    prefer_binary: bool = False
    """Prefer an older version with a wheel over a newer one with only an sdist."""
    from_settings: frozenset[NormalizedName] = frozenset()
    """Packages of ``no_binary`` or ``only_binary`` because of their per-package setting, not an option."""

    @classmethod
    def from_options(
        cls,
        options: Iterable[tuple[BinaryOption, str]] = (),
        *,
        prefer_binary: bool = False,
        packages: Mapping[str, str] | None = None,
    ) -> BinaryPolicy:
        """Apply ``(option, value)`` pairs in command-line order, then per-package settings.

        Raises :class:`UsageError` naming the option (or package) and the bad value.
        """
        default: Literal["any", "binary", "source"] = "any"
        lists: dict[BinaryOption, set[NormalizedName]] = {"--no-binary": set(), "--only-binary": set()}
        for option, value in options:
            if option not in lists:
                raise UsageError(f"{option} is not a binary option; use --no-binary or --only-binary")
            own, other = lists[option], lists["--only-binary" if option == "--no-binary" else "--no-binary"]
            for item in _items(option, value):
                if item == _ALL:
                    own.clear()
                    other.clear()
                    default = "source" if option == "--no-binary" else "binary"
                elif item == _NONE:
                    own.clear()
                    if default == ("source" if option == "--no-binary" else "binary"):
                        default = "any"
                else:
                    name = canonicalize_name(item)
                    other.discard(name)
                    own.add(name)
        named = lists["--no-binary"] | lists["--only-binary"]
        from_settings: set[NormalizedName] = set()
        for raw_name, setting in (packages or {}).items():
            name = _package_name(raw_name)
            if setting not in ("binary", "source"):
                raise UsageError(
                    f"package {raw_name}: format {setting!r} is not 'binary' (wheels only) or 'source' (sdists only)"
                )
            if name in named:
                continue  # the command line named it: that wins over the config file
            lists["--only-binary" if setting == "binary" else "--no-binary"].add(name)
            from_settings.add(name)
        return cls(
            default=default,
            no_binary=frozenset(lists["--no-binary"]),
            only_binary=frozenset(lists["--only-binary"]),
            prefer_binary=prefer_binary,
            from_settings=frozenset(from_settings),
        )

    def allows_wheel(self, name: str) -> bool:
        """Whether a wheel of project ``name`` may be used."""
        key = canonicalize_name(name)
        if key in self.only_binary:
            return True
        if key in self.no_binary:
            return False
        return self.default != "source"

    def allows_sdist(self, name: str) -> bool:
        """Whether project ``name`` may be built from its sdist."""
        key = canonicalize_name(name)
        if key in self.only_binary:
            return False
        if key in self.no_binary:
            return True
        return self.default != "binary"

    def pip_args(self) -> list[str]:
        """The same policy as pip options; pip reading them ends in this very state."""
        args: list[str] = []
        # ":all:" first: it clears both lists, so the names must come after it.
        if self.default == "source":
            args += ["--no-binary", _ALL]
        elif self.default == "binary":
            args += ["--only-binary", _ALL]
        if self.no_binary:
            args += ["--no-binary", ",".join(sorted(self.no_binary))]
        if self.only_binary:
            args += ["--only-binary", ",".join(sorted(self.only_binary))]
        if self.prefer_binary:
            args.append("--prefer-binary")
        return args

    def uv_args(self) -> list[str]:
        """The policy as uv reads it: ``:all:`` first, then one package a flag (uv splits no comma lists).

        No ``--prefer-binary``: uv has none, so that policy is resolved by pip.
        """
        args = {"source": ["--no-binary", _ALL], "binary": ["--only-binary", _ALL], "any": []}[self.default]
        for name in sorted(self.no_binary):
            args += ["--no-binary", name]
        for name in sorted(self.only_binary):
            args += ["--only-binary", name]
        return args

    def describe(self, name: str) -> str | None:
        """Why ``name`` is restricted to one format, as the options that say so; ``None`` if it is not."""
        key = canonicalize_name(name)
        if key in self.only_binary:
            said = 'the package setting binary = "binary"' if key in self.from_settings else f"--only-binary {key}"
            return f"{said} allows only wheels of {key}"
        if key in self.no_binary:
            said = 'the package setting binary = "source"' if key in self.from_settings else f"--no-binary {key}"
            return f"{said} allows only sdists of {key}"
        if self.default == "binary":
            return f"--only-binary :all: allows only wheels of {key}"
        if self.default == "source":
            return f"--no-binary :all: allows only sdists of {key}"
        return None


def _items(option: BinaryOption, value: str) -> list[str]:
    """The checked comma-separated items of one option value."""
    if not value or value.startswith("-"):
        raise UsageError(f"{option} needs a value: ':all:', ':none:' or package names, got {value!r}")
    items = value.split(",")
    for item in items:
        if item not in (_ALL, _NONE):
            _package_name(item, option=option, value=value)
    return items


def _package_name(text: str, *, option: str | None = None, value: str | None = None) -> NormalizedName:
    try:
        return canonicalize_name(text, validate=True)
    except InvalidName:
        where = f"{option} {value!r}" if option else "package settings"
        raise UsageError(
            f"{where}: {text!r} is not a project name (nor ':all:' or ':none:')"
        ) from None
