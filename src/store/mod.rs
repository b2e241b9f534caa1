//! What pydeployer keeps on disk between runs: the deploy ledger, the logs folder, and
//! `.pydeployer/` (the run lock, scratch folders).
//!
//! Everything read back from here is untrusted input: it may have been edited, truncated or
//! written by another version.

pub mod ledger;
pub mod logs;
pub mod passed;
pub mod state;
