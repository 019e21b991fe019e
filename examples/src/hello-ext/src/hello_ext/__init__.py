"""Example package with a C extension."""

from hello_ext._speedups import add


def main() -> None:
    print(f"hello-ext: 2 + 3 = {add(2, 3)}")
