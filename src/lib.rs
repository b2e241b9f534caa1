//! pydeployer: a local CI/CD runner. See README.md for the user's view and DESIGN.md for the map.

pub mod config;
pub mod events;
pub mod pipeline;
pub mod report;
