//! Which process of a local offline job decodes an archive record: its user's.
//!
//! A local backfill or training set runs in several processes, each owning a share of the
//! users; every process reads the whole archive and keeps the records of its users. Reading a
//! record's user id in Python cost about 0.7 µs a record, paid by every process for every
//! record. Here a block of records is split in one call.
//!
//! The Python reader (`usersignals.offline.share.route`, msgspec decoding a struct of the one
//! field) stays the reference. This module answers only where it reads the same user id: a
//! record it parses as a JSON object with exactly one `user_id` key holding a string is a
//! record msgspec reads the same way, unless serde skipped in it what msgspec refuses (an
//! escaped surrogate, deep nesting: see [`user_of`]). Anything else (not JSON, no or a
//! non-string `user_id`, the key twice, a lone surrogate) is [`Route::Unsure`], and Python
//! routes it.

use std::borrow::Cow;
use std::fmt;

use hashbrown::{HashMap, HashSet};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Opening brackets a record may hold before the core leaves it to the reference: serde's
/// skip of a nested value has no depth limit, where msgspec's refuses one nested past
/// Python's recursion limit (the reference then reads no user).
const MAX_OPENINGS: usize = 64;

/// The user id a record names, when it can be read for sure (see the module's note).
pub fn user_of(line: &[u8]) -> Option<Cow<'_, str>> {
    if skips_unlike_the_reference(line) {
        return None;
    }
    let mut reader = serde_json::Deserializer::from_slice(line);
    let user = reader.deserialize_map(UserOnly).ok()?;
    reader.end().ok()?;
    user
}

/// Whether serde's skip of the fields other than `user_id` might pass what msgspec's refuses:
/// a `\u` escape of a surrogate (serde does not check a skipped string's escapes; a lone
/// one is refused by msgspec), or deep nesting. Conservative: it looks at the bytes, inside
/// strings too, and a record it flags only goes to the reference.
fn skips_unlike_the_reference(line: &[u8]) -> bool {
    let surrogate = memchr::memchr_iter(b'\\', line)
        .any(|at| line.get(at + 1) == Some(&b'u') && matches!(line.get(at + 2), Some(b'd' | b'D')));
    surrogate
        || memchr::memchr2_iter(b'{', b'[', line)
            .nth(MAX_OPENINGS)
            .is_some()
}

/// Reads an object's `user_id` (borrowed from the line unless it holds escapes) and skips
/// the rest; an array, where a derived struct would read its first element, is refused as
/// msgspec refuses it.
struct UserOnly;

impl<'de> Visitor<'de> for UserOnly {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut user: Option<Cow<'de, str>> = None;
        while let Some(is_user) = map.next_key_seed(IsUserKey)? {
            if !is_user {
                map.next_value::<IgnoredAny>()?;
            } else if user.is_some() {
                return Err(de::Error::duplicate_field("user_id"));
            } else {
                user = Some(map.next_value_seed(Text)?);
            }
        }
        Ok(user)
    }
}

/// Whether an object's key is `user_id`, compared where it lies (no copy of each key).
struct IsUserKey;

impl<'de> DeserializeSeed<'de> for IsUserKey {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for IsUserKey {
    type Value = bool;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == "user_id")
    }
}

/// A string, borrowed from the line unless it holds escapes (serde's own `Cow` always copies).
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text.to_owned()))
    }
}

/// A user's shard by the stable hash: xxh64 (seed 0) of the id's UTF-8 bytes, modulo the
/// shard count, as `usersignals.offline.common.shard_of` computes it.
pub fn shard_of(user: &str, shards: u32) -> u32 {
    (xxhash_rust::xxh64::xxh64(user.as_bytes(), 0) % u64::from(shards.max(1))) as u32
}

/// Where one record goes, for one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The shard's own record.
    Mine,
    /// Another shard's user whose events this shard needs too (a training set's user cut
    /// into pieces).
    Borrowed,
    /// Another shard's record.
    Other,
    /// Not read for sure here: the reference decides.
    Unsure,
}

/// One shard's view of the job's split.
#[derive(Debug, Clone, Default)]
pub struct Router {
    pub index: u32,
    pub shards: u32,
    /// Users placed on a shard by the job; every other user goes by [`shard_of`].
    pub assigned: HashMap<String, u32>,
    pub borrowed: HashSet<String>,
}

impl Router {
    pub fn route(&self, line: &[u8]) -> Route {
        let Some(user) = user_of(line) else {
            return Route::Unsure;
        };
        let user: &str = &user;
        let shard = match self.assigned.get(user) {
            Some(&shard) => shard,
            None => shard_of(user, self.shards),
        };
        if shard == self.index {
            Route::Mine
        } else if self.borrowed.contains(user) {
            Route::Borrowed
        } else {
            Route::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_user_id_wherever_it_stands() {
        let line = br#"{"event_id":"e1","user_id":"u0057279","ts":1,"attrs":{"user_id":3}}"#;
        assert!(matches!(user_of(line), Some(Cow::Borrowed("u0057279"))));
        assert_eq!(
            user_of(br#"{"user_id":"u\u00e9"}"#).as_deref(),
            Some("u\u{e9}")
        );
    }

    #[test]
    fn is_unsure_of_what_it_cannot_read_as_the_reference_does() {
        for line in [
            &br#"{"user_id":"a","user_id":"b"}"#[..],
            br#"{"user_id":7}"#,
            br#"{"event_id":"e1"}"#,
            br#"["user_id"]"#,
            br#"{"user_id":"\ud800"}"#,
            b"{\"user_id\":\"a\"",
            b"not json",
            b"{\"user_id\":\"\xff\"}",
            br#"{"user_id":"u1","item_id":"\udc00"}"#,
            br#"{"user_id":"u1","item_id":"\uD83D\uDE00"}"#,
        ] {
            assert_eq!(user_of(line), None, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn leaves_deep_nesting_to_the_reference() {
        let nested = |depth: usize| {
            let mut line = br#"{"user_id":"u1","attrs":"#.to_vec();
            line.extend(std::iter::repeat_n(b'[', depth));
            line.extend(std::iter::repeat_n(b']', depth));
            line.push(b'}');
            line
        };
        assert_eq!(user_of(&nested(MAX_OPENINGS - 1)).as_deref(), Some("u1"));
        assert_eq!(user_of(&nested(MAX_OPENINGS)), None);
    }

    #[test]
    fn hashes_as_python_xxhash() {
        // xxhash.xxh64_intdigest(b"u0057279") in Python.
        assert_eq!(
            xxhash_rust::xxh64::xxh64(b"u0057279", 0),
            0xFA81_B675_9ABF_7A04_u64
        );
    }

    #[test]
    fn assigned_and_borrowed_users_go_where_the_job_says() {
        let mut router = Router {
            index: 1,
            shards: 2,
            ..Router::default()
        };
        router.assigned.insert("a".into(), 1);
        router.assigned.insert("b".into(), 0);
        router.borrowed.insert("b".into());
        assert_eq!(router.route(br#"{"user_id":"a"}"#), Route::Mine);
        assert_eq!(router.route(br#"{"user_id":"b"}"#), Route::Borrowed);
        assert_eq!(router.route(b"{}"), Route::Unsure);
    }
}
