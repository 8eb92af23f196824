//! Shared test harness: wheels built by the test, a static file server on
//! 127.0.0.1, lock and tiers.toml writers, and a runner for the real binary.
#![allow(dead_code)]

pub mod garage;
pub mod garage_cluster;
pub mod process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest;

/// A scratch world: store, HOME (venvs go to ~/venvs) and a project dir.
pub struct World {
    pub dir: tempfile::TempDir,
}

/// A scratch folder `tstore-test-*` in the temp folder. `.ci/run` points
/// TMPDIR at a folder of its own for the suite, and afterwards fails if a
/// process still names that folder in its working directory or command line
/// (a server or a child of tstore the tests left running).
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tstore-test-")
        .tempdir()
        .unwrap()
}

impl World {
    pub fn new() -> Self {
        let dir = scratch_dir();
        for sub in ["store", "home", "project", "wheels"] {
            fs_err::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn store(&self) -> PathBuf {
        self.path().join("store")
    }
    pub fn home(&self) -> PathBuf {
        self.path().join("home")
    }
    pub fn project(&self) -> PathBuf {
        self.path().join("project")
    }
    pub fn wheels(&self) -> PathBuf {
        self.path().join("wheels")
    }
    pub fn venv(&self, tier: &str) -> PathBuf {
        self.home().join("venvs").join(tier)
    }

    /// `tstore ARGS` in the project dir with this world's store and HOME.
    pub fn tstore(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tstore"));
        cmd.args(args)
            .current_dir(self.project())
            .env("TSTORE_HOME", self.store())
            .env("HOME", self.home())
            .env_remove("TSTORE_CONFIG")
            .env_remove("XDG_DATA_HOME");
        cmd
    }

    /// Runs tstore and returns its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.tstore(args).output().unwrap()
    }

    /// Runs tstore from `project` with its store at `home` (a test's own
    /// filesystem, say) and returns its output, whatever the exit status.
    pub fn run_in(&self, project: &Path, home: &Path, args: &[&str]) -> Output {
        self.tstore(args)
            .current_dir(project)
            .env("TSTORE_HOME", home)
            .output()
            .unwrap()
    }

    /// Runs tstore and panics with its stderr unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "tstore {args:?} failed:\n{stderr}");
        stderr + &String::from_utf8_lossy(&out.stdout)
    }

    /// Runs tstore, expects failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "tstore {args:?} should have failed:\n{stderr}"
        );
        stderr
    }

    pub fn write_tiers(&self, text: &str) {
        fs_err::write(self.project().join("tiers.toml"), text).unwrap();
    }

    /// Number of distributions and objects the store has recorded.
    pub fn store_counts(&self) -> (u64, u64) {
        let db = self.store().join("v1/store.db");
        if !db.exists() {
            return (0, 0);
        }
        let conn = rusqlite::Connection::open(db).unwrap();
        let dists: i64 = conn
            .query_row("SELECT count(*) FROM distributions", [], |r| r.get(0))
            .unwrap();
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM objects", [], |r| r.get(0))
            .unwrap();
        (dists as u64, objects as u64)
    }

    /// Files under the store's objects/ directory and their total size.
    pub fn object_files(&self) -> (u64, u64) {
        let mut count = 0;
        let mut bytes = 0;
        let objects = self.store().join("v1/objects");
        if let Ok(shards) = fs_err::read_dir(&objects) {
            for shard in shards {
                for entry in fs_err::read_dir(shard.unwrap().path()).unwrap() {
                    count += 1;
                    bytes += entry.unwrap().metadata().unwrap().len();
                }
            }
        }
        (count, bytes)
    }
}

/// Runs `code` with the venv's interpreter.
pub fn python(venv: &Path, code: &str) -> Output {
    Command::new(venv.join("bin/python"))
        .args(["-c", code])
        .output()
        .unwrap()
}

pub fn python_ok(venv: &Path, code: &str) -> String {
    let out = python(venv, code);
    assert!(
        out.status.success(),
        "python -c {code:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One file of a test wheel.
#[derive(Clone)]
pub struct Entry {
    pub name: String,
    pub content: Vec<u8>,
    pub unix_mode: u32,
}

/// Builds a wheel with a correct RECORD (unless told to lie).
#[derive(Clone)]
pub struct WheelBuilder {
    pub name: String,
    pub version: String,
    pub tag: String,
    pub entries: Vec<Entry>,
    pub entry_points: Option<String>,
    pub metadata_name: Option<String>,
    /// An entry whose RECORD line gives the hash of other content.
    pub corrupt_record_for: Option<String>,
    /// An entry whose RECORD line gives a size one byte too large.
    pub wrong_record_size_for: Option<String>,
    pub requires: Vec<String>,
}

impl WheelBuilder {
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            tag: "py3-none-any".into(),
            entries: Vec::new(),
            entry_points: None,
            metadata_name: None,
            corrupt_record_for: None,
            wrong_record_size_for: None,
            requires: Vec::new(),
        }
    }

    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.into();
        self
    }

    pub fn file(mut self, name: &str, content: &str) -> Self {
        self.entries.push(Entry {
            name: name.into(),
            content: content.as_bytes().to_vec(),
            unix_mode: 0o100644,
        });
        self
    }

    pub fn raw(mut self, name: &str, content: &[u8], unix_mode: u32) -> Self {
        self.entries.push(Entry {
            name: name.into(),
            content: content.to_vec(),
            unix_mode,
        });
        self
    }

    pub fn console_script(mut self, name: &str, target: &str) -> Self {
        let text = self
            .entry_points
            .get_or_insert_with(|| "[console_scripts]\n".into());
        text.push_str(&format!("{name} = {target}\n"));
        self
    }

    pub fn requires(mut self, req: &str) -> Self {
        self.requires.push(req.into());
        self
    }

    fn dist_info(&self) -> String {
        format!("{}-{}.dist-info", self.name.replace('-', "_"), self.version)
    }

    pub fn filename(&self) -> String {
        format!(
            "{}-{}-{}.whl",
            self.name.replace('-', "_"),
            self.version,
            self.tag
        )
    }

    /// Writes the wheel into `dir`; returns its path.
    pub fn build(&self, dir: &Path) -> PathBuf {
        let path = dir.join(self.filename());
        let file = fs_err::File::create(&path).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let mut record = String::new();
        let dist_info = self.dist_info();
        let mut metadata = format!(
            "Metadata-Version: 2.1\nName: {}\nVersion: {}\n",
            self.metadata_name.as_deref().unwrap_or(&self.name),
            self.version
        );
        for req in &self.requires {
            metadata.push_str(&format!("Requires-Dist: {req}\n"));
        }
        let mut all = self.entries.clone();
        all.push(Entry {
            name: format!("{dist_info}/METADATA"),
            content: metadata.into_bytes(),
            unix_mode: 0o100644,
        });
        all.push(Entry {
            name: format!("{dist_info}/WHEEL"),
            content: format!(
                "Wheel-Version: 1.0\nGenerator: tstore-tests\nRoot-Is-Purelib: true\nTag: {}\n",
                self.tag
            )
            .into_bytes(),
            unix_mode: 0o100644,
        });
        if let Some(eps) = &self.entry_points {
            all.push(Entry {
                name: format!("{dist_info}/entry_points.txt"),
                content: eps.clone().into_bytes(),
                unix_mode: 0o100644,
            });
        }
        for entry in &all {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(entry.unix_mode);
            if entry.unix_mode & 0o170000 == 0o120000 {
                zip.add_symlink(
                    &entry.name,
                    String::from_utf8_lossy(&entry.content),
                    options,
                )
                .unwrap();
            } else {
                zip.start_file(&entry.name, options).unwrap();
                zip.write_all(&entry.content).unwrap();
            }
            let mut digest = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&entry.content));
            if self.corrupt_record_for.as_deref() == Some(entry.name.as_str()) {
                digest = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(b"something else"));
            }
            let mut size = entry.content.len();
            if self.wrong_record_size_for.as_deref() == Some(entry.name.as_str()) {
                size += 1;
            }
            record.push_str(&format!("{},sha256={digest},{size}\n", entry.name));
        }
        record.push_str(&format!("{dist_info}/RECORD,,\n"));
        zip.start_file(
            format!("{dist_info}/RECORD"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(record.as_bytes()).unwrap();
        zip.finish().unwrap();
        path
    }
}

pub fn sha256_hex(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(fs_err::read(path).unwrap()))
}

/// A package entry of a pylock the test writes.
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub marker: Option<String>,
    /// (url, sha256, size) of each wheel.
    pub wheels: Vec<(String, String, u64)>,
}

impl LockedPackage {
    /// A package with one wheel served at `base_url/<file name>`.
    pub fn served(wheel: &Path, base_url: &str) -> Self {
        let filename = wheel.file_name().unwrap().to_string_lossy().into_owned();
        let (name, rest) = filename.split_once('-').unwrap();
        let version = rest.split('-').next().unwrap();
        Self {
            name: name.replace('_', "-"),
            version: version.into(),
            marker: None,
            wheels: vec![(
                format!("{base_url}/{filename}"),
                sha256_hex(wheel),
                fs_err::metadata(wheel).unwrap().len(),
            )],
        }
    }
}

pub fn write_pylock(path: &Path, packages: &[LockedPackage]) {
    let mut text = String::from("lock-version = \"1.0\"\ncreated-by = \"tstore-tests\"\n");
    for p in packages {
        text.push_str(&format!(
            "\n[[packages]]\nname = \"{}\"\nversion = \"{}\"\n",
            p.name, p.version
        ));
        if let Some(marker) = &p.marker {
            text.push_str(&format!("marker = \"{marker}\"\n"));
        }
        text.push_str("wheels = [\n");
        for (url, sha, size) in &p.wheels {
            text.push_str(&format!(
                "  {{ url = \"{url}\", size = {size}, hashes = {{ sha256 = \"{sha}\" }} }},\n"
            ));
        }
        text.push_str("]\n");
    }
    fs_err::write(path, text).unwrap();
}

/// Drops the wheels' sizes from the lock at `lock`, as a lock may: tstore
/// then downloads each wheel into a file, not into memory.
pub fn drop_wheel_sizes(lock: &Path) {
    let text = fs_err::read_to_string(lock).unwrap();
    let without: String = text
        .split(", size = ")
        .enumerate()
        .map(|(i, part)| match i {
            0 => part,
            _ => part.trim_start_matches(|c: char| c.is_ascii_digit()),
        })
        .collect();
    assert!(!without.contains("size ="), "{without}");
    fs_err::write(lock, without).unwrap();
}

/// A static file server on 127.0.0.1 that counts the requests it answers.
pub struct FileServer {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
    /// While > 0, answer 503 and count down (to test retries).
    pub fail_next: Arc<AtomicUsize>,
    /// When > 0, files are sent at about this many bytes per second (to
    /// interrupt a download midway).
    pub bytes_per_second: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl FileServer {
    pub fn start(root: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let fail_next = Arc::new(AtomicUsize::new(0));
        let bytes_per_second = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (root, req, fail, rate, halt) = (
            root.to_path_buf(),
            requests.clone(),
            fail_next.clone(),
            bytes_per_second.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (root, req, fail, rate) =
                    (root.clone(), req.clone(), fail.clone(), rate.clone());
                std::thread::spawn(move || serve(stream, &root, &req, &fail, &rate));
            }
        });
        Self {
            url: format!("http://{addr}"),
            requests,
            fail_next,
            bytes_per_second,
            stop,
            addr,
        }
    }

    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    mut stream: TcpStream,
    root: &Path,
    requests: &AtomicUsize,
    fail_next: &AtomicUsize,
    bytes_per_second: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/');
    let rate = bytes_per_second.load(Ordering::SeqCst);
    let reply = |stream: &mut TcpStream, status: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        if rate == 0 {
            let _ = stream.write_all(body);
            return;
        }
        // A tenth of the rate every 100 ms, until the client hangs up.
        for chunk in body.chunks((rate / 10).max(1)) {
            if stream.write_all(chunk).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    if fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        reply(&mut stream, "503 Service Unavailable", b"try later");
        return;
    }
    match fs_err::File::open(root.join(path)) {
        Ok(mut file) => {
            let mut body = Vec::new();
            file.read_to_end(&mut body).unwrap();
            reply(&mut stream, "200 OK", &body);
        }
        Err(_) => reply(&mut stream, "404 Not Found", b"not found"),
    }
}

/// `uv pip check` on a venv: uv agrees it is correctly installed.
pub fn assert_uv_pip_check(venv: &Path) {
    let check = Command::new("uv")
        .args(["pip", "check", "--python"])
        .arg(venv.join("bin/python"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "uv pip check: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

pub fn mode_of(path: &Path) -> u32 {
    fs_err::metadata(path).unwrap().permissions().mode() & 0o7777
}

pub fn inode_of(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs_err::metadata(path).unwrap().ino()
}

/// A filesystem mounted for the life of the value. Tests that need one skip,
/// saying why, where mounting is not permitted.
pub struct Mount {
    dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Mount {
    /// A tmpfs of `size` (e.g. "64m").
    pub fn tmpfs(size: &str) -> Result<Self, String> {
        let dir = scratch_dir();
        let path = dir.path().join("mnt");
        fs_err::create_dir(&path).map_err(|e| e.to_string())?;
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&path),
        )?;
        Ok(Self { dir, path })
    }

    /// A tmpfs of `size`, or `None` after saying why the test skips
    /// (mounting is not permitted here).
    pub fn tmpfs_or_skip(size: &str) -> Option<Self> {
        Self::tmpfs(size)
            .inspect_err(|reason| eprintln!("skipped: cannot mount a tmpfs here ({reason})"))
            .ok()
    }

    /// Gives a tmpfs a new `size` (e.g. to make room on a full one).
    pub fn resize_tmpfs(&self, size: &str) -> Result<(), String> {
        run_ok(
            Command::new("mount")
                .args(["-o", &format!("remount,size={size}")])
                .arg(&self.path),
        )
    }

    /// A loop-mounted image of `size` made by `mkfs.<fstype> MKFS_ARGS`.
    pub fn image(fstype: &str, size: &str, mkfs_args: &[&str]) -> Result<Self, String> {
        let dir = scratch_dir();
        let image = dir.path().join(format!("{fstype}.img"));
        let path = dir.path().join("mnt");
        fs_err::create_dir(&path).map_err(|e| e.to_string())?;
        run_ok(Command::new("truncate").args(["-s", size]).arg(&image))?;
        run_ok(
            Command::new(format!("mkfs.{fstype}"))
                .args(mkfs_args)
                .arg(&image),
        )?;
        run_ok(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&path),
        )?;
        Ok(Self { dir, path })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success())
        {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

fn run_ok(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Writes `lock` naming `<name>-1.0-py3-none-any.whl` from `wheels` for each
/// name, served at `base_url`.
pub fn lock_served(lock: &Path, wheels: &Path, names: &[&str], base_url: &str) {
    let packages: Vec<LockedPackage> = names
        .iter()
        .map(|name| {
            LockedPackage::served(
                &wheels.join(format!("{name}-1.0-py3-none-any.whl")),
                base_url,
            )
        })
        .collect();
    write_pylock(lock, &packages);
}

/// A project folder `root/project` whose tiers.toml puts venvs under
/// `root/venvs` (so store, project and venvs share `root`'s filesystem);
/// `tiers` is the rest of the file.
pub fn project_at(root: &Path, tiers: &str) -> PathBuf {
    let project = root.join("project");
    fs_err::create_dir_all(&project).unwrap();
    fs_err::write(
        project.join("tiers.toml"),
        format!("venv-root = \"{}\"\n{tiers}", root.join("venvs").display()),
    )
    .unwrap();
    project
}

/// A uv that logs each invocation's arguments to `log` and runs the real one.
pub fn logging_uv(world: &World, log: &Path) -> PathBuf {
    let real = std::process::Command::new("sh")
        .args(["-c", "command -v uv"])
        .output()
        .unwrap();
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    assert!(!real.is_empty(), "uv must be on PATH for this test");
    let wrapper = world.path().join("logging-uv");
    fs_err::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{real}' \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    fs_err::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    wrapper
}

/// How many logged uv calls start with `what`.
pub fn uv_calls(log: &Path, what: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(what))
        .count()
}

/// The version `tier`'s lock pins for `package` ("" when absent).
pub fn locked_version(world: &World, tier: &str, package: &str) -> String {
    let text = fs_err::read_to_string(world.project().join(format!("pylock.{tier}.toml"))).unwrap();
    let lock: toml::Value = toml::from_str(&text).unwrap();
    lock["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(package))
        .map(|p| p["version"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Runs tstore with ARGS on a pseudo-terminal (util-linux `script`), in the
/// world's project with its store and HOME, without the variables that
/// change what a terminal shows unless `vars` sets them; returns whether it
/// succeeded and everything it wrote there.
pub fn on_terminal(world: &World, vars: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let tstore = env!("CARGO_BIN_EXE_tstore");
    let line = std::iter::once(tstore)
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let log = world.path().join("terminal.log");
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-q", "-e", "-c", &line])
        .arg(&log)
        .current_dir(world.project())
        .env("TSTORE_HOME", world.store())
        .env("HOME", world.home())
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null());
    for name in [
        "NO_COLOR",
        "CLICOLOR_FORCE",
        "CLICOLOR",
        "TSTORE_CONFIG",
        "TSTORE_NO_PROGRESS",
    ] {
        cmd.env_remove(name);
    }
    for (name, value) in vars {
        cmd.env(name, value);
    }
    let out = cmd
        .output()
        .expect("util-linux `script` runs the pseudo-terminal tests");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `len` bytes that do not compress (xorshift from `seed`), so a wheel
/// holding them is as large as its content.
pub fn incompressible_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.max(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Whether some folder under `dir` holds a file (an object in a shard).
pub fn any_file_under(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|shards| {
        shards.flatten().any(|shard| {
            std::fs::read_dir(shard.path())
                .is_ok_and(|inside| inside.flatten().any(|e| e.path().is_file()))
        })
    })
}

/// Whether a stage in the store's `tmp` folder holds an object yet.
pub fn staging_objects(tmp: &Path) -> bool {
    std::fs::read_dir(tmp).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with("stage-") && any_file_under(&e.path())
        })
    })
}

/// Runs `command` (quiet) until `reached` holds, then kills it with
/// SIGKILL if it still runs; waits for it to end. Returns whether it was
/// killed (a fast run may end first).
pub fn kill_once_reached(command: &mut Command, reached: &dyn Fn() -> bool, point: &str) -> bool {
    let mut child = process::ProcessGroup::spawn(
        point,
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
        libc::SIGKILL,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !reached() && child.child().try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "never reached {point}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let killed = child.child().try_wait().unwrap().is_none();
    if killed {
        child.signal_leader(libc::SIGKILL);
    }
    child
        .wait_leader(std::time::Duration::from_secs(30))
        .expect("ended");
    let left = child.survivors(std::time::Duration::from_secs(5));
    assert!(left.is_empty(), "{point}: still running: {left:#?}");
    killed
}

/// Asserts that the store's `tmp` folder is empty (the next open cleared
/// what a killed run left).
pub fn assert_tmp_cleared(tmp: &Path) {
    let left: Vec<_> = fs_err::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the next open cleared tmp/: {left:?}");
}
