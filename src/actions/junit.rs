//! Reading pytest's JUnit XML report into counts and the names of failed tests.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    /// `file_or_class::test` of each failed or errored test.
    pub failures: Vec<String>,
}

impl TestCounts {
    /// `3 passed, 1 failed, 1 skipped; failed: tests.test_app::test_sub`
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        );
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
}

fn attr(element: &BytesStart<'_>, name: &str) -> Option<String> {
    element
        .try_get_attribute(name)
        .ok()
        .flatten()
        .and_then(|a| a.unescape_value().ok().map(std::borrow::Cow::into_owned))
}

/// Parses a JUnit XML document as pytest writes it. `None` if it is not one.
pub fn parse(xml: &str) -> Option<TestCounts> {
    let mut reader = Reader::from_str(xml);
    let mut counts = TestCounts::default();
    let mut seen_case = false;
    let mut current: Option<(String, bool)> = None; // (name, already counted as failed/skipped)
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.name().as_ref() == b"testcase" => {
                seen_case = true;
                current = Some((case_name(&e), false));
            }
            Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                seen_case = true;
                counts.passed += 1;
            }
            Event::Start(e) | Event::Empty(e)
                if matches!(e.name().as_ref(), b"failure" | b"error") =>
            {
                if let Some((name, counted)) = current.as_mut() {
                    if !*counted {
                        *counted = true;
                        counts.failed += 1;
                        counts.failures.push(name.clone());
                    }
                }
            }
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"skipped" => {
                if let Some((_, counted)) = current.as_mut() {
                    if !*counted {
                        *counted = true;
                        counts.skipped += 1;
                    }
                }
            }
            Event::End(e) if e.name().as_ref() == b"testcase" => {
                if let Some((_, counted)) = current.take() {
                    if !counted {
                        counts.passed += 1;
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (seen_case || xml.contains("<testsuite")).then_some(counts)
}

fn case_name(e: &BytesStart<'_>) -> String {
    let class = attr(e, "classname").unwrap_or_default();
    let name = attr(e, "name").unwrap_or_default();
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

    #[test]
    fn not_junit_is_none() {
        assert_eq!(parse("hello"), None);
    }
}
