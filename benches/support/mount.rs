//! The filesystem under test as a parameter (`--fs ext4|xfs|here`): a file
//! image made with `mkfs`, loop-mounted for the life of a [`Mounted`], so a
//! run starts on an empty filesystem of a known kind.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop-mounted image; unmounted when dropped, so also when the bench
/// panics (unwinding drops it) or returns early.
pub struct Mounted {
    pub path: PathBuf,
    // Holds the image and the mount point; removed after the unmount, as
    // fields drop after `Drop::drop` has run.
    _dir: tempfile::TempDir,
}

/// What `--fs` names: `here` (or nothing) is the folder the bench would use
/// anyway (`TSTORE_BENCH_DIR`, else the temp dir); `ext4` is a journaled ext4
/// image, `xfs` an XFS one (with reflink support, mkfs's default), each of
/// `size` (sparse, e.g. "20G") in that folder.
pub fn filesystem_under_test(fs: Option<&str>, size: &str) -> Result<Option<Mounted>, String> {
    let mkfs: &[&str] = match fs.unwrap_or("here") {
        "here" => return Ok(None),
        // The inode tables and journal written now: ext4 would otherwise
        // zero them in the background for minutes, under the measures.
        "ext4" => &[
            "mkfs.ext4",
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
        ],
        "xfs" => &["mkfs.xfs", "-q", "-f"],
        other => return Err(format!("--fs {other}: use ext4, xfs or here")),
    };
    let dir = tempfile::Builder::new()
        .prefix("tstore-bench-fs-")
        .tempdir_in(super::base_dir())
        .map_err(|e| format!("image folder: {e}"))?;
    let image = dir.path().join("fs.img");
    let path = dir.path().join("mnt");
    std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    super::try_run(Command::new("truncate").args(["-s", size]).arg(&image))?;
    super::try_run(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&image))?;
    super::try_run(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&path),
    )?;
    Ok(Some(Mounted { path, _dir: dir }))
}

impl Mounted {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds it (a child left behind): detach it now,
            // the kernel finishes when the last user goes.
            eprintln!("umount {} failed; detaching it lazily", self.path.display());
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
