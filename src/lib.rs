//! pydeployer: a local CI/CD runner. See README.md for the user's view and DESIGN.md for the map.

pub mod actions;
pub mod app;
pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod exec;
pub mod pipeline;
pub mod plan;
pub mod report;
pub mod state;
