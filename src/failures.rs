//! Several failures of one job, reported as one error.
//!
//! Parallel steps (a tier's downloads, adopt's links) go on after one item
//! fails and report every failure at the end. The message lists them all;
//! the first failure's root cause stays the error's source, so a caller can
//! still tell what happened by type or kind (the binary recognises a full
//! disk by `io::ErrorKind` on the chain, never by text).

use std::fmt;

/// Collects the failures of one job's items.
#[derive(Default)]
pub struct Failures {
    messages: Vec<String>,
    first: Option<anyhow::Error>,
}

impl Failures {
    /// Adds a failure, described by its whole chain.
    pub fn push(&mut self, err: anyhow::Error) {
        self.push_described(format!("{err:#}"), err);
    }

    /// Adds a failure with a description of its own (which should say what
    /// `err` says).
    pub fn push_described(&mut self, message: String, err: anyhow::Error) {
        self.messages.push(message);
        self.first.get_or_insert(err);
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// `Ok` if nothing failed; else one error headed by `heading` (which
    /// may use [`Failures::len`]) listing every failure.
    pub fn into_result(self, heading: impl FnOnce(usize) -> String) -> Result<(), ItemsFailed> {
        match self.first {
            None => Ok(()),
            Some(first) => Err(ItemsFailed {
                heading: heading(self.messages.len()),
                messages: self.messages,
                first,
            }),
        }
    }
}

/// Some items of a job failed: each one's message, the first one's root
/// cause kept as the source.
#[derive(Debug)]
pub struct ItemsFailed {
    heading: String,
    messages: Vec<String>,
    first: anyhow::Error,
}

impl fmt::Display for ItemsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:\n  {}", self.heading, self.messages.join("\n  "))
    }
}

impl std::error::Error for ItemsFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.first.root_cause())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_is_listed_and_the_first_ones_kind_survives() {
        let mut failures = Failures::default();
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        failures.push(anyhow::Error::new(full).context("cannot write a.whl"));
        failures.push(anyhow::anyhow!("b.whl: sha256 does not match"));
        let err = anyhow::Error::new(
            failures
                .into_result(|n| format!("{n} of 5 downloads failed"))
                .unwrap_err(),
        );
        let text = err.to_string();
        assert!(text.starts_with("2 of 5 downloads failed:\n  cannot write a.whl: "));
        assert!(text.ends_with("\n  b.whl: sha256 does not match"));
        let kind = err
            .chain()
            .find_map(|cause| cause.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind);
        assert_eq!(kind, Some(std::io::ErrorKind::StorageFull));
    }

    #[test]
    fn nothing_failed_is_ok() {
        assert!(Failures::default().into_result(|_| unreachable!()).is_ok());
    }
}
