//! What changed in a tier: between its previous and new lock, or between
//! the distributions of its previous and new generation, as uv reports an
//! install (`+ name version`, `- name version`, `~ name old -> new`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::PyLock;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionChange {
    pub package: String,
    /// `None`: added.
    pub old: Option<String>,
    /// `None`: removed.
    pub new: Option<String>,
    /// Tiers of the solve group that require the package themselves, when
    /// the new version came from resolving with them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pinned_by: Vec<String>,
}

impl fmt::Display for VersionChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.old, &self.new) {
            (None, Some(new)) => write!(f, "+ {} {new}", self.package)?,
            (Some(old), None) => write!(f, "- {} {old}", self.package)?,
            (Some(old), Some(new)) => write!(f, "~ {} {old} -> {new}", self.package)?,
            (None, None) => write!(f, "  {}", self.package)?,
        }
        if !self.pinned_by.is_empty() {
            let tiers = self.pinned_by.join(", ");
            let noun = if self.pinned_by.len() == 1 {
                "tier"
            } else {
                "tiers"
            };
            write!(f, " (pinned by {noun} {tiers})")?;
        }
        Ok(())
    }
}

/// Package name → version(s) in a lock (a universal lock may hold a package
/// at several versions, one per Python range; they are listed together).
/// A missing or unreadable lock has none.
pub fn lock_versions(path: &Path) -> BTreeMap<String, String> {
    let Ok((lock, _)) = PyLock::read(path) else {
        return BTreeMap::new();
    };
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in lock.packages {
        let entry = versions.entry(package.name).or_default();
        let version = package.version.unwrap_or_else(|| "(local)".into());
        if !entry.contains(&version) {
            entry.push(version);
        }
    }
    versions
        .into_iter()
        .map(|(name, mut v)| {
            v.sort();
            (name, v.join(" | "))
        })
        .collect()
}

/// The changes from `before` to `after`, by package name.
pub fn changes(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<VersionChange> {
    let mut out = Vec::new();
    for (package, new) in after {
        match before.get(package) {
            Some(old) if old == new => {}
            old => out.push(VersionChange {
                package: package.clone(),
                old: old.cloned(),
                new: Some(new.clone()),
                pinned_by: Vec::new(),
            }),
        }
    }
    for (package, old) in before {
        if !after.contains_key(package) {
            out.push(VersionChange {
                package: package.clone(),
                old: Some(old.clone()),
                new: None,
                pinned_by: Vec::new(),
            });
        }
    }
    out.sort_by(|a, b| a.package.cmp(&b.package));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn changes_read_as_uv_prints_them() {
        let before = map(&[("a", "1.0"), ("b", "1.0"), ("c", "1.0")]);
        let after = map(&[("a", "1.0"), ("b", "2.0"), ("d", "0.1")]);
        let mut lines: Vec<String> = changes(&before, &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        lines.sort();
        assert_eq!(lines, vec!["+ d 0.1", "- c 1.0", "~ b 1.0 -> 2.0"]);
        let mut pinned = changes(&before, &after).remove(0);
        pinned.pinned_by = vec!["api".into()];
        assert_eq!(pinned.to_string(), "~ b 1.0 -> 2.0 (pinned by tier api)");
    }
}
