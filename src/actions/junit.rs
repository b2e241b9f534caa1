//! What a pytest stage says: its counts, as pytest's own summary line gives them, and from its
//! JUnit XML report (written with `junit_family=xunit1`, which keeps each test's file) the ids
//! of the failed tests as `pytest ID` takes them, and the failure sections (the assertion and
//! its traceback).

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// At most this many failure sections are kept, each at most [`SECTION_LINES`] lines.
const SECTIONS: usize = 3;
const SECTION_LINES: usize = 30;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub xfailed: u64,
    pub xpassed: u64,
    pub errors: u64,
    /// The id of each failed or errored test (`tests/test_app.py::TestApp::test_sub`).
    pub failures: Vec<String>,
    /// `ID` and pytest's report of it, for the first failures.
    pub sections: Vec<(String, String)>,
}

impl TestCounts {
    /// `3 passed, 1 failed, 1 skipped; failed: tests/test_app.py::test_sub` (xfailed, xpassed
    /// and errors are named when there are any).
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        );
        for (count, word) in [
            (self.xfailed, "xfailed"),
            (self.xpassed, "xpassed"),
            (
                self.errors,
                if self.errors == 1 { "error" } else { "errors" },
            ),
        ] {
            if count > 0 {
                text.push_str(&format!(", {count} {word}"));
            }
        }
        if !self.failures.is_empty() {
            const SHOWN: usize = 5;
            text.push_str("; failed: ");
            text.push_str(
                &self
                    .failures
                    .iter()
                    .take(SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            if self.failures.len() > SHOWN {
                text.push_str(&format!(" and {} more", self.failures.len() - SHOWN));
            }
        }
        text
    }

    /// The failure sections, as pytest prints them, for the terminal under a failed stage.
    pub fn details(&self) -> Option<String> {
        if self.sections.is_empty() {
            return None;
        }
        let mut text = String::new();
        for (id, report) in &self.sections {
            text.push_str(&format!("_____ {id} _____\n"));
            let lines: Vec<&str> = report.lines().collect();
            let cut = lines.len().saturating_sub(SECTION_LINES);
            if cut > 0 {
                text.push_str(&format!("… ({cut} lines before)\n"));
            }
            for line in &lines[cut..] {
                text.push_str(line);
                text.push('\n');
            }
        }
        if self.failures.len() > self.sections.len() {
            text.push_str(&format!(
                "… and {} more failed (the log has them all)\n",
                self.failures.len() - self.sections.len()
            ));
        }
        Some(text)
    }

    /// Takes the counts of pytest's summary line (`=== 1 failed, 2 passed, 1 xfailed in 0.1s
    /// ===`) where there is one: the report cannot tell an xpassed test from a passed one.
    #[must_use]
    pub fn with_summary_line(mut self, line: &str) -> Self {
        let Some(counts) = summary_counts(line) else {
            return self;
        };
        self.passed = 0;
        self.failed = 0;
        self.skipped = 0;
        self.xfailed = 0;
        self.xpassed = 0;
        self.errors = 0;
        for (count, word) in counts {
            match word {
                "passed" => self.passed = count,
                "failed" => self.failed = count,
                "skipped" => self.skipped = count,
                "xfailed" => self.xfailed = count,
                "xpassed" => self.xpassed = count,
                "error" | "errors" => self.errors = count,
                _ => {}
            }
        }
        self
    }
}

/// `(count, word)` of pytest's final line, or `None` if `line` is not one.
fn summary_counts(line: &str) -> Option<Vec<(u64, &str)>> {
    let line = line.trim().trim_matches('=').trim();
    // `… in 0.12s` (or `in 61.00s (0:01:01)`) ends it.
    let (counts, _) = line.rsplit_once(" in ")?;
    let mut out = Vec::new();
    for part in counts.split(", ") {
        let (count, word) = part.trim().split_once(' ')?;
        out.push((count.parse().ok()?, word));
    }
    (!out.is_empty()).then_some(out)
}

fn attr(element: &BytesStart<'_>, name: &str) -> Option<String> {
    element
        .try_get_attribute(name)
        .ok()
        .flatten()
        .and_then(|a| a.unescape_value().ok().map(std::borrow::Cow::into_owned))
}

/// What happened to the test case being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Passed,
    Failed,
    Error,
    Skipped,
    Xfailed,
}

/// Parses a JUnit XML document as pytest writes it. `None` if it is not one.
pub fn parse(xml: &str) -> Option<TestCounts> {
    let mut reader = Reader::from_str(xml);
    let mut counts = TestCounts::default();
    let mut seen_case = false;
    // The case being read: its id and what happened to it.
    let mut current: Option<(String, Seen)> = None;
    // Inside a <failure>/<error> of the current case: its message, and its body so far.
    let mut section: Option<(String, String)> = None;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.name().as_ref() == b"testcase" => {
                seen_case = true;
                current = Some((case_id(&e), Seen::Passed));
            }
            Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                seen_case = true;
                counts.passed += 1;
            }
            Event::Start(e) | Event::Empty(e)
                if matches!(e.name().as_ref(), b"failure" | b"error") =>
            {
                if let Some((_, seen)) = current.as_mut()
                    && *seen == Seen::Passed
                {
                    *seen = if e.name().as_ref() == b"error" {
                        Seen::Error
                    } else {
                        Seen::Failed
                    };
                    let message = attr(&e, "message").unwrap_or_default();
                    section = Some((message, String::new()));
                }
            }
            Event::Text(text) => {
                if let (Some((_, body)), Ok(text)) = (section.as_mut(), text.decode()) {
                    body.push_str(&text);
                }
            }
            // `&lt;` and friends come as events of their own.
            Event::GeneralRef(reference) => {
                if let Some((_, body)) = section.as_mut() {
                    body.push_str(&entity(&reference));
                }
            }
            Event::End(e) if matches!(e.name().as_ref(), b"failure" | b"error") => {
                if let (Some((message, body)), Some((id, _))) = (section.take(), &current)
                    && counts.sections.len() < SECTIONS
                {
                    // The body is the whole report; the message only its summary.
                    let report = if body.trim().is_empty() {
                        message
                    } else {
                        body
                    };
                    counts.sections.push((id.clone(), report));
                }
            }
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"skipped" => {
                if let Some((_, seen)) = current.as_mut()
                    && *seen == Seen::Passed
                {
                    *seen = if attr(&e, "type").as_deref() == Some("pytest.xfail") {
                        Seen::Xfailed
                    } else {
                        Seen::Skipped
                    };
                }
            }
            Event::End(e) if e.name().as_ref() == b"testcase" => {
                if let Some((id, seen)) = current.take() {
                    match seen {
                        Seen::Passed => counts.passed += 1,
                        Seen::Skipped => counts.skipped += 1,
                        Seen::Xfailed => counts.xfailed += 1,
                        Seen::Failed => counts.failed += 1,
                        Seen::Error => counts.errors += 1,
                    }
                    if matches!(seen, Seen::Failed | Seen::Error) {
                        counts.failures.push(id);
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (seen_case || xml.contains("<testsuite")).then_some(counts)
}

/// The text an entity or character reference stands for (`&lt;` is `<`).
fn entity(reference: &quick_xml::events::BytesRef<'_>) -> String {
    if let Ok(Some(c)) = reference.resolve_char_ref() {
        return c.to_string();
    }
    match reference.decode().as_deref() {
        Ok("lt") => "<".into(),
        Ok("gt") => ">".into(),
        Ok("amp") => "&".into(),
        Ok("quot") => "\"".into(),
        Ok("apos") => "'".into(),
        Ok(other) => format!("&{other};"),
        Err(_) => String::new(),
    }
}

/// The test's id as pytest takes it on its command line: `tests/test_app.py::TestApp::test_sub`
/// from `file` (xunit1) and the class names left in `classname` after the module; without
/// `file`, `classname::name`.
fn case_id(e: &BytesStart<'_>) -> String {
    let class = attr(e, "classname").unwrap_or_default();
    let name = attr(e, "name").unwrap_or_default();
    if let Some(file) = attr(e, "file") {
        let module = file.trim_end_matches(".py").replace('/', ".");
        let classes = class
            .strip_prefix(&module)
            .map(|rest| rest.trim_start_matches('.'))
            .unwrap_or_default();
        let mut id = file;
        for class in classes.split('.').filter(|c| !c.is_empty()) {
            id.push_str("::");
            id.push_str(class);
        }
        return format!("{id}::{name}");
    }
    if class.is_empty() {
        name
    } else {
        format!("{class}::{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_failed_names() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4">
<testcase classname="tests.test_app" name="test_add" time="0.001" />
<testcase classname="tests.test_app" name="test_sub" time="0.001"><failure message="assert 1 == 2">trace</failure></testcase>
<testcase classname="tests.test_app" name="test_skip" time="0.000"><skipped type="pytest.skip" message="later">why</skipped></testcase>
<testcase classname="tests.test_app" name="test_mul" time="0.001"></testcase>
</testsuite></testsuites>"#;
        let counts = parse(xml).unwrap();
        assert_eq!((counts.passed, counts.failed, counts.skipped), (2, 1, 1));
        assert_eq!(counts.failures, ["tests.test_app::test_sub"]);
        assert_eq!(
            counts.describe(),
            "2 passed, 1 failed, 1 skipped; failed: tests.test_app::test_sub"
        );
    }

    /// As pytest 8 writes it with `-o junit_family=xunit1`.
    const XUNIT1: &str = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1" skipped="2" tests="6">
<testcase classname="tests.test_funcs.TestAsDict" name="test_shallow" file="tests/test_funcs.py" line="3" time="0.000"><failure message="assert (1 + 2) == 4">self = &lt;test_funcs.TestAsDict object&gt;

    def test_shallow(self):
&gt;       assert 1 + 2 == 4
E       assert (1 + 2) == 4

tests/test_funcs.py:5: AssertionError</failure></testcase>
<testcase classname="tests.test_funcs" name="test_ok" file="tests/test_funcs.py" line="6" time="0.000" />
<testcase classname="tests.test_funcs" name="test_skip" file="tests/test_funcs.py" line="9" time="0.000"><skipped type="pytest.skip" message="later">later</skipped></testcase>
<testcase classname="tests.test_funcs" name="test_xfail" file="tests/test_funcs.py" line="13" time="0.000"><skipped type="pytest.xfail" message="known" /></testcase>
<testcase classname="tests.test_funcs" name="test_xpass" file="tests/test_funcs.py" line="17" time="0.000" />
<testcase classname="tests.test_funcs" name="test_error" file="tests/test_funcs.py" line="25" time="0.000"><error message="failed on setup">E       RuntimeError: fixture broke</error></testcase>
</testsuite></testsuites>"#;

    #[test]
    fn ids_are_what_pytest_takes_and_sections_are_kept() {
        let counts = parse(XUNIT1).unwrap();
        assert_eq!(
            counts.failures,
            [
                "tests/test_funcs.py::TestAsDict::test_shallow",
                "tests/test_funcs.py::test_error"
            ]
        );
        // The report cannot tell xpassed from passed: 2 passed until the summary line says.
        assert_eq!(
            (
                counts.passed,
                counts.failed,
                counts.skipped,
                counts.xfailed,
                counts.errors
            ),
            (2, 1, 1, 1, 1)
        );
        let details = counts.details().unwrap();
        assert!(details.contains(">       assert 1 + 2 == 4"), "{details}");
        assert!(details.contains("_____ tests/test_funcs.py::TestAsDict::test_shallow _____"));
        assert!(details.contains("RuntimeError: fixture broke"), "{details}");
        let counts = counts.with_summary_line(
            "=== 1 failed, 1 passed, 1 skipped, 1 xfailed, 1 xpassed, 1 error in 0.02s ===",
        );
        assert_eq!(
            counts.describe(),
            "1 passed, 1 failed, 1 skipped, 1 xfailed, 1 xpassed, 1 error; failed: tests/test_funcs.py::TestAsDict::test_shallow, tests/test_funcs.py::test_error"
        );
    }

    #[test]
    fn what_is_not_a_summary_line_changes_nothing() {
        for line in [
            "",
            "PASSED",
            "collected 3 items",
            "ran in 0.1s",
            "= x y in 1s =",
        ] {
            assert_eq!(summary_counts(line), None, "{line}");
        }
        assert_eq!(
            summary_counts("==== 2 passed, 1 warning in 61.00s (0:01:01) ===="),
            Some(vec![(2, "passed"), (1, "warning")])
        );
    }

    #[test]
    fn not_junit_is_none() {
        assert_eq!(parse("hello"), None);
    }
}
