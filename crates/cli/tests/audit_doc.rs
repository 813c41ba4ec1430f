//! `docs/AUDIT.md` cannot rot: every test it names as proof exists, each of the 102 checks has one row
//! in order, every row the queue makes true names a test, and the verdict counts add up.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const VERDICTS: [&str; 5] = ["tested", "untested", "partial", "not built", "handler"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn audit() -> String {
    std::fs::read_to_string(repo().join("docs/AUDIT.md")).unwrap()
}

/// The cells of a table row, trimmed (`|` never appears inside a cell of this file).
fn cells(line: &str) -> Vec<&str> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(str::trim).collect()
}

/// The `path::name` references of a cell: its backticked spans that name a test in a file
/// (`WorkerBuilder::concurrency` names an API, not a test).
fn references(cell: &str) -> Vec<(&str, &str)> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|span| span.split_once("::"))
        .filter(|(path, _)| path.contains('/') && (path.ends_with(".rs") || path.ends_with(".ts")))
        .collect()
}

/// Why `path::name` names no test, if it does not.
fn missing(path: &str, name: &str) -> Option<String> {
    let Ok(text) = std::fs::read_to_string(repo().join(path)) else {
        return Some(format!("{path} does not exist"));
    };
    let found = if path.ends_with(".rs") {
        [format!("fn {name}("), format!("fn {name}<")]
            .iter()
            .any(|f| text.contains(f.as_str()))
    } else if path.ends_with(".ts") {
        ['\'', '"', '`']
            .iter()
            .any(|q| text.contains(&format!("{q}{name}{q}")))
    } else {
        false
    };
    (!found).then(|| format!("{path} has no test {name}"))
}

#[test]
fn every_test_named_in_audit_md_exists() {
    let doc = audit();
    let mut broken = Vec::new();
    let mut named = 0;
    for line in doc.lines().filter(|l| l.starts_with('|')) {
        for (path, name) in references(line) {
            named += 1;
            if let Some(why) = missing(path, name) {
                broken.push(why);
            }
        }
    }
    assert!(named > 100, "the table names its proofs ({named} found)");
    assert!(
        broken.is_empty(),
        "AUDIT.md names tests that do not exist:\n{}",
        broken.join("\n")
    );
}

#[test]
fn audit_md_has_the_102_checks_in_order_and_counts_its_verdicts() {
    let doc = audit();
    let table: Vec<Vec<&str>> = doc
        .lines()
        .skip_while(|l| !l.starts_with("## The 102 checks"))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| ") && !l.starts_with("| #"))
        .map(cells)
        .collect();
    let numbers: Vec<usize> = table.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(
        numbers,
        (1..=102).collect::<Vec<_>>(),
        "one row per check, in order"
    );
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &table {
        assert_eq!(row.len(), 5, "row {}: five cells", row[0]);
        let verdict = row[2];
        assert!(
            VERDICTS.contains(&verdict),
            "row {}: verdict {verdict:?}",
            row[0]
        );
        if verdict == "tested" {
            assert!(
                !references(row[4]).is_empty(),
                "row {} says tested and names no test",
                row[0]
            );
        }
        *counts.entry(verdict).or_default() += 1;
    }
    let stated = doc
        .lines()
        .skip_while(|l| !l.starts_with("## Verdicts"))
        .find(|l| l.contains("tested "))
        .expect("a line of verdict counts under ## Verdicts");
    let expected = VERDICTS
        .iter()
        .map(|v| format!("{v} {}", counts.get(v).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ");
    assert!(
        stated.starts_with(&expected),
        "the counts say {stated:?}, the table {expected:?}"
    );
}
