"""Example package built by hatchling."""


def main() -> None:
    print("hello from hatch")
