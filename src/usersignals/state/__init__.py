"""State storage: the store interface, key layout, record codec and backends."""

from usersignals.state.codec import CODEC_VERSION, UserRecord, decode_record, encode_record
from usersignals.state.keys import user_key, user_of
from usersignals.state.rocks import RocksStore
from usersignals.state.store import KeyValueTable, StateStore

__all__ = [
    "CODEC_VERSION",
    "KeyValueTable",
    "RocksStore",
    "StateStore",
    "UserRecord",
    "decode_record",
    "encode_record",
    "user_key",
    "user_of",
]
