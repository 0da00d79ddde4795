"""A stop raised from a signal handler waits for the end of an uninterrupted section."""

from __future__ import annotations

import threading

import pytest

from usersignals.uninterrupted import raise_stop, uninterrupted


def test_a_stop_outside_a_section_is_raised_at_once() -> None:
    with pytest.raises(SystemExit) as stopped:
        raise_stop(SystemExit(143))
    assert stopped.value.code == 143


def test_a_stop_inside_nested_sections_is_raised_at_the_outermost_end() -> None:
    done = []

    def sections() -> None:
        with uninterrupted():
            with uninterrupted():
                raise_stop(SystemExit(143))
                done.append("inner")
            raise_stop(SystemExit(130))  # a second stop: the first one is raised
            done.append("outer")

    with pytest.raises(SystemExit) as stopped:
        sections()
    assert done == ["inner", "outer"]
    assert stopped.value.code == 143
    with pytest.raises(SystemExit):  # nothing left pending: the next stop is raised at once
        raise_stop(SystemExit(143))


def test_a_section_on_another_thread_does_not_hold_the_main_threads_stop() -> None:
    inside, release = threading.Event(), threading.Event()

    def section() -> None:
        with uninterrupted():
            inside.set()
            release.wait(10)

    other = threading.Thread(target=section)
    other.start()
    try:
        inside.wait(10)
        with pytest.raises(SystemExit):
            raise_stop(SystemExit(143))
    finally:
        release.set()
        other.join()
