//! A three-node Garage cluster on 127.0.0.1, as a team would run one: three
//! processes with their own ports and folders, one zone each, replication
//! factor 3 (each block on every node; reads and writes need two of three),
//! the layout assigned and applied here, one bucket and one key. Each node
//! serves the S3 API; any of them may be killed and started again.

use std::path::Path;
use std::time::{Duration, Instant};

use super::garage::Node;

pub struct GarageCluster {
    pub nodes: Vec<Node>,
    /// `AWS_*` variables for the key, with node 0 as the endpoint.
    pub env: Vec<(String, String)>,
}

impl GarageCluster {
    /// Starts three nodes under `dir`, joins them, applies a layout with
    /// one zone per node, and creates `bucket`.
    pub fn start(binary: &str, dir: &Path, bucket: &str) -> Self {
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node::start(binary, &dir.join(format!("node{i}")), 3))
            .collect();
        let ids: Vec<String> = nodes.iter().map(Node::id).collect();
        for (node, id) in nodes.iter().zip(&ids).skip(1) {
            nodes[0].cli(&["node", "connect", &format!("{id}@127.0.0.1:{}", node.rpc)]);
        }
        for (i, id) in ids.iter().enumerate() {
            nodes[0].cli(&[
                "layout",
                "assign",
                "-z",
                &format!("zone{i}"),
                "-c",
                "1G",
                id,
            ]);
        }
        nodes[0].cli(&["layout", "apply", "--version", "1"]);
        let cluster = Self {
            env: Vec::new(),
            nodes,
        };
        cluster.wait_healthy();
        let env = cluster.nodes[0].bucket_and_key(bucket);
        Self { env, ..cluster }
    }

    /// The S3 endpoints of all nodes, node 0 first.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(Node::endpoint).collect()
    }

    /// Waits until every running node sees every node up and connected
    /// (after a start or a restart, with all three running: with one down
    /// it would wait until its deadline). One node's view is not enough: right
    /// after a restart, node 0 lists the restarted node as healthy while
    /// that node still has the other two as "never seen"; losing node 0
    /// then would leave two nodes that are not a quorum together, and every
    /// request would get 503 until they connect.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            loop {
                let status = node.cli(&["status"]);
                if !status.to_lowercase().contains("failed") && self.all_listed(&status) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not become healthy as {} sees it:\n{status}",
                    node.endpoint()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Starts node `i` again (after [`Node::kill`]), has a live node
    /// connect to it (as an operator would, rather than wait for the
    /// cluster's reconnection timer), and waits for a healthy cluster.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].resume();
        let id = self.nodes[i].id();
        let address = format!("{id}@127.0.0.1:{}", self.nodes[i].rpc);
        let other = (i + 1) % self.nodes.len();
        self.nodes[other].cli(&["node", "connect", &address]);
        self.wait_healthy();
    }

    fn all_listed(&self, status: &str) -> bool {
        self.nodes
            .iter()
            .all(|n| status.contains(&format!("127.0.0.1:{}", n.rpc)))
    }

    /// Stops every node; the first error, if one had to be killed.
    pub fn stop(&mut self) -> Result<(), String> {
        let mut result = Ok(());
        for node in &mut self.nodes {
            let stopped = node.stop();
            if result.is_ok() {
                result = stopped;
            }
        }
        result
    }
}
