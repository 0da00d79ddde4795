//! The batch-native core of usersignals.
//!
//! Pure Rust, no I/O and no Python: signal plans compiled from the Python DSL's JSON
//! ([`plan`]), scalar values with Python's equality ([`value`]), the compact state codecs
//! ([`varint`], [`last_n`], [`distinct`], [`decayed`], [`mean_vector`]), the batch executor that turns one micro-batch of column-shaped
//! events plus the stored states into new state bytes ([`batch`]), and the read kernels that
//! evaluate a stored state with a request-time context ([`context`]); and, for registries
//! whose signals are all native, the whole per-batch pipeline: the user record codec
//! ([`record`]), event-id deduplication ([`dedupe`]) and progress ([`pipeline`]); and the
//! Materializer's LRU cache of looked-up records ([`record_cache`]); and the training set's
//! text columns gathered into the label file's row order ([`text_column`]), and its plan of
//! which events feed each labelled user in what order ([`label_plan`]).
//!
//! The Python implementations in `usersignals.aggregations` are the reference model this
//! crate is property-tested against.
#![forbid(unsafe_code)]

pub mod batch;
pub mod context;
pub mod cursor;
pub mod decay;
pub mod decayed;
pub mod decoded;
pub mod dedupe;
pub mod distinct;
pub mod error;
pub mod json_body;
pub mod label_plan;
pub mod last_n;
pub mod mean_vector;
pub mod packed;
pub mod pipeline;
pub mod plan;
pub mod record;
pub mod record_cache;
pub mod route;
pub mod seen;
pub mod splice;
pub mod text_column;
pub mod tiles;
pub mod training;
pub mod value;
pub mod varint;

pub use batch::{execute, Batch, BatchOutput};
pub use context::ReadContext;
pub use error::CoreError;
pub use plan::{Aggregation, Plan};
pub use value::Value;
