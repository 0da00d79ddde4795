//! The Materializer's cache of looked-up records: least recently used out first, each entry
//! with a time it expires at.
//!
//! Mirrors `usersignals.enrich.cache` (whose `OrderedDict` version is the reference model in
//! the tests): a lookup of a live entry makes it the most recently used; an expired entry is
//! left where it is until a put replaces it or eviction reaches it; a key known to be absent
//! (`None`, negative caching) is an entry like any other. Evicting happens after a batch of
//! puts, down to the capacity, oldest first. The clock is the caller's (seconds, any origin).

use hashlink::LinkedHashMap;

/// What the cache knows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'c, V> {
    /// A live record.
    Found(&'c V),
    /// Known to be absent from the source, until the negative entry expires.
    Absent,
    /// Not cached, or expired: to be fetched.
    Fetch,
}

#[derive(Debug, Clone)]
struct Entry<V> {
    expires: f64,
    record: Option<V>,
}

#[derive(Debug, Clone)]
pub struct RecordCache<V> {
    capacity: usize,
    entries: LinkedHashMap<String, Entry<V>>,
}

impl<V> RecordCache<V> {
    pub fn new(capacity: usize) -> Self {
        RecordCache {
            capacity,
            entries: LinkedHashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `key` at time `now`; a live entry becomes the most recently used.
    pub fn lookup(&mut self, key: &str, now: f64) -> Lookup<'_, V> {
        let live = matches!(self.entries.get(key), Some(entry) if entry.expires > now);
        if !live {
            return Lookup::Fetch;
        }
        match self
            .entries
            .to_back(key)
            .and_then(|entry| entry.record.as_ref())
        {
            Some(record) => Lookup::Found(record),
            None => Lookup::Absent,
        }
    }

    /// Whether `key` has a live entry at time `now` (a record, or known absent), without
    /// making it the most recently used: asked from another thread than the lookups', for
    /// what to fetch ahead of them, it must not reorder what they will evict.
    pub fn is_live(&self, key: &str, now: f64) -> bool {
        matches!(self.entries.get(key), Some(entry) if entry.expires > now)
    }

    /// `key`'s record (`None`: absent from the source) until `expires`, as the most recently
    /// used entry. The cache may hold more than its capacity until [`RecordCache::evict`].
    pub fn put(&mut self, key: String, record: Option<V>, expires: f64) {
        self.entries.insert(key, Entry { expires, record });
    }

    /// Every record held (live or expired), in no particular order: what a garbage
    /// collector must see of a cache of Python objects.
    pub fn records(&self) -> impl Iterator<Item = &V> {
        self.entries
            .values()
            .filter_map(|entry| entry.record.as_ref())
    }

    /// Every entry out.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The least recently used entries out, down to the capacity.
    pub fn evict(&mut self) {
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference: a list in use order, as the Python `OrderedDict` keeps it.
    #[derive(Default)]
    struct Model {
        entries: Vec<(String, f64, Option<u32>)>,
    }

    impl Model {
        fn lookup(&mut self, key: &str, now: f64) -> Lookup<'_, u32> {
            let Some(index) = self.entries.iter().position(|(k, ..)| k == key) else {
                return Lookup::Fetch;
            };
            if self.entries[index].1 <= now {
                return Lookup::Fetch;
            }
            let entry = self.entries.remove(index);
            self.entries.push(entry);
            match &self.entries.last().expect("just pushed").2 {
                Some(record) => Lookup::Found(record),
                None => Lookup::Absent,
            }
        }

        fn is_live(&self, key: &str, now: f64) -> bool {
            self.entries
                .iter()
                .any(|(k, expires, _)| k == key && *expires > now)
        }

        fn put(&mut self, key: &str, record: Option<u32>, expires: f64) {
            self.entries.retain(|(k, ..)| k != key);
            self.entries.push((key.to_string(), expires, record));
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Lookup(u8),
        IsLive(u8),
        Put(u8, Option<u32>, u8),
        Evict,
        Tick(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12).prop_map(Op::Lookup),
            (0u8..12).prop_map(Op::IsLive),
            (0u8..12, proptest::option::of(0u32..100), 0u8..20)
                .prop_map(|(k, r, ttl)| Op::Put(k, r, ttl)),
            Just(Op::Evict),
            (0u8..5).prop_map(Op::Tick),
        ]
    }

    proptest! {
        #[test]
        fn behaves_as_the_ordered_dict_model(
            capacity in 0usize..6,
            ops in proptest::collection::vec(op(), 0..80),
        ) {
            let mut cache = RecordCache::new(capacity);
            let mut model = Model::default();
            let mut now = 0.0;
            for op in ops {
                match op {
                    Op::Lookup(key) => {
                        let key = format!("k{key}");
                        prop_assert_eq!(cache.lookup(&key, now), model.lookup(&key, now));
                    }
                    Op::IsLive(key) => {
                        let key = format!("k{key}");
                        prop_assert_eq!(cache.is_live(&key, now), model.is_live(&key, now));
                    }
                    Op::Put(key, record, ttl) => {
                        let key = format!("k{key}");
                        cache.put(key.clone(), record, now + f64::from(ttl));
                        model.put(&key, record, now + f64::from(ttl));
                    }
                    Op::Evict => {
                        cache.evict();
                        let excess = model.entries.len().saturating_sub(capacity);
                        model.entries.drain(..excess);
                    }
                    Op::Tick(seconds) => now += f64::from(seconds),
                }
                prop_assert_eq!(cache.len(), model.entries.len());
                let order: Vec<&String> = cache.entries.keys().collect();
                let expected: Vec<&String> = model.entries.iter().map(|(k, ..)| k).collect();
                prop_assert_eq!(order, expected);
            }
        }
    }

    #[test]
    fn an_entry_expires_at_its_time_exactly() {
        let mut cache = RecordCache::new(4);
        cache.put("a".into(), Some(1), 10.0);
        cache.put("b".into(), None, 5.0);
        assert_eq!(cache.lookup("a", 9.9), Lookup::Found(&1));
        assert_eq!(cache.lookup("b", 4.9), Lookup::Absent);
        assert_eq!(cache.lookup("b", 5.0), Lookup::Fetch);
        assert_eq!(cache.lookup("a", 10.0), Lookup::Fetch);
        assert_eq!(
            cache.len(),
            2,
            "expired entries stay until replaced or evicted"
        );
        let mut held: Vec<u32> = cache.records().copied().collect();
        held.sort_unstable();
        assert_eq!(
            held,
            [1],
            "an expired record is still held; an absent key holds none"
        );
        cache.clear();
        assert!(cache.is_empty());
    }
}
