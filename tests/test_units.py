from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import UsageError
from orchestrator.units import format_size, parse_size

K, M, G, T = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024", 1024),  # bare number: bytes
        ("0", 0),
        ("512B", 512),
        ("4K", 4 * K),
        ("512M", 512 * M),
        ("2200M", 2200 * M),
        ("6G", 6 * G),
        ("6GiB", 6 * G),
        ("6GB", 6 * G),  # still binary: these are memory sizes
        ("6g", 6 * G),  # units are case-insensitive
        ("6gib", 6 * G),
        ("1.5G", 3 * G // 2),
        ("0.5K", 512),
        (".5K", 512),
        ("1T", T),
        (" 6 G ", 6 * G),  # surrounding and inner spaces are harmless
        ("1.0000000001K", 1024),  # rounded down to whole bytes
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "total", "expected"),
    [
        ("75%", 16 * G, 12 * G),
        ("100%", 8 * G, 8 * G),
        ("0%", 8 * G, 0),
        ("12.5 %", 8 * G, G),
        ("33%", 100, 33),
        ("6G", 1, 6 * G),  # an absolute size ignores the total
    ],
)
def test_parse_size_percentage(text: str, total: int, expected: int) -> None:
    assert parse_size(text, total=total) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",  # nothing
        "G",  # unit without a number
        "-1G",  # negative
        "6X",  # unknown unit
        "6 GG",  # doubled unit
        "6iB",  # "iB" without a multiple
        "1e9",  # exponents are not sizes people write
        "nan",  # Decimal would parse it
        "inf",
        "1_000",  # Decimal would parse it
        "١٠",  # non-ASCII digits
        "6G6",  # trailing garbage
        "1.2.3G",
        "%",
    ],
)
def test_parse_size_invalid(text: str) -> None:
    with pytest.raises(UsageError, match=r"invalid size .*: use a number with K, M, G or T"):
        parse_size(text)


def test_parse_size_percentage_needs_total() -> None:
    with pytest.raises(UsageError, match="a percentage needs a known total"):
        parse_size("75%")


def test_parse_size_percentage_over_100() -> None:
    with pytest.raises(UsageError, match="cannot exceed 100%"):
        parse_size("150%", total=G)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024 * K - 1, "1.0 MiB"),  # would round to "1024.0 KiB"
        (int(1.2 * G), "1.2 GiB"),
        (2 * G, "2.0 GiB"),
        (3 * T, "3.0 TiB"),
        (5000 * T, "5000.0 TiB"),  # the largest unit has no upper bound
        (-300 * M, "-300.0 MiB"),  # a shortfall
    ],
)
def test_format_size(size: int, expected: str) -> None:
    assert format_size(size) == expected


@given(st.integers(min_value=0, max_value=2**60))
def test_bytes_round_trip(n: int) -> None:
    assert parse_size(str(n)) == n


@given(st.integers(min_value=0, max_value=2**40), st.sampled_from(["K", "M", "G", "T"]))
def test_units_multiply(n: int, unit: str) -> None:
    assert parse_size(f"{n}{unit}") == n * {"K": K, "M": M, "G": G, "T": T}[unit]


@given(st.integers(min_value=0, max_value=2**60))
def test_formatted_size_parses_back_close(n: int) -> None:
    # One decimal place: within 5% (plus rounding) of the original.
    text = format_size(n).replace(" ", "").replace("iB", "")
    assert abs(parse_size(text) - n) <= max(n * 0.05, 1)
