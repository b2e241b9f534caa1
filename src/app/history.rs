//! `pydeployer history`: the deploy ledger as an aligned table.

use std::fmt::{Display, Write as _};

use chrono::{Local, TimeZone};

use crate::report::summary::format_duration;
use crate::store::ledger::Entry;

/// The ledger as an aligned plain-text table, times shown in the local time zone.
pub(super) fn render_table(entries: &[Entry]) -> String {
    render_table_in(entries, &Local)
}

fn render_table_in<Tz: TimeZone>(entries: &[Entry], tz: &Tz) -> String
where
    Tz::Offset: Display,
{
    if entries.is_empty() {
        return "no deploys yet\n".to_owned();
    }
    let header = [
        "id", "kind", "status", "branch", "commit", "started", "duration",
    ]
    .map(String::from);
    let rows: Vec<[String; 7]> = std::iter::once(header)
        .chain(entries.iter().map(|entry| row(entry, tz)))
        .collect();
    let mut widths = [0; 7];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
            if column > 0 {
                line.push_str("  ");
            }
            // Numbers line up on the right, words on the left.
            if column == 0 || column == 6 {
                let _ = write!(line, "{cell:>width$}");
            } else {
                let _ = write!(line, "{cell:<width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn row<Tz: TimeZone>(entry: &Entry, tz: &Tz) -> [String; 7]
where
    Tz::Offset: Display,
{
    // A hand-edited branch name with a newline or tab would break the table's lines.
    let branch = entry
        .branch
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let commit = entry
        .commit
        .as_ref()
        .map_or_else(|| "-".to_owned(), |c| c.as_str().chars().take(10).collect());
    // A clock set back during the run gives a negative duration, which says nothing.
    let duration = (entry.finished_at - entry.started_at)
        .to_std()
        .map_or_else(|_| "-".to_owned(), format_duration);
    [
        entry.id.to_string(),
        entry.kind.to_string(),
        entry.status.to_string(),
        branch,
        commit,
        entry
            .started_at
            .with_timezone(tz)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        duration,
    ]
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, FixedOffset};

    use super::*;
    use crate::store::ledger::{Kind, Status};

    fn entry(id: u64, kind: Kind, status: Status, branch: &str, commit: Option<&str>) -> Entry {
        let offset = FixedOffset::east_opt(3600).expect("valid offset");
        let started = offset
            .with_ymd_and_hms(2024, 3, 5, 9, 30, 0)
            .single()
            .expect("unambiguous")
            + Duration::minutes(i64::try_from(id).expect("small id") * 7);
        Entry {
            id,
            kind,
            status,
            started_at: started,
            finished_at: started + Duration::milliseconds(1_500 + 61_000 * i64::from(id > 9)),
            repo: "https://example.com/app.git".into(),
            remote: "origin".into(),
            branch: branch.into(),
            commit: commit.map(|c| format!("{c:0<40}").parse().expect("an object id")),
            previous_commit: None,
            log: None,
            forced: false,
            publish: None,
            environment: None,
            trigger: None,
            approved_by: None,
            approved_at: None,
            health: None,
            rolled_back_to: None,
            other: serde_json::Map::new(),
        }
    }

    #[test]
    fn table_of_deploys_and_rollbacks() {
        let entries = [
            entry(
                1,
                Kind::Deploy,
                Status::Success,
                "master",
                Some("0123456789abcdef"),
            ),
            entry(2, Kind::Deploy, Status::Failed, "release/2024-03", None),
            entry(
                10,
                Kind::Rollback,
                Status::Success,
                "master",
                Some("fedcba98"),
            ),
        ];
        let utc = FixedOffset::east_opt(0).expect("valid offset");
        insta::assert_snapshot!(render_table_in(&entries, &utc));
    }

    #[test]
    fn an_empty_ledger_says_so() {
        assert_eq!(render_table(&[]), "no deploys yet\n");
    }
}
