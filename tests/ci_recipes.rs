//! The README's CI recipes, read from README.md and run: each YAML block
//! that starts with `# GitHub Actions` or `# GitLab CI` is parsed for its
//! steps (shell lines, conditions, cache steps), and the steps run with
//! bash as the CI would, with a folder standing in for the CI's cache and a
//! folder or Garage (127.0.0.1) for the remote store. A recipe that drifts
//! from the CLI fails here; a construct the runner below does not know fails
//! too, so a changed recipe is looked at.
//!
//! Each recipe runs twice on fresh machines that share the project's
//! committed files (tiers.toml, locks): once with a cold cache while the
//! package index is up, then with the index gone, when everything must come
//! from the cache or the remote.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The runner's package index is a folder of wheels beside the project.
const TIERS: &str = "no-index = true\nfind-links = [\"../wheels\"]\n\
                     [tiers.tekton-core]\nrequirements = [\"alpha\"]\n\
                     [tiers.tekton-ai]\nrequirements = [\"alpha\", \"gamma\"]\n";

/// The README's YAML block whose first line is `# <title>`.
fn recipe(title: &str) -> String {
    let readme =
        fs_err::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut blocks = readme.split("```yaml\n").skip(1).map(|rest| {
        rest.split_once("\n```")
            .expect("a closed code block")
            .0
            .to_string()
    });
    blocks
        .find(|block| block.lines().next() == Some(&format!("# {title}")))
        .unwrap_or_else(|| panic!("README.md has no YAML block titled `# {title}`"))
}

/// One step of a GitHub Actions job.
#[derive(Debug, Default)]
struct Step {
    id: Option<String>,
    condition: Option<String>,
    run: Option<String>,
    uses: Option<String>,
    with: BTreeMap<String, String>,
}

/// The steps of a list of GitHub Actions steps (the subset the README
/// uses: `id`, `if`, `run` (one line or `|`), `uses`, `with`).
fn github_steps(yaml: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut step_indent = None;
    let mut block: Option<(usize, String)> = None;
    let mut in_with = false;
    for line in yaml.lines().map(strip_comment) {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if let Some((at, run)) = &mut block {
            if !text.is_empty() && indent >= *at {
                run.push_str(line[*at..].trim_end());
                run.push('\n');
                continue;
            }
            let (_, run) = block.take().unwrap();
            steps.last_mut().unwrap().run = Some(run);
        }
        if text.is_empty() {
            continue;
        }
        let (item, text) = match text.strip_prefix("- ") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if item {
            step_indent = Some(indent + 2);
            steps.push(Step::default());
            in_with = false;
        } else if step_indent.is_none() || indent < step_indent.unwrap() {
            // `env:`, `steps:` and the like around the list.
            continue;
        }
        let step = steps.last_mut().unwrap();
        let (key, value) = text.split_once(':').expect("key: value");
        let value = value.trim().to_string();
        if in_with && !item && indent > step_indent.unwrap() {
            step.with.insert(key.to_string(), value);
            continue;
        }
        in_with = false;
        match key {
            "id" => step.id = Some(value),
            "if" => step.condition = Some(value),
            "uses" => step.uses = Some(value),
            "with" => in_with = true,
            "run" if value == "|" => block = Some((indent + 2, String::new())),
            "run" => step.run = Some(value + "\n"),
            other => panic!("a step key the recipe runner does not know: `{other}`"),
        }
    }
    if let Some((_, run)) = block {
        steps.last_mut().unwrap().run = Some(run);
    }
    steps
}

/// A line without its ` # comment` (none of the README's values holds ` #`).
fn strip_comment(line: &str) -> &str {
    match line.find(" #") {
        Some(at) if !line.trim_start().starts_with('#') => line[..at].trim_end(),
        _ if line.trim_start().starts_with('#') => "",
        _ => line,
    }
}

/// A `name: value` map indented under `section:` (the recipe's `env:` or
/// `variables:`).
fn map_under(yaml: &str, section: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in yaml.lines().map(strip_comment) {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            inside = line.trim() == format!("{section}:");
            continue;
        }
        if inside {
            let (key, value) = line.trim().split_once(':').unwrap();
            out.push((key.to_string(), value.trim().trim_matches('"').to_string()));
        }
    }
    out
}

/// A project checkout: tiers.toml and the locks `tstore lock` made,
/// committed; its package index (a folder of wheels) reachable from new
/// runners until [`Checkout::index_gone`].
struct Checkout {
    source: World,
    index_up: bool,
}

impl Checkout {
    fn new() -> Self {
        let source = World::new();
        WheelBuilder::new("alpha", "1.0")
            .file("alpha/__init__.py", "VALUE = 'alpha'\n")
            .build(&source.wheels());
        WheelBuilder::new("gamma", "1.0")
            .file("gamma/__init__.py", "NAME = 'gamma'\n")
            .build(&source.wheels());
        source.write_tiers(TIERS);
        source.ok(&["lock"]);
        Self {
            source,
            index_up: true,
        }
    }

    /// A fresh runner with this checkout in its project folder (and the
    /// index while it is up).
    fn runner(&self) -> World {
        let runner = World::new();
        let copy_files = |from: PathBuf, to: PathBuf| {
            for entry in fs_err::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                if entry.path().is_file() {
                    fs_err::copy(entry.path(), to.join(entry.file_name())).unwrap();
                }
            }
        };
        copy_files(self.source.project(), runner.project());
        if self.index_up {
            copy_files(self.source.wheels(), runner.wheels());
        }
        runner
    }

    fn index_gone(&mut self) {
        self.index_up = false;
    }
}

/// Runs a shell step in `runner`'s project with tstore on PATH; returns
/// what it printed, failing the test if it fails.
fn shell(runner: &World, script: &str, env: &[(String, String)]) -> String {
    let tstore = PathBuf::from(env!("CARGO_BIN_EXE_tstore"));
    let path = format!(
        "{}:{}",
        tstore.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut exports = String::new();
    for (key, value) in env {
        // Values may name other variables ("$CI_PROJECT_DIR/…"), as in CI.
        exports.push_str(&format!("export {key}=\"{value}\"\n"));
    }
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &format!("{exports}{script}")])
        .current_dir(runner.project())
        .env("PATH", path)
        .env("TSTORE_HOME", runner.store())
        .env("HOME", runner.home())
        .env("CI_PROJECT_DIR", runner.project())
        .env_remove("TSTORE_CONFIG")
        .env_remove("TSTORE_REMOTE")
        .env_remove("XDG_DATA_HOME")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "step failed:\n{script}\n{text}");
    text
}

/// Both tiers work in `runner`.
fn venvs_work(runner: &World) {
    python_ok(&runner.venv("tekton-core"), "import alpha");
    python_ok(&runner.venv("tekton-ai"), "import alpha, gamma");
}

/// A GitHub Actions run: `${{ }}` expressions, `if:` conditions and the
/// cache actions (restore and save, `cache` a folder of key → saved path).
struct GithubRun<'a> {
    runner: &'a World,
    cache: &'a Path,
    env: Vec<(String, String)>,
    outputs: BTreeMap<String, BTreeMap<String, String>>,
    log: String,
}

impl GithubRun<'_> {
    fn run(&mut self, steps: &[Step]) {
        for step in steps {
            if let Some(condition) = &step.condition
                && !self.holds(condition)
            {
                continue;
            }
            let mut outputs = BTreeMap::new();
            match (&step.run, &step.uses) {
                (Some(script), None) => self.shell(script, &mut outputs),
                (None, Some(action)) => self.action(action, &step.with, &mut outputs),
                _ => panic!("a step with neither or both of run and uses: {step:?}"),
            }
            if let Some(id) = &step.id {
                self.outputs.insert(id.clone(), outputs);
            }
        }
    }

    fn shell(&mut self, script: &str, outputs: &mut BTreeMap<String, String>) {
        let output_file = self.runner.path().join("github-output");
        fs_err::write(&output_file, "").unwrap();
        let mut env = self.env.clone();
        env.push((
            "GITHUB_OUTPUT".into(),
            output_file.to_string_lossy().into_owned(),
        ));
        let script = self.expand(script);
        self.log += &shell(self.runner, &script, &env);
        for line in fs_err::read_to_string(&output_file).unwrap().lines() {
            let (key, value) = line.split_once('=').expect("name=value in GITHUB_OUTPUT");
            outputs.insert(key.into(), value.into());
        }
    }

    /// actions/cache/restore and actions/cache/save, on a folder.
    fn action(
        &mut self,
        action: &str,
        with: &BTreeMap<String, String>,
        outputs: &mut BTreeMap<String, String>,
    ) {
        let path = self.runner.project().join(&with["path"]);
        let key = self.expand(&with["key"]);
        assert!(!key.is_empty() && !key.contains('/'), "cache key `{key}`");
        let saved = self.cache.join(&key);
        match action {
            "actions/cache/restore@v4" => {
                let hit = saved.is_file();
                if hit {
                    fs_err::copy(&saved, &path).unwrap();
                }
                outputs.insert("cache-hit".into(), hit.to_string());
                outputs.insert("cache-primary-key".into(), key);
            }
            "actions/cache/save@v4" => {
                fs_err::copy(&path, &saved).unwrap();
            }
            other => panic!("an action the recipe runner does not know: {other}"),
        }
    }

    /// `a == 'b'` and `a != 'b'` over step outputs and `github.ref`.
    fn holds(&self, condition: &str) -> bool {
        let (left, equal, right) = if let Some((l, r)) = condition.split_once("==") {
            (l, true, r)
        } else if let Some((l, r)) = condition.split_once("!=") {
            (l, false, r)
        } else {
            panic!("a condition the recipe runner does not know: {condition}")
        };
        let left = self.value(left.trim());
        let right = right.trim().trim_matches('\'');
        (left == right) == equal
    }

    /// Replaces each `${{ expression }}`.
    fn expand(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some((before, after)) = rest.split_once("${{") {
            let (expression, after) = after.split_once("}}").expect("closed ${{ }}");
            out.push_str(before);
            out.push_str(&self.value(expression.trim()));
            rest = after;
        }
        out + rest
    }

    fn value(&self, expression: &str) -> String {
        match expression.split('.').collect::<Vec<_>>().as_slice() {
            ["runner", "os"] => "Linux".into(),
            ["github", "ref"] => "refs/heads/main".into(),
            ["steps", id, "outputs", name] => self
                .outputs
                .get(*id)
                .and_then(|outputs| outputs.get(*name))
                .cloned()
                .unwrap_or_default(),
            _ => panic!("an expression the recipe runner does not know: {expression}"),
        }
    }
}

#[test]
fn the_github_actions_archive_recipe_restores_from_its_cache() {
    let steps = github_steps(&recipe("GitHub Actions"));
    assert!(steps.len() >= 4, "{steps:?}");
    let cache = scratch_dir();
    let mut checkout = Checkout::new();

    // A cold cache: the index makes the tiers, the archive is saved.
    let first = checkout.runner();
    let mut run = GithubRun {
        runner: &first,
        cache: cache.path(),
        env: Vec::new(),
        outputs: BTreeMap::new(),
        log: String::new(),
    };
    run.run(&steps);
    venvs_work(&first);
    assert_eq!(run.outputs["cache"]["cache-hit"], "false");
    let saved: Vec<_> = fs_err::read_dir(cache.path()).unwrap().collect();
    assert_eq!(saved.len(), 1, "the archive was saved once");

    // The same locks on a new runner, with no index: the cache has it all.
    checkout.index_gone();
    let second = checkout.runner();
    let mut run = GithubRun {
        runner: &second,
        cache: cache.path(),
        env: Vec::new(),
        outputs: BTreeMap::new(),
        log: String::new(),
    };
    run.run(&steps);
    assert_eq!(run.outputs["cache"]["cache-hit"], "true", "{}", run.log);
    assert!(run.log.contains("imported"), "{}", run.log);
    venvs_work(&second);
}

#[test]
fn the_gitlab_ci_recipe_restores_the_store_from_its_cache() {
    let yaml = recipe("GitLab CI");
    let variables = map_under(&yaml, "variables");
    let files: Vec<String> = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("files: "))
        .expect("cache:key:files")
        .trim_matches(['[', ']'])
        .split(',')
        .map(|f| f.trim().to_string())
        .collect();
    let paths: Vec<String> = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("paths: "))
        .expect("cache:paths")
        .trim_matches(['[', ']'])
        .split(',')
        .map(|p| p.trim().trim_end_matches('/').to_string())
        .collect();
    let script: Vec<String> = yaml
        .split_once("script:")
        .expect("script:")
        .1
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ").map(str::to_string))
        .collect();
    assert!(!script.is_empty());
    let cache = scratch_dir();
    let mut checkout = Checkout::new();

    // GitLab names the cache after the key files' content; a folder per key.
    let job = |runner: &World| -> String {
        let mut hasher = blake3::Hasher::new();
        for file in &files {
            hasher.update(&fs_err::read(runner.project().join(file)).unwrap());
        }
        let saved = cache.path().join(hasher.finalize().to_hex().as_str());
        let hit = saved.is_dir();
        for path in paths.iter().filter(|_| hit) {
            copy_tree(&saved.join(path), &runner.project().join(path));
        }
        let log = shell(runner, &script.join("\n"), &variables);
        for path in &paths {
            copy_tree(&runner.project().join(path), &saved.join(path));
        }
        log
    };
    let first = checkout.runner();
    job(&first);
    venvs_work(&first);
    assert!(
        first.project().join(".tstore/v1/store.db").is_file(),
        "the store went where the recipe puts it"
    );

    checkout.index_gone();
    let second = checkout.runner();
    job(&second);
    venvs_work(&second);
}

/// Copies a folder as a CI cache does (files and folders, modes kept).
fn copy_tree(from: &Path, to: &Path) {
    if to.exists() {
        fs_err::remove_dir_all(to).unwrap();
    }
    fs_err::create_dir_all(to.parent().unwrap()).unwrap();
    let status = Command::new("cp")
        .args(["-a", "--"])
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

fn remote_recipe(remote: &str, remote_env: &[(String, String)]) {
    let yaml = recipe("GitHub Actions, remote store");
    let steps = github_steps(&yaml);
    let mut env = map_under(&yaml, "env");
    assert!(
        env.iter().any(|(k, _)| k == "TSTORE_REMOTE"),
        "the recipe names its remote: {env:?}"
    );
    // The recipe's placeholder bucket becomes this test's remote.
    for (key, value) in &mut env {
        if key == "TSTORE_REMOTE" {
            *value = remote.to_string();
        }
    }
    env.extend(remote_env.iter().cloned());
    let mut checkout = Checkout::new();
    let unused = scratch_dir();

    // The first run fills the remote; the next, with no index, takes all.
    for fresh_runner in 0..2 {
        if fresh_runner == 1 {
            checkout.index_gone();
        }
        let runner = checkout.runner();
        let mut run = GithubRun {
            runner: &runner,
            cache: unused.path(),
            env: env.clone(),
            outputs: BTreeMap::new(),
            log: String::new(),
        };
        run.run(&steps);
        venvs_work(&runner);
        if fresh_runner == 0 {
            assert!(run.log.contains("pushed to"), "{}", run.log);
        } else {
            assert!(
                run.log.contains(": 0 packs"),
                "nothing left to push: {}",
                run.log
            );
        }
    }
}

#[test]
fn the_remote_store_recipe_restores_from_a_folder_remote() {
    let holder = scratch_dir();
    let remote = format!("file://{}", holder.path().join("remote").display());
    remote_recipe(&remote, &[]);
}

#[test]
fn the_remote_store_recipe_restores_from_garage() {
    let garage = std::env::var("TSTORE_TEST_GARAGE").unwrap_or_else(|_| "garage".into());
    let found = Command::new(&garage)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: no garage binary (.ci/run builds it with cargo install garage)");
        return;
    }
    let dir = scratch_dir();
    let server = common::garage::Garage::start(&garage, dir.path(), "tstore");
    remote_recipe("s3://tstore/ci", &server.env);
}
