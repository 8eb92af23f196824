//! A team remote on a three-node Garage cluster on 127.0.0.1 (see
//! `common/garage_cluster.rs`): push, pull and `materialize --remote`
//! through any node, a node lost mid-pull (another node, then the endpoint
//! itself), and two pushers at once. Small tiers, so each test takes
//! seconds.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::garage_cluster::GarageCluster;
use common::*;

const REMOTE: &str = "s3://team/store";

/// `t1` (alpha, gamma) and `t2` (alpha); `wide` (WIDE packages of a MiB
/// each that does not compress), for a pull that lasts long enough to lose
/// a node during it.
const WIDE: usize = 8;

fn tiers() -> String {
    let wide: Vec<String> = wide_names().iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "[tiers.t1]\nrequirements = [\"alpha\", \"gamma\"]\n\
         [tiers.t2]\nrequirements = [\"alpha\"]\n\
         [tiers.wide]\nrequirements = [{}]\n",
        wide.join(", ")
    )
}

/// Wheels served by a local index, and a store that materialized them.
struct Team {
    world: World,
    server: FileServer,
    /// Whether the `wide` packages were built (they take a while).
    wide: bool,
}

fn wide_names() -> Vec<String> {
    (0..WIDE).map(|i| format!("wide{i:02}")).collect()
}

impl Team {
    /// With the `wide` packages when `wide`.
    fn new(wide: bool) -> Self {
        let world = World::new();
        WheelBuilder::new("alpha", "1.0")
            .file("alpha/__init__.py", "VALUE = 'alpha'\n")
            .file("alpha/big.bin", &"x".repeat(200_000))
            .build(&world.wheels());
        WheelBuilder::new("gamma", "1.0")
            .file("gamma/__init__.py", "NAME = 'gamma'\n")
            .build(&world.wheels());
        let built = if wide { wide_names() } else { Vec::new() };
        for (i, name) in built.iter().enumerate() {
            WheelBuilder::new(name, "1.0")
                .file(&format!("{name}/__init__.py"), "")
                .raw(
                    &format!("{name}/data.bin"),
                    &incompressible_bytes(i as u64 + 7, 1 << 20),
                    0o644,
                )
                .build(&world.wheels());
        }
        let server = FileServer::start(&world.wheels());
        let team = Self {
            world,
            server,
            wide,
        };
        team.setup(&team.world);
        team
    }

    /// Gives `world` the tiers and locks, and materializes them from the
    /// index (only t1 and t2: `wide` is pushed from this store alone).
    fn setup(&self, world: &World) {
        let wide = wide_names();
        let wide: Vec<&str> = wide.iter().map(String::as_str).collect();
        world.write_tiers(&tiers());
        let mut tiers = vec![("t1", &["alpha", "gamma"][..]), ("t2", &["alpha"][..])];
        if self.wide {
            tiers.push(("wide", &wide[..]));
        }
        for (tier, names) in tiers {
            lock_served(
                &world.project().join(format!("pylock.{tier}.toml")),
                &self.world.wheels(),
                names,
                &self.server.url,
            );
        }
    }

    /// Another store with the same tiers and locks, filled from the index.
    fn another_store(&self) -> World {
        let world = World::new();
        self.setup(&world);
        world.ok(&["materialize", "--frozen", "t1", "t2"]);
        world
    }
}

/// A machine with the tiers.toml only: locks come from the remote.
fn fresh() -> World {
    let world = World::new();
    world.write_tiers(&tiers());
    world
}

/// The garage binary, or `None` (the test skips) when it is missing and
/// `.ci/run` (TSTORE_REQUIRE_SERVERS) does not require it.
fn garage() -> Option<String> {
    let garage = std::env::var("TSTORE_TEST_GARAGE").unwrap_or_else(|_| "garage".into());
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {garage}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found || std::env::var_os("TSTORE_REQUIRE_SERVERS").is_none(),
        "{garage} is required here (TSTORE_REQUIRE_SERVERS is set)"
    );
    if !found {
        eprintln!("skipped: no garage binary (.ci/run builds it with cargo install garage)");
    }
    found.then_some(garage)
}

fn command(world: &World, args: &[&str], env: &[(String, String)]) -> Command {
    let mut cmd = world.tstore(args);
    cmd.env_remove(tstore_endpoints());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn tstore_endpoints() -> &'static str {
    "TSTORE_REMOTE_ENDPOINTS"
}

/// Runs tstore with `env` added; whether it succeeded, stderr then stdout.
fn run_env(world: &World, args: &[&str], env: &[(String, String)]) -> (bool, String) {
    let out = command(world, args, env).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.success(), text)
}

fn ok_env(world: &World, args: &[&str], env: &[(String, String)]) -> String {
    let (ok, text) = run_env(world, args, env);
    assert!(ok, "tstore {args:?}: {text}");
    text
}

fn spawn_env(world: &World, args: &[&str], env: &[(String, String)]) -> Child {
    command(world, args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_ok(child: Child, what: &str) -> String {
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.status.success(), "{what}: {text}");
    text
}

/// `env` with the S3 endpoint replaced by `endpoint`.
fn through(env: &[(String, String)], endpoint: &str) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| {
            let v = if k == "AWS_ENDPOINT_URL" {
                endpoint.to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// Whether the store's tmp folder holds something: a pack's objects are
/// arriving.
fn receiving(world: &World) -> bool {
    fs_err::read_dir(world.store().join("v1/tmp")).is_ok_and(|mut d| d.next().is_some())
}

/// `verify` is clean and nothing is left in the store's tmp folder.
fn assert_clean(world: &World) {
    let out = world.ok(&["verify"]);
    assert!(out.contains("all intact"), "{out}");
    assert!(!receiving(world), "nothing half-received is left");
}

#[test]
fn push_pull_and_materialize_through_any_node_and_two_pushers_at_once() {
    let Some(garage) = garage() else { return };
    let dir = scratch_dir();
    let mut cluster = GarageCluster::start(&garage, dir.path(), "team");
    let endpoints = cluster.endpoints();
    let team = Team::new(false);
    team.world.ok(&["materialize", "--frozen", "t1", "t2"]);

    // Pushed through node 0, pulled through node 1, materialized through
    // node 2: each node serves the whole bucket.
    let env0 = cluster.env.clone();
    let out = ok_env(
        &team.world,
        &["push", "--remote", REMOTE, "t1", "t2"],
        &env0,
    );
    assert!(out.contains("2 new distribution records"), "{out}");
    let dst = fresh();
    let out = ok_env(
        &dst,
        &["pull", "--remote", REMOTE, "t1", "t2"],
        &through(&env0, &endpoints[1]),
    );
    assert!(
        out.contains("t1 + t2: pulled 2 distributions in 4 packs"),
        "{out}"
    );
    ok_env(&dst, &["materialize", "--offline", "t1", "t2"], &[]);
    python_ok(&dst.venv("t1"), "import alpha, gamma");
    assert_clean(&dst);

    let third = fresh();
    for tier in ["t1", "t2"] {
        let lock = format!("pylock.{tier}.toml");
        fs_err::copy(
            team.world.project().join(&lock),
            third.project().join(&lock),
        )
        .unwrap();
    }
    let out = ok_env(
        &third,
        &["materialize", "--frozen", "--remote", REMOTE, "t1"],
        &through(&env0, &endpoints[2]),
    );
    assert!(out.contains("0 downloaded"), "{out}");
    python_ok(&third.venv("t1"), "import alpha, gamma");

    // Two stores push overlapping tiers to an empty prefix at once.
    let other = team.another_store();
    let both = "s3://team/both";
    let one = spawn_env(&team.world, &["push", "--remote", both, "t1"], &env0);
    let two = spawn_env(
        &other,
        &["push", "--remote", both, "t1", "t2"],
        &through(&env0, &endpoints[1]),
    );
    wait_ok(one, "first pusher");
    wait_ok(two, "second pusher");
    let out = ok_env(&team.world, &["push", "--remote", both, "t1", "t2"], &env0);
    assert!(
        out.contains(": 0 packs (0 B)"),
        "nothing was left out: {out}"
    );
    let puller = fresh();
    let out = ok_env(
        &puller,
        &["pull", "--remote", both, "t1", "t2"],
        &through(&env0, &endpoints[2]),
    );
    assert!(out.contains("t1 + t2: pulled 2 distributions"), "{out}");
    assert_clean(&puller);
    let out = ok_env(&puller, &["remote", "gc", "--remote", both], &env0);
    assert!(out.contains("would delete 0 files"), "{out}");
    cluster.stop().unwrap();
}

/// Pulls `wide` into a fresh store while `victim` is killed once the first
/// pack arrives; the pull completes and verifies. The node comes back and a
/// second pull moves nothing.
fn lose_a_node_mid_pull(cluster: &mut GarageCluster, victim: usize, env: &[(String, String)]) {
    let dst = fresh();
    let mut pull = spawn_env(&dst, &["pull", "--remote", REMOTE, "wide"], env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !receiving(&dst) {
        assert!(
            pull.try_wait().unwrap().is_none(),
            "the pull ended before any pack arrived"
        );
        assert!(Instant::now() < deadline, "no pack arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.nodes[victim].kill();
    assert!(
        pull.try_wait().unwrap().is_none(),
        "the pull was over before node {victim} was lost; the test proves nothing"
    );
    let out = wait_ok(pull, &format!("pull with node {victim} lost"));
    assert!(
        out.contains(&format!("wide: pulled {WIDE} distributions")),
        "{out}"
    );
    assert_eq!(dst.store_counts().0, WIDE as u64);
    assert_clean(&dst);

    cluster.restart(victim);
    let out = ok_env(&dst, &["pull", "--remote", REMOTE, "wide"], env);
    assert!(
        out.contains("wide: pulled 0 distributions in 0 packs"),
        "{out}"
    );
}

#[test]
fn a_node_lost_mid_pull_the_pull_completes() {
    let Some(garage) = garage() else { return };
    let dir = scratch_dir();
    let mut cluster = GarageCluster::start(&garage, dir.path(), "team");
    let team = Team::new(true);
    team.world.ok(&["materialize", "--frozen", "wide"]);
    let env = cluster.env.clone();
    ok_env(&team.world, &["push", "--remote", REMOTE, "wide"], &env);

    // Not the endpoint: the other two nodes are a quorum.
    lose_a_node_mid_pull(&mut cluster, 2, &env);

    // The endpoint itself: tstore moves to the next one it was given.
    let mut env = env;
    env.push((tstore_endpoints().into(), cluster.endpoints().join(",")));
    lose_a_node_mid_pull(&mut cluster, 0, &env);

    // With the first endpoint down, a listing (remote gc) and a push go to
    // the next one.
    cluster.nodes[0].kill();
    let out = ok_env(&team.world, &["remote", "gc", "--remote", REMOTE], &env);
    assert!(out.contains("would delete 0 files"), "{out}");
    team.world.ok(&["materialize", "--frozen", "t2"]);
    let out = ok_env(&team.world, &["push", "--remote", REMOTE, "t2"], &env);
    assert!(out.contains("1 new distribution records"), "{out}");
    cluster.stop().unwrap();
}

/// No endpoint answers: the error names each one tried.
#[test]
fn unreachable_endpoints_are_named() {
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let endpoints: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let env = vec![
        (tstore_endpoints().to_string(), endpoints.join(",")),
        ("AWS_ACCESS_KEY_ID".into(), "GKunused".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "unused".into()),
        ("AWS_REGION".into(), "garage".into()),
    ];
    let (ok, err) = run_env(&fresh(), &["pull", "--remote", REMOTE, "t1"], &env);
    assert!(!ok, "{err}");
    for endpoint in &endpoints {
        assert!(err.contains(endpoint.as_str()), "names {endpoint}: {err}");
    }
    assert!(err.contains(REMOTE), "names the remote: {err}");
    // The list of failures is printed once, not again as its own cause.
    assert_eq!(err.matches("no endpoint answered").count(), 1, "{err}");

    let bad = vec![(tstore_endpoints().to_string(), "127.0.0.1:9".to_string())];
    let (ok, err) = run_env(&fresh(), &["pull", "--remote", REMOTE, "t1"], &bad);
    assert!(
        !ok && err.contains("TSTORE_REMOTE_ENDPOINTS") && err.contains("127.0.0.1:9"),
        "{err}"
    );
}
