//! pydeployer: a local CI/CD runner. See README.md for the user's view and DESIGN.md for the map.

/// `println!` that never panics: when nobody reads standard output any more
/// (`pydeployer … | head -1`), what is left is dropped, and the exit code stays the run's.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that never panics (see [`outln!`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that never panics: a closed standard error (`pydeployer run 2>&1 | head -1`)
/// must not turn a run's result into a crash.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub mod actions;
pub mod app;
pub mod cli;
pub mod cloud;
pub mod complete;
pub mod config;
pub mod cron;
pub mod error;
pub mod events;
pub mod exec;
pub mod files;
pub mod mask;
pub mod object_id;
pub mod pipeline;
pub mod plan;
pub mod port;
pub mod report;
pub mod session;
pub mod store;
