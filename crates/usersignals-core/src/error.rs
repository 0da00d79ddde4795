//! The core's one error type. The binding maps each variant to the Python error tree.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// A compiled plan the core cannot execute (unknown kind, bad field, bad operator).
    Plan(String),
    /// Stored state bytes that do not decode (wrong version, truncated, out of range).
    Codec(String),
    /// A batch whose columns disagree with each other or with the plans.
    Batch(String),
    /// One user's stored state for one plan did not decode; the batch is not applied.
    UserState {
        user: usize,
        plan: String,
        message: String,
    },
    /// One user's stored record did not decode; the batch is not applied.
    UserRecord { user: usize, message: String },
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Plan(m) => write!(f, "plan: {m}"),
            CoreError::Codec(m) => write!(f, "state codec: {m}"),
            CoreError::Batch(m) => write!(f, "batch: {m}"),
            CoreError::UserState {
                user,
                plan,
                message,
            } => {
                write!(f, "stored state of {plan} for batch user {user}: {message}")
            }
            CoreError::UserRecord { user, message } => {
                write!(f, "stored record of batch user {user}: {message}")
            }
        }
    }
}

impl std::error::Error for CoreError {}
