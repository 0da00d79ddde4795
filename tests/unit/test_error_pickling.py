"""Errors cross process boundaries intact: an offline job's worker hands its errors to the
parent through pickle, and each class's fields must come back with the message."""

from __future__ import annotations

import inspect
import pickle

from usersignals import errors
from usersignals.errors import StateCodecError, StoreError, UserSignalsError


def test_a_worker_error_comes_back_with_its_fields() -> None:
    for error in (StoreError("rocksdb", "write file", "disk full"), StateCodecError(b"u:7", "bad")):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error)
        assert back.args == error.args
        assert vars(back) == vars(error)
        assert str(back) == str(error)


def test_every_error_class_pickles() -> None:
    classes = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, UserSignalsError)
    ]
    assert len(classes) > 10
    for cls in classes:
        error = cls.__new__(cls)
        error.args = ("a message",)
        error.__dict__["field"] = 3
        back = pickle.loads(pickle.dumps(error))
        assert (type(back), back.args, vars(back)) == (cls, ("a message",), {"field": 3})
