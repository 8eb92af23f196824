//! A one-node Garage (S3-compatible) on 127.0.0.1, for the remote-store
//! tests and the restore bench: sqlite metadata, replication factor 1, a key
//! and a bucket it may read and write. Stopped when dropped, as Garage's
//! documentation says: SIGTERM, then wait (see [`ProcessGroup`]).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::ProcessGroup;

pub struct Garage {
    server: ProcessGroup,
    /// `AWS_*` variables that point an S3 client at it, with the key.
    pub env: Vec<(String, String)>,
}

impl Garage {
    /// Starts `garage` (a binary on PATH) with its data under `dir` and a
    /// bucket named `bucket`.
    pub fn start(binary: &str, dir: &Path, bucket: &str) -> Self {
        let port = || {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (rpc, s3, admin) = (port(), port(), port());
        let conf = dir.join("garage.toml");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            &conf,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                d = dir.display(),
                secret = "1".repeat(64),
            ),
        )
        .unwrap();
        let mut server = ProcessGroup::spawn(
            "garage",
            Command::new(binary)
                .arg("-c")
                .arg(&conf)
                .arg("server")
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            libc::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", s3)).is_err() {
            if let Ok(Some(status)) = server.child().try_wait() {
                panic!("garage exited: {status}");
            }
            assert!(Instant::now() < deadline, "garage did not listen on {s3}");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The admin commands retry while the node settles.
        let cli = |args: &[&str]| -> String {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let out = Command::new(binary)
                    .arg("-c")
                    .arg(&conf)
                    .args(args)
                    .output()
                    .unwrap();
                if out.status.success() {
                    return String::from_utf8_lossy(&out.stdout).into_owned();
                }
                assert!(
                    Instant::now() < deadline,
                    "garage {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        let node = cli(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap().to_string();
        cli(&["layout", "assign", "-z", "dc1", "-c", "10G", &node]);
        cli(&["layout", "apply", "--version", "1"]);
        let key = cli(&["key", "create", "tstore"]);
        let field = |label: &str| {
            key.lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.trim()
                        .eq_ignore_ascii_case(label)
                        .then(|| value.trim().to_string())
                })
                .unwrap_or_else(|| panic!("no `{label}` in: {key}"))
        };
        let env = vec![
            ("AWS_ENDPOINT_URL".into(), format!("http://127.0.0.1:{s3}")),
            ("AWS_REGION".into(), "garage".into()),
            ("AWS_ACCESS_KEY_ID".into(), field("Key ID")),
            ("AWS_SECRET_ACCESS_KEY".into(), field("Secret key")),
        ];
        cli(&["bucket", "create", bucket]);
        cli(&[
            "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", "tstore",
        ]);
        Self { server, env }
    }

    /// Stops Garage; an error if it had to be killed.
    pub fn stop(&mut self) -> Result<(), String> {
        self.server.stop()
    }
}
