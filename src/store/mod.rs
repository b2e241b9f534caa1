//! What pydeployer keeps on disk between runs: the deploy ledger, the logs folder, and
//! `.pydeployer/` (the run lock, scratch folders, the outbox).
//!
//! Everything read back from here is untrusted input: it may have been edited, truncated or
//! written by another version.

pub mod artifacts;
pub mod cache;
pub mod lastrun;
pub mod ledger;
pub mod logs;
pub mod outbox;
pub mod passed;
pub mod state;

/// The most pydeployer reads of the deploy ledger (about 150,000 entries).
pub const LEDGER_LIMIT: u64 = 64 << 20;
