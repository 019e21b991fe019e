"""Check a set of distributions for unmet requirements, as ``pip check`` does, for a target interpreter.

Pure: :func:`check` takes plain data (each distribution's name, version,
``Requires-Dist`` lines and the extras asked of it) and a PEP 508 marker
environment, does no I/O, and returns every unmet requirement. Building the set
from wheels or from an installed environment is :mod:`orchestrator.wheels.distributions`'
job.

The rules, and where they come from:

- A requirement whose marker does not hold in the target environment is
  ignored. Markers are evaluated with ``extra`` set as pip sets it: ``""`` for
  a distribution's own requirements, the (canonical, PEP 685) extra name for
  those an extra pulls.
- ``foo[bar]`` pulls foo's requirements whose marker holds with
  ``extra == "bar"`` and not without it; they are reported as needed by
  ``foo[bar]``. Extras asked of a distribution from outside (a requirements
  file's ``foo[bar]``) are given on :class:`Distribution`. (``pip check``
  does not follow extras; ``pip install`` does, and so does this check.)
- A present version satisfies a specifier if ``specifier.contains(version,
  prereleases=True)``: a pre-release that is there counts, as in ``pip check``
  (choosing whether to *install* one is the resolver's business, not this
  check's).
- ``checked`` distributions have their requirements checked; ``available``
  ones only satisfy requirements. A requirement is met if ANY distribution of
  that name in ``checked`` or ``available`` satisfies it, so a wheelhouse that
  holds several versions of one distribution meets each requirement that one of
  them meets. An extra is pulled from one distribution: the newest satisfying
  one among ``checked``, else among ``available`` (the one an installer would
  pick from a run's result first, then from the wheelhouse).
- A requirement with a URL (``foo @ https://...``) is met by any version of foo.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from packaging.markers import Marker, UndefinedComparison
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

__all__ = ["Distribution", "Problem", "UnmetRequirement", "check"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Distribution:
    """One distribution of the set: a wheel, or an installed ``.dist-info``."""

    name: str
    """The name as its metadata spells it (used in messages; compared canonicalised)."""
    version: Version
    requires_dist: tuple[str, ...] = ()
    """Its ``Requires-Dist`` lines, as written, markers included."""
    extras: frozenset[NormalizedName] = field(default_factory=frozenset)
    """Extras asked of it from outside the set (``requests[socks]`` in a requirements file)."""

    @property
    def key(self) -> NormalizedName:
        return canonicalize_name(self.name)


class Problem(str, enum.Enum):
    """Why a requirement is unmet."""

    MISSING = "missing"
    """No distribution of that name is in the set."""
    CONFLICT = "conflict"
    """The set holds that distribution, but no version of it inside the specifier."""
    INVALID = "invalid"
    """The requirement or its marker cannot be parsed or evaluated (PEP 508)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmetRequirement:
    """A requirement of one distribution of the set that the set does not meet."""

    requirer: str
    """The distribution that needs it, as its metadata spells its name."""
    requirer_version: Version
    extra: NormalizedName | None
    """The extra of the requirer that pulled it; ``None`` for the requirer's own requirements."""
    requirement: str
    """The ``Requires-Dist`` line, as written."""
    problem: Problem
    present: tuple[Distribution, ...] = ()
    """For a conflict: the distributions of the required name that are in the set."""
    detail: str = ""
    """For an invalid requirement: what the parser said."""

    def __str__(self) -> str:
        who = f"{self.requirer}[{self.extra}]" if self.extra else self.requirer
        head = f"{who} {self.requirer_version} requires {self.requirement}"
        if self.problem is Problem.MISSING:
            return f"{head} (missing)"
        if self.problem is Problem.INVALID:
            return f"{head} (not a valid requirement: {self.detail})"
        name = self.present[0].name
        versions = ", ".join(str(dist.version) for dist in self.present)
        return f"{head} ({name} {versions} {'is' if len(self.present) == 1 else 'are'} in the set)"


def check(
    checked: Iterable[Distribution],
    environment: Mapping[str, str],
    *,
    available: Iterable[Distribution] = (),
) -> tuple[UnmetRequirement, ...]:
    """Return every requirement of ``checked`` (and of the extras it pulls) that the set does not meet.

    ``environment`` is the target interpreter's PEP 508 marker environment, as
    :func:`packaging.markers.default_environment` returns it there. Findings
    come in the order of ``checked``, each requirer's lines in order. ``checked``
    is gone through once, then ``available``: of a distribution that requires
    nothing, only its name and version are kept (:class:`_Table`).
    """
    table = _Table()
    requirers: dict[Distribution, None] = {}  # in order, each once
    for dist in checked:
        table.add(dist, ours=True)
        if dist.requires_dist:
            requirers[dist] = None
    for dist in available:
        table.add(dist, ours=False)

    findings: list[UnmetRequirement] = []
    # Each distribution of the set, then each extra pulled, in the order pulled; what was done is kept only for
    # extras (a pair kept for every distribution of a set of thousands cost about 100 bytes each).
    pulled: deque[tuple[Distribution, NormalizedName]] = deque()
    done: set[tuple[Distribution, NormalizedName]] = set()
    for dist, extra in itertools.chain(_own_and_asked(requirers), _drained(pulled)):
        if extra is not None:
            if (dist, extra) in done:
                continue
            done.add((dist, extra))
        for text in dist.requires_dist:
            requirement, error = _applicable(text, environment, extra)
            if error:
                if extra is None:  # once per distribution, not again under each of its extras
                    findings.append(_unmet(dist, extra, text, Problem.INVALID, detail=error))
                continue
            if requirement is None:
                continue
            present = table.named(canonicalize_name(requirement.name))
            satisfying = [(c, ours) for c, ours in present
                          if requirement.specifier.contains(c.version, prereleases=True)]
            if not present:
                findings.append(_unmet(dist, extra, text, Problem.MISSING))
            elif not satisfying:
                findings.append(_unmet(dist, extra, text, Problem.CONFLICT, present=tuple(c for c, _ in present)))
            elif requirement.extras:
                source, _ = max(satisfying, key=lambda pair: (pair[1], pair[0].version))
                pulled.extend((source, canonicalize_name(name)) for name in sorted(requirement.extras))
    return tuple(findings)


class _Table:
    """Every distribution of the set, by canonical name, those of ``checked`` first, each once.

    A set check reads thousands of wheels, and most are never named by a requirement: a
    :class:`Distribution` and its ``Version`` each, about 800 bytes a wheel at the check's peak, were
    held to its end. A name with one distribution that requires nothing is kept as one string,
    ``"{name} {version}"``, of ``checked`` or of ``available``; it is made a :class:`Distribution`
    (equal to the one given) when a requirement first names it, or another of its name joins.
    """

    def __init__(self) -> None:
        self._ours: dict[NormalizedName, str] = {}
        self._others: dict[NormalizedName, str] = {}
        self._many: dict[NormalizedName, list[tuple[Distribution, bool]]] = {}
        """The others: ``(distribution, whether of checked)``, in the order given."""

    def add(self, dist: Distribution, *, ours: bool) -> None:
        key = dist.key
        if not dist.requires_dist and not dist.extras and not (
                key in self._ours or key in self._others or key in self._many):
            (self._ours if ours else self._others)[key] = f"{dist.name} {dist.version}"
            return
        present = self.named(key)
        if all(dist != held for held, _ in present):  # a run's wheel may be in the wheelhouse too: counted once
            present.append((dist, ours))
        self._many[key] = present

    def named(self, key: NormalizedName) -> list[tuple[Distribution, bool]]:
        """The distributions named ``key``, each with whether it is of ``checked``."""
        present = self._many.get(key)
        if present is not None:
            return present
        present = [(_unpacked(packed), ours) for packed, ours in ((self._ours.pop(key, None), True),
                                                                  (self._others.pop(key, None), False))
                   if packed is not None]
        if present:
            self._many[key] = present
        return present


def _unpacked(packed: str) -> Distribution:
    name, _, version = packed.rpartition(" ")  # a version holds no space (a name should not either)
    return Distribution(name=name, version=Version(version))


def _own_and_asked(checked: Iterable[Distribution]) -> Iterator[tuple[Distribution, NormalizedName | None]]:
    """Each distribution with no extra, then with each extra asked of it, in order."""
    for dist in checked:
        yield dist, None
        for extra in sorted(dist.extras):
            yield dist, extra


def _drained(pairs: deque[tuple[Distribution, NormalizedName]]) -> Iterator[tuple[Distribution, NormalizedName]]:
    """The pairs of ``pairs`` from its left, including those added while it is drained."""
    while pairs:
        yield pairs.popleft()


def _applicable(
    text: str, environment: Mapping[str, str], extra: NormalizedName | None
) -> tuple[Requirement | None, str]:
    """The requirement if it applies to ``extra`` (or to the distribution itself) in ``environment``.

    Returns ``(None, "")`` for a requirement that does not apply and
    ``(None, reason)`` for one that cannot be parsed or evaluated.
    """
    try:
        requirement = Requirement(text)
        if requirement.marker is None:
            return (requirement if extra is None else None), ""
        holds = _holds(requirement.marker, environment, extra or "")
        # An extra pulls only what the distribution does not already require on its own.
        if extra is not None and holds:
            holds = not _holds(requirement.marker, environment, "")
    except (InvalidRequirement, UndefinedComparison) as exc:
        return None, str(exc).splitlines()[0]
    return (requirement if holds else None), ""


def _holds(marker: Marker, environment: Mapping[str, str], extra: str) -> bool:
    return marker.evaluate({**environment, "extra": extra})


def _unmet(
    dist: Distribution, extra: NormalizedName | None, text: str, problem: Problem,
    *, present: tuple[Distribution, ...] = (), detail: str = "",
) -> UnmetRequirement:
    return UnmetRequirement(
        requirer=dist.name, requirer_version=dist.version, extra=extra,
        requirement=text.strip(), problem=problem, present=present, detail=detail,
    )
