//! Getting a store object into a venv: a hardlink (`auto`), else a copy;
//! a reflink only when asked for (`link-mode = "reflink"`).
//!
//! What works is probed once per (store, target) pair with a scratch file,
//! and reported once. An object at the filesystem's link limit (EMLINK) is
//! replaced in the store by a fresh copy, which the following links share.
//! A file that still cannot be linked the chosen way (another filesystem:
//! EXDEV) is copied instead, and counted, so a fallback never fails a
//! materialize half-way.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::bail;

use crate::config::LinkMode;
use crate::store::Store;

/// Recorded by the store with each generation, so it is the store's word;
/// linking is what produces it.
pub use crate::store::LinkMethod;

pub struct Linker {
    method: LinkMethod,
    /// Where fresh object copies are staged (the store's tmp directory).
    store_tmp: PathBuf,
    /// Files copied because the chosen method failed for them.
    pub copied_instead: AtomicU64,
    /// Objects replaced by a fresh copy because they reached the link limit.
    pub objects_renewed: AtomicU64,
}

/// The outcome of probing, with why a weaker method was chosen.
pub struct Probe {
    pub linker: Linker,
    pub fallback_reason: Option<String>,
}

impl Linker {
    /// Finds the best method `mode` allows between the store and `target_dir`.
    pub fn probe(mode: LinkMode, store: &Store, target_dir: &Path) -> anyhow::Result<Probe> {
        let source = store.temp_path("probe");
        fs_err::write(&source, b"tstore link probe")?;
        let dest = target_dir.join(format!(".tstore-probe-{}", std::process::id()));
        let try_method = |method: LinkMethod| -> io::Result<()> {
            let _ = std::fs::remove_file(&dest);
            let result = match method {
                LinkMethod::Reflink => reflink_copy::reflink(&source, &dest),
                LinkMethod::Hardlink => std::fs::hard_link(&source, &dest),
                LinkMethod::Copy => std::fs::copy(&source, &dest).map(drop),
            };
            let _ = std::fs::remove_file(&dest);
            result
        };
        let outcome = (|| {
            let reflink = || try_method(LinkMethod::Reflink);
            let hardlink = || try_method(LinkMethod::Hardlink);
            Ok(match mode {
                LinkMode::Copy => (LinkMethod::Copy, None),
                LinkMode::Reflink => match reflink() {
                    Ok(()) => (LinkMethod::Reflink, None),
                    Err(e) => bail!(
                        "--link-mode reflink: the filesystem of {} cannot reflink from the store ({e}); \
                         reflinks need XFS or btrfs with store and venv on the same filesystem. \
                         Use --link-mode auto",
                        target_dir.display()
                    ),
                },
                LinkMode::Hardlink => match hardlink() {
                    Ok(()) => (LinkMethod::Hardlink, None),
                    Err(e) => bail!(
                        "--link-mode hardlink: cannot hardlink from the store into {} ({e}); hardlinks \
                         need store and venv on the same filesystem. Use --link-mode auto or copy",
                        target_dir.display()
                    ),
                },
                // Hardlinks, as uv's default does: a reflink costs a new inode
                // and a clone call per file (measured 2.7x uv's hardlink time
                // for tekton-ai on XFS) and more metadata for the same shared
                // extents, so reflinks are used only when asked for.
                LinkMode::Auto => match hardlink() {
                    Ok(()) => (LinkMethod::Hardlink, None),
                    Err(hardlink_err) => (
                        LinkMethod::Copy,
                        Some(format!(
                            "the store ({}) and {} cannot share files ({hardlink_err}); copying, \
                             which costs full disk space. Put the store (TSTORE_HOME) on the venv's \
                             filesystem to share",
                            store.location().display(),
                            target_dir.display()
                        )),
                    ),
                },
            })
        })();
        let _ = std::fs::remove_file(&source);
        let (method, fallback_reason) = outcome?;
        Ok(Probe {
            linker: Linker {
                method,
                store_tmp: store.tmp_dir(),
                copied_instead: AtomicU64::new(0),
                objects_renewed: AtomicU64::new(0),
            },
            fallback_reason,
        })
    }

    /// A linker for a method already known to work (repairing a generation).
    pub fn with_method(method: LinkMethod, store: &Store) -> Self {
        Self {
            method,
            store_tmp: store.tmp_dir(),
            copied_instead: AtomicU64::new(0),
            objects_renewed: AtomicU64::new(0),
        }
    }

    pub fn method(&self) -> LinkMethod {
        self.method
    }

    /// Puts `object` at `dest` (which must not exist).
    pub fn link(&self, object: &Path, dest: &Path, executable: bool) -> io::Result<()> {
        let result = match self.method {
            LinkMethod::Hardlink => std::fs::hard_link(object, dest),
            LinkMethod::Reflink => reflink_copy::reflink(object, dest)
                .and_then(|()| set_private_mode(dest, executable)),
            LinkMethod::Copy => return copy_private(object, dest, executable),
        };
        match result {
            Ok(()) => Ok(()),
            Err(err) if crate::platform::is_link_limit(&err) => {
                self.renew_object(object)?;
                std::fs::hard_link(object, dest).or_else(|_| {
                    self.copied_instead.fetch_add(1, Ordering::Relaxed);
                    copy_private(object, dest, executable)
                })
            }
            Err(err) if is_fallback_error(&err) => {
                self.copied_instead.fetch_add(1, Ordering::Relaxed);
                let _ = std::fs::remove_file(dest);
                copy_private(object, dest, executable)
            }
            Err(err) => Err(err),
        }
    }
}

impl Linker {
    /// Replaces `object` with a fresh copy of itself (a new inode with one
    /// link), atomically: existing links keep the old inode.
    fn renew_object(&self, object: &Path) -> io::Result<()> {
        let tmp = &self.store_tmp;
        let fresh = tmp.join(format!(
            "renew-{}-{}",
            std::process::id(),
            crate::store::unique_suffix()
        ));
        std::fs::copy(object, &fresh)?;
        let mode = std::fs::metadata(object)?.permissions().mode() & 0o777;
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&fresh, object).inspect_err(|_| {
            let _ = std::fs::remove_file(&fresh);
        })?;
        self.objects_renewed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Errors after which a copy still gives a correct venv.
fn is_fallback_error(err: &io::Error) -> bool {
    crate::platform::is_unshareable(err)
}

fn copy_private(object: &Path, dest: &Path, executable: bool) -> io::Result<()> {
    std::fs::copy(object, dest)?;
    set_private_mode(dest, executable)
}

/// Private (copied or reflinked) files are ordinary writable files.
fn set_private_mode(dest: &Path, executable: bool) -> io::Result<()> {
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
}
