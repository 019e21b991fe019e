"""The run's one reader of workers' output, on real pipes: lines whole and in order, then each pipe's end."""

from __future__ import annotations

import os
import queue
import threading

from orchestrator.executors.readers import CHUNK, OutputReaders

Said = tuple[str, str | None]
"""(pipe, line) as a callback heard it; ``None`` for the pipe's end."""


def listen(readers: OutputReaders, name: str, heard: queue.Queue[Said], threads: set[str]) -> int:
    """A new pipe read by ``readers``; its write end is returned."""
    read, write = os.pipe()

    def on_line(line: str) -> None:
        threads.add(threading.current_thread().name)
        heard.put((name, line))

    readers.add(read, on_line, lambda: heard.put((name, None)))
    return write


def until_ended(heard: queue.Queue[Said], names: set[str]) -> list[Said]:
    said: list[Said] = []
    ended: set[str] = set()
    while ended != names:
        said.append(heard.get(timeout=10))
        if said[-1][1] is None:
            ended.add(said[-1][0])
    return said


def test_lines_cut_anywhere_come_whole_in_order_then_the_end() -> None:
    readers, heard, threads = OutputReaders(), queue.Queue[Said](), set[str]()
    readers.start()
    try:
        one, two = listen(readers, "one", heard, threads), listen(readers, "two", heard, threads)
        os.write(one, b"@@orchestrate {\"pha")
        os.write(two, b"first of two\nsecond of two\n")
        assert heard.get(timeout=10) == ("two", "first of two\n")  # one's half line waits for its end
        assert heard.get(timeout=10) == ("two", "second of two\n")
        os.write(one, b"se\": \"build\"}\nlong: " + b"x" * (3 * CHUNK) + b"\nlast, unended \xff")
        os.close(one)
        os.close(two)
        said = until_ended(heard, {"one", "two"})
    finally:
        readers.stop()
    assert [line for name, line in said if name == "one"] == [
        '@@orchestrate {"phase": "build"}\n',
        "long: " + "x" * (3 * CHUNK) + "\n",  # longer than a read: whole all the same
        "last, unended \ufffd",  # no newline at the end: said as it is, undecodable bytes replaced
        None,
    ]
    assert [line for name, line in said if name == "two"] == [None]
    assert threads == {"read-workers"}  # one thread for every pipe


def test_a_callback_that_raises_stops_no_other_pipe() -> None:
    readers, heard, threads = OutputReaders(), queue.Queue[Said](), set[str]()
    readers.start()
    try:
        bad_read, bad = os.pipe()

        def broken(line: str) -> None:
            raise KeyError(line)

        readers.add(bad_read, broken, lambda: heard.put(("bad", None)))
        good = listen(readers, "good", heard, threads)
        os.write(bad, b"a line no one can read\n")
        os.close(bad)
        assert heard.get(timeout=10) == ("bad", None)  # its end is still said
        os.write(good, b"still read\n")
        os.close(good)
        assert until_ended(heard, {"good"}) == [("good", "still read\n"), ("good", None)]
    finally:
        readers.stop()


def test_stop_ends_the_thread_with_pipes_still_open() -> None:
    readers, heard = OutputReaders(), queue.Queue[Said]()
    readers.start()
    read, write = os.pipe()
    readers.add(read, lambda line: heard.put(("open", line)), lambda: heard.put(("open", None)))
    os.write(write, b"one\n")
    assert heard.get(timeout=10) == ("open", "one\n")
    readers.stop()
    assert not [thread for thread in threading.enumerate() if thread.name == "read-workers"]
    assert heard.empty()  # no end said: the pipe was still open, and is its owner's to close
    os.close(read)
    os.close(write)
