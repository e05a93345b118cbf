//! The README's service discovery snippet is the heart of a runnable
//! example; they must say the same thing.

const README: &str = include_str!("../../README.md");
const EXAMPLE: &str = include_str!("../../discovery/examples/readme_snippet.rs");

/// The lines of `text` from after the line holding `start` up to the line
/// holding `end`, with their common indentation removed.
fn lines_between<'t>(text: &'t str, start: &str, end: &str) -> Vec<&'t str> {
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.iter().position(|l| l.contains(start)).expect(start) + 1;
    let last = first
        + lines[first..]
            .iter()
            .position(|l| l.contains(end))
            .expect(end);
    let indent = lines[first..last]
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines[first..last]
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect()
}

#[test]
fn the_discovery_snippet_is_the_example_s() {
    let readme = lines_between(README, "```rust,ignore", "```");
    let example = lines_between(
        EXAMPLE,
        "--- README snippet start",
        "--- README snippet end",
    );
    assert_eq!(
        readme, example,
        "README.md and discovery/examples/readme_snippet.rs differ"
    );
}
