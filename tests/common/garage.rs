//! A one-node Garage (S3-compatible) on 127.0.0.1, for the remote-store
//! tests and the restore bench: sqlite metadata, replication factor 1, a key
//! and a bucket it may read and write. Stopped when dropped, as Garage's
//! documentation says: SIGTERM, then wait (see [`ProcessGroup`]).
//!
//! [`Node`] is one Garage process; `garage_cluster.rs` starts three.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::ProcessGroup;

/// Every test node shares this secret: nodes of one cluster must.
const RPC_SECRET: &str = "1111111111111111111111111111111111111111111111111111111111111111";

pub struct Garage {
    node: Node,
    /// `AWS_*` variables that point an S3 client at it, with the key.
    pub env: Vec<(String, String)>,
}

impl Garage {
    /// Starts `garage` (a binary on PATH) with its data under `dir` and a
    /// bucket named `bucket`.
    pub fn start(binary: &str, dir: &Path, bucket: &str) -> Self {
        let node = Node::start(binary, dir, 1);
        let id = node.id();
        node.cli(&["layout", "assign", "-z", "dc1", "-c", "10G", &id]);
        node.cli(&["layout", "apply", "--version", "1"]);
        let env = node.bucket_and_key(bucket);
        Self { node, env }
    }

    /// Stops Garage; an error if it had to be killed.
    pub fn stop(&mut self) -> Result<(), String> {
        self.node.stop()
    }
}

/// A TCP port on 127.0.0.1 nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One Garage process with its own ports and folders under `dir`; it can be
/// killed and started again on the same ports and data.
pub struct Node {
    binary: String,
    dir: PathBuf,
    conf: PathBuf,
    pub rpc: u16,
    pub s3: u16,
    server: Option<ProcessGroup>,
}

impl Node {
    /// Writes the node's configuration (sqlite metadata, `replication`
    /// copies of each block) and starts it.
    pub fn start(binary: &str, dir: &Path, replication: u8) -> Self {
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let conf = dir.join("garage.toml");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            &conf,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = {replication}\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{RPC_SECRET}\"\n\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                d = dir.display(),
            ),
        )
        .unwrap();
        let mut node = Self {
            binary: binary.into(),
            dir: dir.into(),
            conf,
            rpc,
            s3,
            server: None,
        };
        node.resume();
        node
    }

    /// Starts the process (again), and waits for its S3 port.
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "garage is already running");
        let mut server = ProcessGroup::spawn(
            "garage",
            Command::new(&self.binary)
                .arg("-c")
                .arg(&self.conf)
                .arg("server")
                .current_dir(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            libc::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.s3)).is_err() {
            if let Ok(Some(status)) = server.child().try_wait() {
                panic!("garage exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "garage did not listen on {}",
                self.s3
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.server = Some(server);
    }

    /// SIGKILL, as a machine that loses power: no shutdown at all.
    pub fn kill(&mut self) {
        let mut server = self.server.take().expect("garage is running");
        server.signal_leader(libc::SIGKILL);
        server
            .wait_leader(Duration::from_secs(10))
            .expect("garage died of SIGKILL");
        server.stop().unwrap();
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.server.as_ref().map(ProcessGroup::pid)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3)
    }

    /// `garage ARGS` against this node; retried while the node settles.
    pub fn cli(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(&self.binary)
                .arg("-c")
                .arg(&self.conf)
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
    }

    /// The node's public key (hex), without its address.
    pub fn id(&self) -> String {
        let id = self.cli(&["node", "id", "-q"]);
        id.trim().split('@').next().unwrap().to_string()
    }

    /// Creates `bucket` and a key that may read and write it; the `AWS_*`
    /// variables that reach it through this node.
    pub fn bucket_and_key(&self, bucket: &str) -> Vec<(String, String)> {
        let key = self.cli(&["key", "create", "tstore"]);
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
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_REGION".into(), "garage".into()),
            ("AWS_ACCESS_KEY_ID".into(), field("Key ID")),
            ("AWS_SECRET_ACCESS_KEY".into(), field("Secret key")),
        ];
        self.cli(&["bucket", "create", bucket]);
        self.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", "tstore",
        ]);
        env
    }

    /// Stops the node (SIGTERM, then wait); an error if it had to be killed.
    pub fn stop(&mut self) -> Result<(), String> {
        match self.server.take() {
            Some(mut server) => server.stop(),
            None => Ok(()),
        }
    }
}
