//! Installing uv itself when the machine has none: the pinned release's
//! wheel for this platform, found through the index's JSON simple API
//! (PEP 691), verified by the sha256 the index publishes, with its binary
//! extracted into the store's tools folder. `TSTORE_UV_INDEX_URL` names
//! another index than PyPI.

use std::path::Path;

use anyhow::{Context, bail};

use crate::http;
use crate::store::Store;

/// A wheel the index lists, as the index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexedWheel {
    url: String,
    filename: String,
    size: Option<u64>,
    sha256: String,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{filename} from {url} does not match the index: {what} is {actual}, the index says {expected}"
)]
struct MismatchError {
    filename: String,
    url: String,
    what: &'static str,
    expected: String,
    actual: String,
}

/// Installs uv `version` from the index, with its binary at `target`.
pub fn install(store: &Store, version: &str, target: &Path) -> anyhow::Result<()> {
    let client = http::client()?;
    let index =
        std::env::var("TSTORE_UV_INDEX_URL").unwrap_or_else(|_| "https://pypi.org/simple".into());
    let url = format!("{}/uv/", index.trim_end_matches('/'));
    let project = read_project_page(&client, &url)?;
    let wheel = wheel_for_this_machine(&project, version, &url)?;
    let work = crate::store::tmp::temp_dir(store, "uv-install")?;
    let downloaded = work.path().join(&wheel.filename);
    let got = http::download(
        &client,
        http::Origin::Url(&wheel.url),
        &downloaded,
        &crate::progress::Silent,
    )?;
    got.check(&wheel.sha256, wheel.size)
        .map_err(|mismatch| MismatchError {
            filename: wheel.filename.clone(),
            url: wheel.url.clone(),
            what: mismatch.what,
            expected: mismatch.expected,
            actual: mismatch.actual,
        })?;
    extract_binary(&downloaded, &wheel.filename, version, target)
}

/// The project's page in the JSON simple API.
fn read_project_page(
    client: &reqwest::blocking::Client,
    url: &str,
) -> anyhow::Result<serde_json::Value> {
    client
        .get(url)
        .header("Accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.bytes())
        .with_context(|| format!("cannot read {url}"))
        .and_then(|body| {
            serde_json::from_slice(&body).with_context(|| format!("unexpected answer from {url}"))
        })
}

/// The wheel of uv `version` built for this OS and CPU, from `project`
/// (the page read from `url`).
fn wheel_for_this_machine(
    project: &serde_json::Value,
    version: &str,
    url: &str,
) -> anyhow::Result<IndexedWheel> {
    let arch = std::env::consts::ARCH;
    let platform_word = match std::env::consts::OS {
        "linux" => "manylinux",
        "macos" => "macosx",
        other => bail!(
            "installing uv automatically is not supported on {other}: install uv and set TSTORE_UV"
        ),
    };
    let prefix = format!("uv-{version}-");
    let files = project["files"]
        .as_array()
        .context("the index answered without a file list")?;
    let file = files
        .iter()
        .find(|f| {
            let name = f["filename"].as_str().unwrap_or("");
            name.starts_with(&prefix)
                && name.ends_with(".whl")
                && name.contains(platform_word)
                && (name.contains(arch) || (arch == "aarch64" && name.contains("arm64")))
        })
        .with_context(|| {
            format!(
                "uv {version} has no wheel for {arch} on {} at {url}",
                std::env::consts::OS
            )
        })?;
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_string();
    Ok(IndexedWheel {
        url: text(&file["url"]),
        filename: text(&file["filename"]),
        size: file["size"].as_u64(),
        sha256: text(&file["hashes"]["sha256"]),
    })
}

/// Copies the uv binary out of the wheel at `wheel` to `target`, executable,
/// through a partial file so `target` is whole or absent.
fn extract_binary(
    wheel: &Path,
    filename: &str,
    version: &str,
    target: &Path,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let mut archive = zip::ZipArchive::new(fs_err::File::open(wheel)?)?;
    let member = format!("uv-{version}.data/scripts/uv");
    let mut entry = archive
        .by_name(&member)
        .with_context(|| format!("{filename} has no {member}"))?;
    let dir = target.parent().context("uv target has no parent")?;
    fs_err::create_dir_all(dir)?;
    let partial = dir.join(format!(".uv.partial-{}", std::process::id()));
    {
        let mut out = fs_err::File::create(&partial)?;
        std::io::copy(&mut entry, &mut out)?;
    }
    fs_err::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
    fs_err::rename(&partial, target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_wheel_for_this_machine_with_its_hash() {
        let arch = std::env::consts::ARCH;
        let platform = if cfg!(target_os = "macos") {
            "macosx_11_0"
        } else {
            "manylinux_2_17"
        };
        let ours = format!("uv-0.1.0-py3-none-{platform}_{arch}.whl");
        let page = serde_json::json!({ "files": [
            { "filename": "uv-0.1.0.tar.gz", "url": "https://i/sdist", "hashes": { "sha256": "00" } },
            { "filename": "uv-0.1.0-py3-none-win_amd64.whl", "url": "https://i/win", "hashes": { "sha256": "11" } },
            { "filename": "uv-0.2.0-py3-none-any.whl", "url": "https://i/other", "hashes": { "sha256": "22" } },
            { "filename": ours, "url": "https://i/ours", "size": 5, "hashes": { "sha256": "33" } },
        ]});
        let wheel = wheel_for_this_machine(&page, "0.1.0", "https://i/uv/").unwrap();
        assert_eq!(
            wheel,
            IndexedWheel {
                url: "https://i/ours".into(),
                filename: ours,
                size: Some(5),
                sha256: "33".into(),
            }
        );
        let err = wheel_for_this_machine(&page, "9.9.9", "https://i/uv/").unwrap_err();
        assert!(err.to_string().contains("uv 9.9.9 has no wheel"), "{err}");
    }

    #[test]
    fn the_binary_is_extracted_executable() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("uv.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        zip.start_file(
            "uv-0.1.0.data/scripts/uv",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(b"#!/bin/sh\n").unwrap();
        zip.finish().unwrap();
        let target = dir.path().join("tools/uv-0.1.0/uv");
        extract_binary(&wheel, "uv.whl", "0.1.0", &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"#!/bin/sh\n");
        let mode = target.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111);
        assert!(extract_binary(&wheel, "uv.whl", "0.2.0", &target).is_err());
    }
}
