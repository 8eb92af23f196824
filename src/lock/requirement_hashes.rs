//! `--hash` options of requirement files, held against the lock: the file
//! the lock pins for that package must have one of the listed digests, as
//! pip's hash-checking mode demands of what it installs.

use std::path::Path;

use anyhow::bail;

use crate::config::Tier;
use crate::dist::Selected;

/// Refuses when a requirement with `--hash` options gets a file whose
/// sha256 is not among them, naming the requirement, both digests and the
/// lock.
pub fn check(tier: &Tier, selected: &[Selected], lock_path: &Path) -> anyhow::Result<()> {
    for requirement in tier.requirements.iter().filter(|r| !r.hashes.is_empty()) {
        let Some(chosen) = selected.iter().find(|s| s.name == requirement.name) else {
            continue;
        };
        let Some(pinned) = chosen.pinned() else {
            bail!(
                "{}: `{}` carries --hash, but the lock {} installs {} from a local folder, which \
                 has no file to hash",
                requirement.origin,
                requirement.text,
                lock_path.display(),
                chosen.name
            );
        };
        let allowed: Vec<&str> = requirement
            .hashes
            .iter()
            .filter_map(|h| h.strip_prefix("sha256:"))
            .collect();
        if allowed.is_empty() {
            bail!(
                "{}: `{}` lists only {} digests; tstore compares the sha256 the lock records, so \
                 add a `--hash=sha256:…` for {}",
                requirement.origin,
                requirement.text,
                requirement.hashes[0].split(':').next().unwrap_or("other"),
                pinned.filename
            );
        }
        if !allowed
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&pinned.sha256))
        {
            bail!(
                "{}: `{}` allows sha256 {}, but the lock {} pins {} with sha256 {}; update the \
                 --hash or lock again (`tstore lock {}`)",
                requirement.origin,
                requirement.text,
                allowed.join(" or "),
                lock_path.display(),
                pinned.filename,
                pinned.sha256,
                tier.name
            );
        }
    }
    Ok(())
}
