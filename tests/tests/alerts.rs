//! The alert rules of `deploy/prometheus/alerts.yml` against the runbook
//! and their tests: every alert names an existing section of
//! `docs/runbook.md` in its `runbook_url`, and `alerts.test.yml` has a case
//! for it. (`promtool check rules` and `promtool test rules`, run by
//! `./scripts/test`, check the rules themselves.)

use std::path::PathBuf;

fn read(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The anchor a Markdown renderer gives a heading: lower case, spaces as
/// hyphens, punctuation other than hyphens and underscores dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Each alert of the rules file with its `runbook_url`, if any.
fn alerts(rules: &str) -> Vec<(String, Option<String>)> {
    let mut alerts: Vec<(String, Option<String>)> = Vec::new();
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert:") {
            alerts.push((name.trim().to_owned(), None));
        } else if let Some(url) = line.strip_prefix("runbook_url:") {
            let last = alerts.last_mut().expect("a runbook_url inside an alert");
            last.1 = Some(url.trim().to_owned());
        }
    }
    alerts
}

#[test]
fn every_alert_links_a_runbook_section_and_is_tested() {
    let rules = read("deploy/prometheus/alerts.yml");
    let runbook = read("docs/runbook.md");
    let tests = read("deploy/prometheus/alerts.test.yml");
    let sections: Vec<String> = runbook
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(anchor)
        .collect();
    let alerts = alerts(&rules);
    assert!(alerts.len() >= 10, "alerts found: {alerts:?}");
    for (name, url) in &alerts {
        let url = url
            .as_deref()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let section = url
            .strip_prefix("docs/runbook.md#")
            .unwrap_or_else(|| panic!("{name}: {url} is not a section of docs/runbook.md"));
        assert!(
            sections.iter().any(|s| s == section),
            "{name}: docs/runbook.md has no section #{section}; it has {sections:?}"
        );
        assert!(
            runbook.contains(&format!("`{name}`")),
            "docs/runbook.md does not name {name}"
        );
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "alerts.test.yml has no case for {name}"
        );
    }
}

#[test]
fn anchors_are_made_as_markdown_renderers_make_them() {
    assert_eq!(anchor("Service down"), "service-down");
    assert_eq!(anchor("5xx answers"), "5xx-answers");
    assert_eq!(
        anchor("Database down or failing over"),
        "database-down-or-failing-over"
    );
    assert_eq!(anchor("What's `this`?"), "whats-this");
}
