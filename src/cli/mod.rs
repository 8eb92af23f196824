//! Command-line definition and dispatch. Each command is a thin sequence of
//! library steps; `session` holds what they share, `report` draws progress.

mod chart;
mod commands;
mod doctor;
mod launch;
mod report;
mod session;
mod settings;
mod shell;
mod transfer;
mod workflow;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tstore::config::LinkMode;

/// Many Python virtual environments for the disk price of one.
///
/// tstore locks each tier of a tiers.toml with uv (PEP 751 pylock files),
/// downloads every wheel once into a content-addressed store (one file per
/// distinct content), and builds each tier's venv by hardlinking from the
/// store (reflinking when asked, copying where neither works).
///
/// Without --config, ./tiers.toml is used, else the embedded default
/// (Tekton's five tiers). The store is $TSTORE_HOME, else
/// $XDG_DATA_HOME/tstore, else ~/.local/share/tstore.
#[derive(Parser, Debug)]
#[command(name = "tstore", version, max_term_width = 100)]
pub struct Cli {
    /// tiers.toml to use instead of ./tiers.toml or the embedded default.
    #[arg(long, global = true, env = "TSTORE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Remote store to pull from before downloading, and for push/pull:
    /// s3://bucket/prefix (AWS_* variables configure endpoint, region and
    /// credentials), http(s)://host/prefix (WebDAV) or file:///path
    /// [default: `remote` in tiers.toml].
    #[arg(long, global = true, env = "TSTORE_REMOTE", value_name = "URL")]
    pub remote: Option<String>,

    /// Print only errors and the final summary [env: TSTORE_QUIET].
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more detail: every command tstore runs (uv, Python) and how
    /// long it took, link method choices, retries, the time each step of a
    /// build took [env: TSTORE_VERBOSE].
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Draw no progress bars; notices and summaries are still printed
    /// [env: TSTORE_NO_PROGRESS].
    #[arg(long, global = true)]
    pub no_progress: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum RemoteCommand {
    /// Delete the packs and records that no lock pushed within the last N
    /// days uses, and the older roots (dry run unless --delete).
    ///
    /// Files younger than N days are kept whatever uses them, so a push
    /// running at the same time loses nothing.
    Gc {
        /// Keep what locks pushed within this many days use.
        #[arg(long, default_value_t = 30, value_name = "N")]
        keep_days: u64,
        /// Delete; without it, only report what would go.
        #[arg(long)]
        delete: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Resolve tiers with uv into pylock.<tier>.toml files.
    ///
    /// All tiers are resolved together first so that a package shared by
    /// tiers gets the same version everywhere; tiers that cannot share are
    /// locked alone and the differing packages are named. A lock whose
    /// inputs (requirements, Python version, indexes) are unchanged is
    /// reused. Locks go beside tiers.toml (for the embedded default: into the
    /// store).
    Lock {
        /// Tiers to lock (default: all).
        tiers: Vec<String>,
        /// Resolve from uv's cache only, without network [env: TSTORE_OFFLINE].
        #[arg(long)]
        offline: bool,
        /// Print one hash of the tiers' lock files as they are (no uv, no
        /// network), for CI cache keys.
        #[arg(long)]
        print_hash: bool,
        /// Move every pin to the newest allowed version. Without --upgrade or
        /// --upgrade-package a re-lock keeps every pin it can.
        #[arg(long, conflicts_with = "upgrade_package")]
        upgrade: bool,
        /// Move this package (and what it needs) only; repeatable.
        #[arg(short = 'P', long, value_name = "NAME")]
        upgrade_package: Vec<String>,
        /// Machine-readable output: each tier's lock and status, and every
        /// package whose version differs between tiers of one solve group.
        #[arg(long)]
        json: bool,
    },
    /// What a `tstore lock --upgrade` would change, without writing anything.
    ///
    /// Lists each package whose locked version would move (current → new)
    /// and the tiers it is in.
    Outdated {
        /// Tiers to look at (default: all).
        tiers: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Packages added, removed and changed between two generations of a
    /// tier, or (without generations) between its venv and its lock.
    Diff {
        /// The tier to compare.
        tier: String,
        /// Older generation (see `tstore generations TIER`).
        from: Option<i64>,
        /// Newer generation.
        to: Option<i64>,
    },
    /// Import every top-level module of every package in a tier.
    ///
    /// Each import runs in a fresh interpreter, several at once; failures
    /// are listed with their error. Exit status 1 when any import fails.
    Check {
        /// The tier whose venv (current generation) is checked.
        tier: String,
        /// Imports at once [default: the number of cores].
        #[arg(short, long)]
        jobs: Option<usize>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Download and ingest every distribution the tiers' locks need.
    ///
    /// Wheels already in the store (by sha256) are skipped; the rest are
    /// downloaded in parallel, checked against the lock's size and sha256,
    /// and unpacked into the store. Packages with only an sdist are built
    /// once with uv.
    Fetch {
        /// Tiers to fetch (default: all).
        tiers: Vec<String>,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Build (or update) the tiers' venvs from the store.
    ///
    /// Locks and fetches first as needed. The venv is built as a new
    /// generation and the tier's path switched to it atomically (see
    /// `tstore generations`); a failure leaves the venv in use untouched. An
    /// unchanged tier is recognized without running uv and left alone.
    Materialize {
        /// Tiers to materialize.
        #[arg(required = true)]
        tiers: Vec<String>,
        #[command(flatten)]
        lock: LockArgs,
        /// How files get from the store into the venv [env:
        /// TSTORE_LINK_MODE; default: the tiers.toml setting, else auto:
        /// hardlink, else copy; reflink only when asked].
        #[arg(long, value_parser = parse_link_mode, value_name = "MODE")]
        link_mode: Option<LinkMode>,
        /// Replace a venv at the tier's path even if tstore did not make it
        /// (with --into: replace a non-empty DIR).
        #[arg(long)]
        force: bool,
        /// Build one tier as a standalone venv at DIR instead: no
        /// generations, nothing recorded in the store; with --link-mode copy
        /// it works after the store is gone (a container image layer, a
        /// machine without tstore). Launchers and pyvenv.cfg name DIR.
        #[arg(long, value_name = "DIR")]
        into: Option<PathBuf>,
    },
    /// Show the tiers: components, lock state, venv path and state.
    List {
        /// List components instead: which tier each runs in.
        #[arg(long)]
        components: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a tier's venv (named by tier or component).
    ///
    /// Materializes the tier first if it is missing or out of date (unless
    /// --no-sync), then replaces tstore with CMD, run with the venv's
    /// environment: VIRTUAL_ENV set, the venv's bin first on PATH,
    /// PYTHONHOME unset. Exit status, signals and stdin/stdout/stderr are
    /// CMD's own. Messages from tstore go to stderr.
    ///
    /// Example: `tstore run hermes -- python -m hermes`
    #[command(verbatim_doc_comment)]
    Run {
        /// Tier or component (see `tstore list --components`).
        target: String,
        /// Use the venv as it is: no lock check, no materialize.
        #[arg(long)]
        no_sync: bool,
        #[command(flatten)]
        lock: LockArgs,
        /// The command and its arguments (after `--`).
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<std::ffi::OsString>,
    },
    /// Print the tier a component runs in and the tier's venv path.
    Which {
        /// Component (or tier) name.
        target: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print shell lines that activate a tier's venv, for `eval`.
    ///
    /// They set VIRTUAL_ENV, put the venv's bin first on PATH, unset
    /// PYTHONHOME, prefix the prompt with `(tier)` and define `deactivate`,
    /// which undoes all of it.
    ///
    /// bash/zsh: eval "$(tstore env tekton-core)"
    /// fish:     tstore env tekton-core --shell fish | source
    #[command(verbatim_doc_comment)]
    Env {
        /// Tier or component.
        target: String,
        /// Shell syntax [default: from $SHELL, else bash].
        #[arg(long, value_enum)]
        shell: Option<Shell>,
    },
    /// Start your shell with a tier's venv activated; `exit` leaves.
    ///
    /// Materializes the tier first if it is missing or out of date (unless
    /// --no-sync). The shell is $SHELL (bash, zsh, fish or sh; anything else
    /// gets sh), reading your own startup files, then: VIRTUAL_ENV set, the
    /// venv's bin first on PATH, PYTHONHOME unset, the prompt prefixed with
    /// `(tier)` (unless VIRTUAL_ENV_DISABLE_PROMPT is set), and
    /// TSTORE_SHELL=<tier>. tstore refuses to start a second one inside.
    /// The exit status is the shell's.
    Shell {
        /// Tier or component.
        target: String,
        /// Use the venv as it is: no lock check, no materialize.
        #[arg(long)]
        no_sync: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Print a tier's venv path.
    Path { tier: String },
    /// List a tier's kept generations (the current one is marked).
    ///
    /// Every materialize that changes a tier builds a new generation; the
    /// tier's path is a symlink that switches atomically to it. The
    /// `keep-generations` (tiers.toml, default 3) most recently in use are
    /// kept for rollback, each with the lock it was built from.
    Generations {
        tier: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Point a tier back at an earlier generation (default: the previous one).
    ///
    /// The lock that generation was built from is written back at the
    /// tier's lock path, so venv and lock agree and `run` or `materialize`
    /// find the tier up to date.
    Rollback {
        tier: String,
        /// Generation number (see `tstore generations TIER`).
        generation: Option<i64>,
    },
    /// Make one package's files in one tier private, writable copies.
    ///
    /// Patch them freely: the store and other tiers are not touched. `tstore
    /// verify` reports the package as edited; `tstore materialize TIER`
    /// brings the tier back to the shared files.
    Edit { tier: String, package: String },
    /// Check the store and the materialized tiers; --repair fixes them.
    ///
    /// Checks the index first: SQLite's page check (quick by default, the
    /// full integrity check with --full), and the objects on disk against
    /// the index both ways. Then re-hashes every object and checks each
    /// tier's current generation against its manifest: hardlinked files must
    /// be the store object, copies must hash to it, nothing missing or extra
    /// in site-packages.
    ///
    /// --repair first rebuilds an index that is lost or damaged from the
    /// store's own files (objects, records of distributions, generations and
    /// adopted venvs, manifests), keeping the old one as
    /// store.db.damaged-<time>. It then restores a corrupted object in place
    /// (keeping its inode, so every tier linked to it is fixed) from a good
    /// copy or the wheel, downloaded again and sha256-checked, and re-links
    /// damaged files.
    ///
    /// Exit status: 0 clean, 1 problems remain, 2 problems found and all
    /// repaired.
    Verify {
        /// Tiers to check (default: every materialized tier; objects are
        /// always checked).
        tiers: Vec<String>,
        #[arg(long)]
        repair: bool,
        /// Run SQLite's full integrity check of the index (slower than the
        /// default quick check: it also compares indexes with tables).
        #[arg(long)]
        full: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check what materialize depends on, and say how to fix what fails.
    ///
    /// Prints where the store, config, locks and venvs are, then one line
    /// per check: leftovers in the store's tmp/, the index (opened and
    /// SQLite's quick check), how files get into each venv folder (reflink,
    /// hardlink or copy; same filesystem as the store?), uv and its version,
    /// each tier's Python, each tier's lock (missing, stale), and free space
    /// against the largest tier. Each failed check says how to fix it.
    ///
    /// Exit status: 0 when materialize can work (warnings included), 1 when
    /// a FAIL line would make it fail.
    Doctor {
        /// Machine-readable output: {"version": 1, "locations": {...},
        /// "checks": [{"name", "ok", "blocking", "detail", "fix"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Delete what no tier can use any more, and say how much it frees.
    ///
    /// Roots are the kept generations of every tier and the adopted venvs
    /// that still exist; a lock alone keeps nothing, so a tier fetched but
    /// never materialized, or removed, is collected. Unused distributions and
    /// objects, generations beyond keep-generations, their saved locks, and
    /// leftovers of crashed runs go. gc refuses to run on an index that fails
    /// its checks (see `tstore verify --repair`) and never deletes an object
    /// a kept generation's manifest names. Freed bytes
    /// count allocated blocks, and only for files whose every link is
    /// deleted: an object still linked from a venv outside the store frees
    /// nothing, and extents shared by reflinks are not counted.
    ///
    /// First, the pycs Python wrote in kept generations (as a tier with
    /// compile-bytecode = "lazy" imports) are checked against their sources,
    /// taken into the store and linked, so every venv shares one copy; a dry
    /// run leaves them alone.
    Gc {
        /// Report what would be deleted and freed, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Disk use per tier and of the store, against plain copies.
    ///
    /// Allocated bytes (st_blocks), not file sizes. Per tier: files, what a
    /// plain copy would take, bytes only it uses, bytes shared with other
    /// tiers, its private files; then the store, all venvs, and the saving.
    Du {
        /// Tiers to show (default: every materialized tier).
        tiers: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Also write the report as one SVG chart to FILE (per tier: shared,
        /// only here, private, plain copy; then the store, venvs and saving).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// Share the files of existing venvs (made by pip or uv) through the store.
    ///
    /// Reads each installed distribution's RECORD, checks every listed file
    /// against the RECORD's hash, stores its content once, and replaces the
    /// file in place by a link to it (atomically per file: link beside it,
    /// rename over). The venvs keep working exactly as before. Files that no
    /// longer match their RECORD, and files no RECORD lists (your edits,
    /// caches), are left alone and reported. Hardlinked files become the
    /// read-only store object; reflinked files keep mode and timestamps.
    /// gc keeps adopted objects while the venv exists.
    Adopt {
        /// Venv folders (with a pyvenv.cfg).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Report what would be linked and freed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// auto (hardlink), reflink or hardlink.
        #[arg(long, value_parser = parse_link_mode, value_name = "MODE")]
        link_mode: Option<LinkMode>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write what tiers need from the store into one archive (tar + zstd).
    ///
    /// The archive holds the tiers' locks, the records of the distributions
    /// their locks select for this machine's interpreter, their bytecode, and
    /// every object those name, with a manifest. The same tiers and store
    /// give a byte-identical file (for CI caches). `tstore import` adds it to
    /// another store, after which `tstore materialize --offline` works.
    Export {
        /// Tiers to export (default: all).
        tiers: Vec<String>,
        /// The archive to write (conventionally .tar.zst).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Add an archive made by `tstore export` to the store.
    ///
    /// Every object is checked against its blake3 key and size before it is
    /// stored; records are added once all their objects are in. Importing
    /// again adds nothing. The archive's locks are written where tiers.toml
    /// puts them unless a lock is already there.
    Import {
        /// The archive.
        file: PathBuf,
    },
    /// Upload what tiers need to a remote store (only what it lacks).
    Push {
        /// Tiers to push (default: all).
        tiers: Vec<String>,
    },
    /// Download from a remote store what tiers need and the store lacks.
    ///
    /// One pack per distribution; every object is verified by size and
    /// blake3 before any of its pack counts, and a damaged pack is refused
    /// and reported. What the remote lacks is listed (materialize then
    /// downloads it from the index). A tier with no lock here gets the lock
    /// it was last pushed with. Tiers on one interpreter are pulled
    /// together, each distribution once (`A + B: pulled ...`).
    Pull {
        /// Tiers to pull (default: all).
        tiers: Vec<String>,
    },
    /// Look after a remote store.
    Remote {
        #[command(subcommand)]
        command: RemoteCommand,
    },
    /// Print a shell completion script.
    ///
    /// bash: tstore completions bash > ~/.local/share/bash-completion/completions/tstore
    /// zsh:  tstore completions zsh > "${fpath[1]}/_tstore"
    /// fish: tstore completions fish > ~/.config/fish/completions/tstore.fish
    #[command(verbatim_doc_comment)]
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff), generated from this command line.
    ///
    /// tstore man > /usr/local/share/man/man1/tstore.1
    #[command(verbatim_doc_comment)]
    Man,
    /// Delete a tier's venv and all its generations.
    ///
    /// Objects only it used are freed by the next `tstore gc`.
    Remove { tier: String },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct LockArgs {
    /// Use only the store and existing locks; fail naming what is missing
    /// [env: TSTORE_OFFLINE].
    #[arg(long)]
    pub offline: bool,
    /// Use the existing locks as they are, without checking them against
    /// tiers.toml (error if a lock is missing) [env: TSTORE_FROZEN].
    #[arg(long)]
    pub frozen: bool,
}

impl Command {
    /// Whether the command answers in JSON (`--json`).
    fn json(&self) -> bool {
        match self {
            Command::Adopt { json, .. }
            | Command::Check { json, .. }
            | Command::Doctor { json }
            | Command::Du { json, .. }
            | Command::Gc { json, .. }
            | Command::Generations { json, .. }
            | Command::List { json, .. }
            | Command::Lock { json, .. }
            | Command::Outdated { json, .. }
            | Command::Verify { json, .. }
            | Command::Which { json, .. } => *json,
            _ => false,
        }
    }
}

fn parse_link_mode(text: &str) -> Result<LinkMode, String> {
    text.parse()
}

/// Runs the command; returns the process exit status.
pub fn run(mut cli: Cli) -> anyhow::Result<u8> {
    if print_generated(&cli.command)? {
        return Ok(0);
    }
    let settings = settings::Settings::resolve(&mut cli)?;
    // Lives for the whole process: children report to it when they end.
    let reporter: &'static report::Reporter = Box::leak(Box::new(report::Reporter::new(
        settings.output,
        cli.command.json(),
    )));
    tstore::process::report_commands_to(reporter);
    for variable in &settings.from_environment {
        tstore::progress::Progress::detail(
            reporter,
            &format!("setting from the environment: {variable}"),
        );
    }
    if let Command::Verify {
        repair: true, full, ..
    } = &cli.command
    {
        commands::rebuild_untrusted_index(reporter, *full)?;
    }
    // Doctor opens the store itself: a damaged index is one of its findings.
    if let Command::Doctor { json } = cli.command {
        return doctor::doctor(cli.config.as_deref(), reporter, json);
    }
    let mut session = session::Session::open(cli.config.as_deref(), cli.remote.clone(), reporter)?;
    if let Some(mode) = settings.link_mode {
        session.workspace.config.link_mode = mode;
    }
    if let Some(mode) = settings.compile_bytecode {
        for tier in session.workspace.config.tiers.values_mut() {
            tier.compile_bytecode = mode;
        }
    }
    if let Some(downloads) = settings.concurrent_downloads {
        session.workspace.concurrent_downloads = downloads;
    }
    session.workspace.store.set_staging(settings.staging);
    dispatch(&session, cli.command)
}

/// Prints what needs neither a configuration nor a store (completions, the
/// man page); false for every other command.
fn print_generated(command: &Command) -> anyhow::Result<bool> {
    match command {
        Command::Completions { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "tstore",
                &mut std::io::stdout(),
            );
        }
        Command::Man => {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut std::io::stdout())?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// `tstore lock`'s ways: a hash for CI, or a lock with its upgrade choice.
fn lock(session: &session::Session<'_>, args: LockCommand) -> anyhow::Result<()> {
    if args.print_hash {
        return transfer::print_lock_hash(session, &args.tiers);
    }
    let upgrade = if args.upgrade {
        tstore::lock::Upgrade::All
    } else if !args.upgrade_package.is_empty() {
        tstore::lock::Upgrade::Packages(args.upgrade_package)
    } else {
        tstore::lock::Upgrade::None
    };
    commands::lock(session, &args.tiers, args.offline, upgrade, args.json)
}

/// The fields of [`Command::Lock`].
struct LockCommand {
    tiers: Vec<String>,
    offline: bool,
    print_hash: bool,
    upgrade: bool,
    upgrade_package: Vec<String>,
    json: bool,
}

/// One call per command. It stays one `match` (longer than most functions
/// here) so that every command's entry point reads in one place.
fn dispatch(session: &session::Session<'_>, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Lock {
            tiers,
            offline,
            print_hash,
            upgrade,
            upgrade_package,
            json,
        } => lock(
            session,
            LockCommand {
                tiers,
                offline,
                print_hash,
                upgrade,
                upgrade_package,
                json,
            },
        ),
        Command::Verify {
            tiers,
            repair,
            full,
            json,
        } => return commands::verify(session, &tiers, repair, full, json),
        Command::Outdated { tiers, json } => workflow::outdated(session, &tiers, json),
        Command::Diff { tier, from, to } => workflow::diff(session, &tier, from, to),
        Command::Check { tier, jobs, json } => return workflow::check(session, &tier, jobs, json),
        Command::Export { tiers, output } => transfer::export(session, &tiers, &output),
        Command::Import { file } => transfer::import(session, &file),
        Command::Push { tiers } => transfer::push(session, &tiers),
        Command::Pull { tiers } => transfer::pull(session, &tiers),
        Command::Remote {
            command: RemoteCommand::Gc { keep_days, delete },
        } => transfer::remote_gc(session, keep_days, delete),
        Command::Fetch { tiers, lock } => commands::fetch(session, &tiers, lock),
        Command::Materialize {
            tiers,
            lock,
            link_mode,
            force,
            into: Some(dir),
        } => commands::materialize_into(session, &tiers, lock, link_mode, force, &dir),
        Command::Materialize {
            tiers,
            lock,
            link_mode,
            force,
            into: None,
        } => commands::materialize(session, &tiers, lock, link_mode, force),
        Command::List {
            components: true,
            json,
        } => launch::list_components(session, json),
        Command::List {
            components: false,
            json,
        } => commands::list(session, json),
        Command::Run {
            target,
            no_sync,
            lock,
            command,
        } => return launch::run(session, &target, no_sync, lock, &command),
        Command::Shell {
            target,
            no_sync,
            lock,
        } => return shell::shell(session, &target, no_sync, lock),
        Command::Which { target, json } => launch::which(session, &target, json),
        Command::Env { target, shell } => launch::env(session, &target, shell),
        Command::Path { tier } => commands::path(session, &tier),
        Command::Generations { tier, json } => commands::generations(session, &tier, json),
        Command::Rollback { tier, generation } => commands::rollback(session, &tier, generation),
        Command::Edit { tier, package } => commands::edit(session, &tier, &package),
        Command::Adopt {
            paths,
            dry_run,
            link_mode,
            json,
        } => commands::adopt(session, &paths, dry_run, link_mode, json),
        Command::Remove { tier } => commands::remove(session, &tier),
        Command::Gc { dry_run, json } => commands::gc(session, dry_run, json),
        Command::Du { tiers, json, svg } => commands::du(session, &tiers, json, svg.as_deref()),
        Command::Completions { .. } | Command::Man => unreachable!("printed by print_generated"),
        Command::Doctor { .. } => unreachable!("run before a session opens"),
    }
    .map(|()| 0)
}
