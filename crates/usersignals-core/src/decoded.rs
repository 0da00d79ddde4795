//! A signal's state decoded for applying events: what each aggregation's apply step takes
//! and gives.
//!
//! The batch executor decodes a stored state, applies the events and encodes the result
//! ([`crate::batch::execute`]). A caller that applies a user's events in several steps can
//! keep the decoded state between them instead of decoding the bytes it just wrote
//! ([`crate::batch::apply_decoded`]), and read it decoded
//! ([`crate::json_body::label_values`]): the training set's loop does both, from one label
//! group to the next, and never encodes. Encoding such a state gives the bytes `execute`
//! writes, and reading it gives what reading those bytes gives (proptests in `batch`).

use crate::error::CoreError;
use crate::last_n::{self, Entry};
use crate::plan::{Aggregation, Plan};
use crate::{decayed, distinct, mean_vector, seen, tiles};

#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    LastN(Vec<Entry>),
    Distinct(distinct::DistinctState),
    Tiles(tiles::TileState),
    Seen(seen::SeenState),
    Scores(decayed::ScoresState),
    Vector(mean_vector::VectorState),
}

impl Decoded {
    /// `plan`'s state from its stored (native) bytes.
    pub fn decode(plan: &Plan, data: &[u8]) -> Result<Self, CoreError> {
        let retention_ms = plan.retention_ms;
        Ok(match &plan.aggregate {
            Aggregation::LastN(spec) => Self::LastN(last_n::decode(data, spec.keep.len())?),
            Aggregation::Distinct(spec, _) => Self::Distinct(distinct::decode(data, spec)?),
            Aggregation::Tiles(spec) => Self::Tiles(tiles::decode(spec, data)?),
            Aggregation::Seen(_) => Self::Seen(seen::decode(data)?),
            Aggregation::DecayedScores(spec) => {
                let bucket_ms = spec.buckets(retention_ms).bucket_ms;
                Self::Scores(decayed::decode(data, bucket_ms)?)
            }
            Aggregation::MeanVector(spec) => {
                let bucket_ms = spec.buckets(retention_ms).bucket_ms;
                Self::Vector(mean_vector::decode(data, spec.dim, bucket_ms)?)
            }
        })
    }

    /// The stored bytes of this state of `plan`.
    pub fn encode(&self, plan: &Plan) -> Result<Vec<u8>, CoreError> {
        let retention_ms = plan.retention_ms;
        Ok(match (self, &plan.aggregate) {
            (Self::LastN(entries), Aggregation::LastN(spec)) => {
                last_n::encode(entries, spec.keep.len())
            }
            (Self::Distinct(state), Aggregation::Distinct(..)) => distinct::encode(state),
            (Self::Tiles(state), Aggregation::Tiles(spec)) => tiles::encode(spec, state),
            (Self::Seen(state), Aggregation::Seen(_)) => seen::encode(state),
            (Self::Scores(state), Aggregation::DecayedScores(spec)) => {
                decayed::encode(state, spec.buckets(retention_ms).bucket_ms)
            }
            (Self::Vector(state), Aggregation::MeanVector(spec)) => {
                mean_vector::encode(state, spec.dim, spec.buckets(retention_ms).bucket_ms)
            }
            _ => return Err(mismatch(plan)),
        })
    }
}

/// A decoded state handed to a plan of another aggregation: a caller's bug, never data.
pub fn mismatch(plan: &Plan) -> CoreError {
    CoreError::Batch(format!(
        "a decoded state of another aggregation was given to {}",
        plan.key
    ))
}
