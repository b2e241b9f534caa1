//! Wall-clock times of events, derived from the run's start without asking the clock again.
//!
//! Events carry offsets from the run's start; a reporter that prints the time of day adds the
//! offset to the start's milliseconds since midnight. A run that crosses midnight wraps to
//! `00:00:00`, and a daylight-saving change during a run is not followed: both are cheaper and
//! less surprising than a clock lookup per line.

use std::time::Duration;

use chrono::{DateTime, Local, Timelike};

const MILLIS_PER_DAY: u64 = 24 * 60 * 60 * 1000;

/// The run's start as milliseconds since local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WallClock {
    start_millis: u64,
}

impl WallClock {
    pub(crate) fn new(started_at: &DateTime<Local>) -> Self {
        // A leap second shows as nanosecond >= 1e9; fold it into the last millisecond.
        let millis = u64::from(started_at.nanosecond() / 1_000_000).min(999);
        WallClock {
            start_millis: u64::from(started_at.num_seconds_from_midnight()) * 1000 + millis,
        }
    }

    /// The time of day `elapsed` after the start.
    pub(crate) fn at(self, elapsed: Duration) -> TimeOfDay {
        let elapsed = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX) % MILLIS_PER_DAY;
        TimeOfDay((self.start_millis + elapsed) % MILLIS_PER_DAY)
    }
}

/// Milliseconds since midnight, below one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeOfDay(u64);

impl TimeOfDay {
    /// `HH:MM:SS.mmm`, as ASCII bytes.
    pub(crate) fn millis_bytes(self) -> [u8; 12] {
        let mut out = *b"00:00:00.000";
        let (hms, millis) = (self.0 / 1000, self.0 % 1000);
        put_two(&mut out[0..2], hms / 3600);
        put_two(&mut out[3..5], hms / 60 % 60);
        put_two(&mut out[6..8], hms % 60);
        out[9] = digit(millis / 100);
        out[10] = digit(millis / 10 % 10);
        out[11] = digit(millis % 10);
        out
    }

    /// `HH:MM:SS`.
    pub(crate) fn seconds_string(self) -> String {
        let bytes = self.millis_bytes();
        String::from_utf8_lossy(&bytes[..8]).into_owned()
    }
}

fn put_two(out: &mut [u8], value: u64) {
    out[0] = digit(value / 10 % 10);
    out[1] = digit(value % 10);
}

fn digit(value: u64) -> u8 {
    b'0' + (value % 10) as u8
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn clock(h: u32, m: u32, s: u32, ms: u32) -> WallClock {
        let start = Local
            .with_ymd_and_hms(2024, 3, 5, h, m, s)
            .single()
            .expect("unambiguous local time")
            + chrono::Duration::milliseconds(i64::from(ms));
        WallClock::new(&start)
    }

    #[test]
    fn adds_the_offset_to_the_start() {
        let at = clock(12, 3, 4, 5).at(Duration::from_millis(61_250));
        assert_eq!(&at.millis_bytes(), b"12:04:05.255");
        assert_eq!(at.seconds_string(), "12:04:05");
    }

    #[test]
    fn wraps_at_midnight() {
        let at = clock(23, 59, 59, 900).at(Duration::from_millis(200));
        assert_eq!(&at.millis_bytes(), b"00:00:00.100");
    }
}
