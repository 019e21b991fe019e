"""The option groups the commands share, and the rule that gives each option its ``ORCHESTRATE_*`` variable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from orchestrator.errors import UsageError
from orchestrator.pruning import DEFAULT_DAYS
from orchestrator.settings import check_index_url
from orchestrator.units import parse_size

F = TypeVar("F", bound=Callable[..., Any])


def option(*names: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option whose environment variable is ``ORCHESTRATE_<NAME>``."""
    long_name = next(name for name in names if name.startswith("--")).lstrip("-").split("/")[0]
    kwargs.setdefault("envvar", "ORCHESTRATE_" + long_name.upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    return click.option(*names, **kwargs)


def size_check(*, percent: bool) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """An option callback that checks a memory size (``6G``, ``512M``, and ``75%`` where ``percent``) as it is
    read, so that a bad one is named with its option; the size is kept as written, for the run to resolve
    against the machine's memory."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_size(value, total=1 if percent else None)
            except UsageError as error:
                raise click.BadParameter(str(error), ctx, param) from None
        return value

    return check


def _index_check(ctx: click.Context, param: click.Parameter, value: str | tuple[str, ...] | None,
                 ) -> str | tuple[str, ...] | None:
    """An option callback that checks each index URL as it is read, so that a bad one is named with its option."""
    for url in (value,) if isinstance(value, str) else value or ():
        try:
            check_index_url(url)
        except UsageError as error:
            raise click.BadParameter(error.message, ctx, param) from None
    return value


def _group(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    def decorate(function: F) -> F:
        for decorator in reversed(options):
            function = decorator(function)
        return function

    return decorate


index_options = _group([
    option("--index-url", "-i", metavar="URL", callback=_index_check,
           help="Base URL of the package index (PEP 503/691)."),
    option("--extra-index-url", multiple=True, metavar="URL", callback=_index_check, help="More indexes to search."),
    option("--find-links", "-f", multiple=True, metavar="PATH|URL", help="Folders or pages listing files."),
    option("--no-index", is_flag=True, help="Ignore indexes; only --find-links."),
])

download_options = _group([
    option("--requirement", "-r", "requirements", multiple=True, metavar="FILE",
           type=click.Path(dir_okay=False, path_type=Path),
           help="Requirements file, as pip reads it (names, pins, --hash, URLs, paths, -r, -c, index options)."),
    option("--max-downloads", type=click.IntRange(min=1), default=8, show_default=True, help="Downloads at once."),
    option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
           help="Download cache (default: under --state-dir)."),
    option("--no-cache", is_flag=True, help="Neither read nor fill the download cache."),
    option("--download-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
           metavar="SECONDS", help="Timeout of each network request; a download under 1 KiB/s for this long is cut."),
    option("--download-retries", type=click.IntRange(min=0), default=3, show_default=True,
           help="Retries after a timeout, a stall, a dropped connection or a 5xx answer."),
    option("--require-hashes", is_flag=True,
           help="Refuse requirements without --hash (on by itself when any line has one)."),
])

resolve_options = _group([
    option("--constraint", "-c", "constraints", multiple=True, metavar="FILE",
           type=click.Path(dir_okay=False, exists=True, path_type=Path),
           help="Constraints file for the resolver, as in pip."),
    option("--no-deps", is_flag=True,
           help="Take exactly the pins of the -r files (a full lock); do not resolve their dependencies."),
    option("--no-binary", multiple=True, metavar=":all:|:none:|NAMES",
           help="Build these from their sdists even where the index has a wheel, as in pip."),
    option("--only-binary", multiple=True, metavar=":all:|:none:|NAMES",
           help="Take only wheels of these from the index, never build them, as in pip."),
    option("--prefer-binary", is_flag=True, help="Prefer an older version with a wheel to a newer one to build."),
    option("--pre", is_flag=True, help="Let the resolver take pre-releases and development versions, as in pip."),
    option("--resolver", type=click.Choice(["auto", "pip", "uv"]), default="auto", show_default=True,
           help="Whose resolver pins the dependencies; auto takes uv's when uv is installed, pip's for "
           "--prefer-binary, --require-hashes and a requirement continued on the next line."),
])

install_options = _group([
    option("--max-installs", type=click.IntRange(min=1), default=4, show_default=True,
           help="Wheels being installed at once; of these, one at a time writes its files while the others check, "
           "plan or wait for their bytecode, which one compiler process per usable CPU writes for all of them."),
    option("--install-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
           help="Fail a wheel whose install takes longer: its bytecode compilers are killed and it is rolled back; "
           "the others go on. Checked between files: a write blocked in the OS (a hung network filesystem) is not "
           "interrupted."),
    option("--reinstall", is_flag=True,
           help="Reinstall a distribution already installed at the same version (else it is skipped)."),
    option("--compile/--no-compile", "compile_bytecode", default=True, show_default=True,
           help="Compile installed modules to bytecode."),
])

report_options = _group([
    option("--report-json", type=click.Path(dir_okay=False, path_type=Path), help="Write the run report here."),
    option("--report-html", type=click.Path(dir_okay=False, path_type=Path),
           help="Write the run report as one self-contained HTML page (timeline, memory, CPU) here."),
    option("--trace", type=click.Path(dir_okay=False, path_type=Path),
           help="Write the run as Chrome trace events here (Perfetto, chrome://tracing)."),
])


def _days(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    """``--prune-unused-after``: whole days, ``None`` for ``0`` or ``never`` (keep everything)."""
    if value.strip().lower() == "never":
        return None
    try:
        days = int(value)
    except ValueError:
        days = -1
    if days < 0:
        raise click.BadParameter(f"'{value}' is not a number of days; give one such as 40, or never", ctx, param)
    return days or None


prune_option = option(
    "--prune-unused-after", metavar="DAYS|never", default=str(DEFAULT_DAYS), show_default=True, callback=_days,
    help="At a run's start (at most hourly), remove from --state-dir what no run used for this many days: kept "
    "build environments, download cache entries, learned lists; entries in use stay. 0 or never: keep all.")

INSTALL_ONLY = ("install_after_build", "max_installs", "install_timeout", "reinstall", "compile_bytecode")
"""``build`` options that mean something only with ``--install-into``."""


def given(ctx: click.Context, names: tuple[str, ...]) -> list[str]:
    """The options among ``names`` given on the command line, as spelt in --help.

    Not those set by their variable: ``ORCHESTRATE_MAX_INSTALLS`` set for ``install`` must not break ``build``.
    """
    spelt = {param.name: "/".join(opt for opt in [*param.opts, *param.secondary_opts] if opt.startswith("--"))
             for param in ctx.command.params}
    return [spelt[name] for name in names
            if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE]
