//! A stage's `schedule:`: a cron pattern, checked once, and its times (croner lives here and
//! nowhere else).
//!
//! What is accepted is what Debian's cron runs, since `schedule install` hands the pattern to
//! it as written: five fields (minute, hour, day of month, month, day of week) of numbers, `*`,
//! lists, ranges and steps, with month and weekday names. croner's extensions that cron does not
//! know (`L`, `W`, `#`, `?`, `+`, `@hourly`, a year) are refused rather than installed into a
//! crontab that would misread them. A sixth field in front, seconds, is accepted for
//! `schedule run` (the foreground scheduler), which counts seconds; `schedule install` refuses
//! such a stage, because cron counts minutes.
//!
//! Times are local, as cron's are.

use std::fmt;

use chrono::{DateTime, Local};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A checked `schedule:` pattern.
#[derive(Clone)]
pub struct Schedule {
    /// As written (whitespace between fields folded to one space).
    text: String,
    /// Boxed: croner's pattern is about 300 bytes, and every stage carries an `Option` of it.
    cron: Box<Cron>,
    /// Six fields: the first counts seconds.
    seconds: bool,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.text).finish()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Schedule {}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The names of each field, for messages, in the order of a five-field pattern.
const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    /// Checks `text`; the error says what is wrong, in words (the caller adds the place).
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let seconds = match fields.len() {
            5 => false,
            6 => true,
            0 => return Err("the schedule is empty".into()),
            n => {
                return Err(format!(
                    "a schedule has 5 fields (minute hour day-of-month month day-of-week), not {n}"
                ));
            }
        };
        let named: Vec<(&str, u32, u32)> = if seconds {
            std::iter::once(("second", 0, 59)).chain(FIELDS).collect()
        } else {
            FIELDS.to_vec()
        };
        for (field, &(name, low, high)) in fields.iter().zip(&named) {
            check_field(field, name, low, high)?;
        }
        let cron = CronParser::builder()
            .seconds(if seconds {
                Seconds::Required
            } else {
                Seconds::Disallowed
            })
            .year(Year::Disallowed)
            .build()
            .parse(&fields.join(" "))
            .map_err(|err| format!("not a cron pattern: {err}"))?;
        // A pattern that never comes (`0 0 31 2 *`: February 31st) would make the scheduler
        // wait for ever, and cron never run it.
        if cron.find_next_occurrence(&Local::now(), false).is_err() {
            return Err("this schedule never comes (no such day)".into());
        }
        Ok(Schedule {
            text: fields.join(" "),
            cron: Box::new(cron),
            seconds,
        })
    }

    /// Six fields, the first of them seconds: only `schedule run` can keep such a time.
    pub fn has_seconds(&self) -> bool {
        self.seconds
    }

    /// The first time strictly after `after`, if there is one.
    pub fn next_after(&self, after: &DateTime<Local>) -> Option<DateTime<Local>> {
        self.cron.find_next_occurrence(after, false).ok()
    }

    /// The next `count` times after `after`.
    pub fn upcoming(&self, after: &DateTime<Local>, count: usize) -> Vec<DateTime<Local>> {
        let mut times = Vec::with_capacity(count);
        let mut at = *after;
        while times.len() < count {
            match self.next_after(&at) {
                Some(next) => {
                    times.push(next);
                    at = next;
                }
                None => break,
            }
        }
        times
    }
}

/// One field: `*`, or a list of `N`, `N-M`, `*/S`, `N-M/S` (and `N/S`, which cron reads as
/// `N-MAX/S`), names for months and weekdays.
fn check_field(field: &str, name: &str, low: u32, high: u32) -> Result<(), String> {
    let names: &[&str] = match name {
        "month" => &MONTHS,
        "day of week" => &WEEKDAYS,
        _ => &[],
    };
    if let Some(bad) = field
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '-' | '/')))
    {
        let why = match bad {
            '?' | '#' | '+' | '@' => " (croner and Quartz know it; cron does not)",
            _ => "",
        };
        return Err(format!(
            "`{bad}` is not allowed in a cron field{why}: use numbers, `*`, `,`, `-` and `/`"
        ));
    }
    let value = |text: &str| -> Result<u32, String> {
        if let Ok(n) = text.parse::<u32>() {
            if (low..=high).contains(&n) {
                return Ok(n);
            }
            return Err(format!(
                "{n} is not a valid {name} (it is {low} to {high}){}",
                if name == "minute" && n >= 60 {
                    ": an hour has minutes 0 to 59"
                } else {
                    ""
                }
            ));
        }
        let lower = text.to_ascii_lowercase();
        match names.iter().position(|n| *n == lower) {
            Some(i) => Ok(u32::try_from(i).unwrap_or(0) + low.min(1)),
            None if names.is_empty() => Err(format!("`{text}` is not a valid {name}")),
            None => Err(format!(
                "`{text}` is not a valid {name} (numbers {low} to {high}, or {})",
                names.join(", ")
            )),
        }
    };
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (part, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(s) if s >= 1 && s <= high.max(1) => {}
                _ => return Err(format!("`/{step}` is not a valid step for the {name}")),
            }
        }
        if range == "*" {
            continue;
        }
        if range.is_empty() {
            return Err(format!(
                "`{part}` is not a valid {name}: a value is missing"
            ));
        }
        match range.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (value(from)?, value(to)?);
                if from > to {
                    return Err(format!(
                        "the range `{range}` of the {name} goes backwards (write the smaller first)"
                    ));
                }
            }
            None => {
                value(range)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Local> {
        Local
            .with_ymd_and_hms(2026, 3, 5, h, m, s)
            .single()
            .expect("unambiguous local time")
    }

    #[test]
    fn five_fields_give_the_next_times_in_local_time() {
        let daily = Schedule::parse("0 3 * * *").unwrap();
        assert!(!daily.has_seconds());
        let times = daily.upcoming(&at(12, 0, 0), 3);
        assert_eq!(times.len(), 3);
        assert_eq!(times[0].format("%d %H:%M").to_string(), "06 03:00");
        assert_eq!(times[2].format("%d %H:%M").to_string(), "08 03:00");
        let every = Schedule::parse("*/15 9-17 * jan-dec mon-fri").unwrap();
        assert_eq!(every.to_string(), "*/15 9-17 * jan-dec mon-fri");
    }

    #[test]
    fn a_seconds_field_is_allowed_first() {
        let fast = Schedule::parse("*/5 * * * * *").unwrap();
        assert!(fast.has_seconds());
        let next = fast.next_after(&at(12, 0, 1)).unwrap();
        assert_eq!(next, at(12, 0, 5));
    }

    #[test]
    fn what_cron_would_not_run_is_refused_saying_why() {
        for (bad, why) in [
            ("61 * * * *", "61 is not a valid minute"),
            ("* 24 * * *", "24 is not a valid hour"),
            ("* * 0 * *", "0 is not a valid day of month"),
            ("* * * 13 *", "13 is not a valid month"),
            ("* * * * 8", "8 is not a valid day of week"),
            ("* * * *", "5 fields"),
            ("* * * * * * *", "not 7"),
            ("", "empty"),
            ("0 0 L * *", "`L` is not a valid day of month"),
            ("0 0 * * 5#2", "`#` is not allowed"),
            ("@hourly", "not 1"),
            ("*/0 * * * *", "`/0` is not a valid step"),
            ("5-1 * * * *", "goes backwards"),
            ("0 0 31 2 *", "never comes"),
            ("0 0 * foo *", "`foo` is not a valid month"),
        ] {
            let err = Schedule::parse(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
