//! Sections of docs/bench.md that one xtask command owns, between `<!-- name -->` and
//! `<!-- /name -->` markers: the command rewrites its own, `cargo xtask bench` keeps them.

/// `old` with the section between `begin` and `end` replaced by `section` (which carries its
/// markers), or `section` appended when there is none.
pub fn splice(old: &str, begin: &str, end: &str, section: &str) -> String {
    match (old.find(begin), old.find(end)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{}{}", &old[..a], section, old[b + end.len()..].trim_start_matches('\n'))
        }
        _ if old.is_empty() => section.to_owned(),
        _ => format!("{}\n{section}", old.trim_end_matches('\n').to_owned() + "\n"),
    }
}

/// The marked section of `old` (markers included), if any.
pub fn section<'a>(old: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let a = old.find(begin)?;
    let b = old.find(end)?;
    (a < b).then(|| &old[a..b + end.len()])
}
