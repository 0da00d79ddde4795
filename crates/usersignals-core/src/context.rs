//! The request-time context as the read kernels take it.
//!
//! The view's times depend on the state read: without `as_of`, the view's "now" is the wall
//! clock or the state's newest event if that is later (a producer's clock ahead of ours). So
//! Python passes the request's times unresolved ([`Times`]) and the kernels resolve them
//! against the state, with the same rules as `ReadContext.view_time`/`end`/`start` in
//! `usersignals.aggregations.context`.

/// How far before a state's newest event an `as_of` may lie and still be answered: states
/// keep this much history beyond their retention (`AS_OF_LOOKBACK_MS` in Python).
pub const AS_OF_LOOKBACK_MS: i64 = 2 * 86_400_000;

/// The request's times, in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Times {
    pub as_of_ms: Option<i64>,
    /// The wall clock at read time.
    pub now_ms: i64,
    pub until_ms: Option<i64>,
    pub window_ms: Option<i64>,
    pub since_ms: Option<i64>,
}

impl Times {
    /// The "now" of the view over a state whose newest event is at `newest`.
    pub fn view_time(&self, newest: i64) -> i64 {
        self.as_of_ms.unwrap_or(self.now_ms.max(newest))
    }

    /// The last event time the view includes (inclusive).
    pub fn end(&self, newest: i64) -> i64 {
        let view = self.view_time(newest);
        self.until_ms.map_or(view, |until| view.min(until))
    }

    /// The first event time the view includes (inclusive): windows are `[end - W, end]`.
    pub fn start(&self, newest: i64) -> Option<i64> {
        let window_start = self
            .window_ms
            .map(|window| self.end(newest).saturating_sub(window));
        match (self.since_ms, window_start) {
            (Some(since), Some(window)) => Some(since.max(window)),
            (since, None) => since,
            (None, window) => window,
        }
    }
}

/// A read the state cannot answer exactly (Python raises `AsOfError` from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The view time asked for.
    pub view_ms: i64,
    /// The earliest `as_of` this state answers.
    pub earliest_ms: i64,
    pub why: &'static str,
}

/// A request's set of names (actions, surfaces, excluded keys). hashbrown's hasher, not
/// std's SipHash: a read looks up every stored group or entry in it, and SipHash was about
/// 7 % of a Count read's instructions (`bench/read_kernels.py`). Request values are short
/// and a request's sets are small; nothing stored is keyed by them.
pub type NameSet = hashbrown::HashSet<String>;

#[derive(Debug, Clone, Default)]
pub struct ReadContext {
    pub times: Times,
    pub actions: Option<NameSet>,
    pub surfaces: Option<NameSet>,
    pub exclude: NameSet,
    pub dedupe: bool,
    pub limit: Option<usize>,
}

impl ReadContext {
    /// The context's filter of a grouping field's values: its actions when grouped by
    /// `action`, its surfaces by `surface`, none otherwise.
    pub fn allowed_by(&self, by: Option<&str>) -> Option<&NameSet> {
        match by {
            Some("action") => self.actions.as_ref(),
            Some("surface") => self.surfaces.as_ref(),
            _ => None,
        }
    }
}
