//! Window: the pure event-time engine (placeholder while being written).
mod output;
pub use output::*;
