//! Running a plan: the scheduler decides, the runner spawns and watches, events come out.

mod boundary;
pub mod family;
pub mod preflight;
pub mod process;
pub mod runner;
pub mod scheduler;
pub mod stop;
pub mod watchdog;
