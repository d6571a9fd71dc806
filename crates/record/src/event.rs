//! The event model is the core's session model (`postern_core::event`): engines describe what
//! happened with it without depending on this crate; this crate frames, hashes and signs it.

pub use postern_core::event::*;
