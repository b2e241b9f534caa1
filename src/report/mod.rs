//! Turning run events into what people read: the terminal, the run log, the summary.

mod clock;
pub mod deploys;
#[cfg(test)]
mod fixtures;
pub mod ledger;
pub mod logfile;
pub mod logread;
pub mod mask;
pub mod summary;
pub mod terminal;
