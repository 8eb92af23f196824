//! `tiers.toml`: named requirement sets, tiers composed of them, and the
//! settings every later step reads (Python version, venv location, indexes,
//! link mode).
//!
//! The file is looked up as `--config FILE`, else `./tiers.toml`, else the
//! copy of Tekton's tiers embedded in the binary. Every error names the file
//! and line it comes from and says how to fix it.

mod requirements;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use toml::Spanned;

use requirements::{Collected, IndexLines};
pub use requirements::{LocalProject, RequirementLine, normalize as normalize_path};

/// The tiers.toml shipped inside the binary (Tekton's five tiers).
pub const EMBEDDED_TIERS: &str = include_str!("../../tiers.toml");

/// How files get from the store into a venv.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    /// Hardlink, else copy (reflinks only when asked for: `Reflink`).
    #[default]
    Auto,
    Reflink,
    Hardlink,
    Copy,
}

impl FromStr for LinkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "reflink" => Ok(Self::Reflink),
            "hardlink" => Ok(Self::Hardlink),
            "copy" => Ok(Self::Copy),
            other => Err(format!(
                "unknown link mode `{other}`: use one of auto, reflink, hardlink, copy"
            )),
        }
    }
}

impl fmt::Display for LinkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Reflink => "reflink",
            Self::Hardlink => "hardlink",
            Self::Copy => "copy",
        })
    }
}

/// What a tier does about bytecode (`compile-bytecode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BytecodeMode {
    /// Every importable source compiled once into the store and linked
    /// (`true`, the default).
    #[default]
    Compile,
    /// Only the pycs the store has are linked; Python writes the others on
    /// first import, and tstore shares those afterwards (`"lazy"`).
    Lazy,
    /// No pycs linked (`false`).
    Off,
}

impl BytecodeMode {
    /// Whether store pycs are linked into the venv (and pulled).
    pub fn links_pycs(self) -> bool {
        self != Self::Off
    }

    /// Whether every missing pyc is compiled before the tier is complete.
    pub fn compiles(self) -> bool {
        self == Self::Compile
    }
}

impl FromStr for BytecodeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "true" => Ok(Self::Compile),
            "lazy" => Ok(Self::Lazy),
            "false" => Ok(Self::Off),
            other => Err(unknown_bytecode_mode(other)),
        }
    }
}

fn unknown_bytecode_mode(text: &str) -> String {
    format!(
        "unknown compile-bytecode `{text}`: use true (compile every source once), \
         \"lazy\" (share the pycs Python writes on import) or false"
    )
}

/// Where the configuration came from; decides where locks are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Embedded => f.write_str("<embedded tiers.toml>"),
        }
    }
}

/// Package index settings handed to uv when locking, as written in
/// tiers.toml (so a lock's input hash does not depend on where the project
/// is checked out).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexSettings {
    pub index_url: Option<String>,
    pub extra_index_urls: Vec<String>,
    pub find_links: Vec<String>,
    pub no_index: bool,
}

/// One tier: a venv built from the union of its sets and extra requirements.
#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    /// For `<tier>-py<version>`: the tier whose further Python version it is.
    pub variant_of: Option<String>,
    /// Python version request, handed to `uv python find` and to the resolver.
    pub python: String,
    pub venv: PathBuf,
    /// Requirements in the order written, duplicates removed.
    pub requirements: Vec<RequirementLine>,
    /// Constraints from `-c` lines of requirement files.
    pub constraints: Vec<RequirementLine>,
    /// tiers.toml's index settings with the index options of the tier's
    /// requirement files applied.
    pub index: IndexSettings,
    pub components: Vec<String>,
    /// Which pycs the venv gets (`compile-bytecode`, default `true`).
    pub compile_bytecode: BytecodeMode,
    /// Which tiers it shares versions with (`solve-group`).
    pub solve_group: SolveGroup,
}

/// The tiers a tier is resolved together with, so that shared packages have
/// one version (and one copy in the store).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SolveGroup {
    /// Every tier of tiers.toml that names no group (`solve-group` unset or `true`).
    Default,
    /// `solve-group = "name"`: the tiers naming the same group.
    Named(String),
    /// `solve-group = false`: locked alone.
    Alone,
}

impl std::fmt::Display for SolveGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::Named(name) => f.write_str(name),
            Self::Alone => f.write_str("(alone)"),
        }
    }
}

impl Tier {
    /// Normalized names of the tier's direct requirements (for `REQUESTED`).
    pub fn requested_names(&self) -> Vec<String> {
        self.requirements.iter().map(|r| r.name.clone()).collect()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Generations kept per tier (`keep-generations`, default 3).
    pub keep_generations: usize,
    pub source: ConfigSource,
    /// The directory relative paths in the file are relative to.
    pub dir: PathBuf,
    pub link_mode: LinkMode,
    /// Remote store (`remote`), pulled from before downloading.
    pub remote: Option<String>,
    pub tiers: BTreeMap<String, Tier>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
    #[error("unknown tier `{name}`; known tiers: {known}{hint}")]
    UnknownTier {
        name: String,
        known: String,
        hint: String,
    },
    #[error(
        "`{name}` is neither a tier nor a component{hint}; tiers: {tiers}; components: {components} \
         (see `tstore list --components`)"
    )]
    UnknownTarget {
        name: String,
        tiers: String,
        components: String,
        hint: String,
    },
}

impl Config {
    /// Loads `explicit`, else the nearest `tiers.toml` in the current folder
    /// or one above it (so a command run in a component's folder of a
    /// checkout reads the checkout's tiers), else the embedded default.
    pub fn discover(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        if let Some(path) = explicit {
            return Self::from_file(path);
        }
        let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        if let Some(found) = here
            .ancestors()
            .map(|dir| dir.join("tiers.toml"))
            .find(|path| path.is_file())
        {
            return Self::from_file(&found);
        }
        Self::parse(EMBEDDED_TIERS, ConfigSource::Embedded, Path::new("."))
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = fs_err::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::parse(&text, ConfigSource::File(path), &dir)
    }

    /// Parses tiers.toml text; `dir` anchors relative paths in it.
    pub fn parse(text: &str, source: ConfigSource, dir: &Path) -> Result<Self, ConfigError> {
        let doc = Document {
            text,
            source: &source,
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|err| doc.error_at(err.span(), err.message()))?;
        let link_mode = link_mode(&doc, raw.link_mode.as_ref())?;
        let tiers = TierReader::new(&doc, &raw, dir).read_all()?;
        check_components(&raw.tiers, &tiers, &doc)?;
        if tiers.is_empty() {
            // Nothing to point at: the whole file lacks a table.
            return Err(ConfigError::Invalid {
                location: doc.location(0),
                message:
                    "no tiers defined: add a `[tiers.NAME]` table with `sets` or `requirements`"
                        .into(),
            });
        }
        Ok(Config {
            keep_generations: keep_generations(&doc, raw.keep_generations.as_ref())?,
            source,
            dir: dir.to_path_buf(),
            link_mode,
            remote: raw.remote.clone(),
            tiers,
        })
    }

    /// Looks a tier up by name, or explains which names exist.
    pub fn tier(&self, name: &str) -> Result<&Tier, ConfigError> {
        self.tiers.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.tiers.keys().map(String::as_str).collect();
            let hint = closest(name, &known)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            ConfigError::UnknownTier {
                name: name.to_string(),
                known: known.join(", "),
                hint,
            }
        })
    }

    /// The tier named `name`, or the tier that runs component `name`
    /// (components match case-insensitively).
    pub fn tier_or_component(&self, name: &str) -> Result<&Tier, ConfigError> {
        if let Some(tier) = self.tiers.get(name) {
            return Ok(tier);
        }
        let lowered = name.to_lowercase();
        if let Some(tier) = self
            .tiers
            .values()
            .find(|t| t.components.contains(&lowered))
        {
            return Ok(tier);
        }
        let tiers: Vec<&str> = self.tiers.keys().map(String::as_str).collect();
        let components: Vec<&str> = self.components().map(|(c, _)| c).collect();
        let every: Vec<&str> = tiers.iter().chain(&components).copied().collect();
        let hint = closest(&lowered, &every)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        Err(ConfigError::UnknownTarget {
            name: name.to_string(),
            tiers: tiers.join(", "),
            components: if components.is_empty() {
                "none defined (add `components = [...]` to a tier)".to_string()
            } else {
                components.join(", ")
            },
            hint,
        })
    }

    /// Every (component, tier) pair, sorted by component.
    pub fn components(&self) -> impl Iterator<Item = (&str, &Tier)> {
        let mut pairs: Vec<(&str, &Tier)> = self
            .tiers
            .values()
            .flat_map(|t| t.components.iter().map(move |c| (c.as_str(), t)))
            .collect();
        pairs.sort_by_key(|(c, _)| *c);
        pairs.into_iter()
    }

    /// The named tiers (each with its venvs for further Python versions),
    /// or every tier when `names` is empty.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Tier>, ConfigError> {
        if names.is_empty() {
            return Ok(self.tiers.values().collect());
        }
        let mut out: Vec<&Tier> = Vec::new();
        for name in names {
            let tier = self.tier(name)?;
            let variants = self
                .tiers
                .values()
                .filter(|t| t.variant_of.as_deref() == Some(tier.name.as_str()));
            for t in std::iter::once(tier).chain(variants) {
                if !out.iter().any(|o| o.name == t.name) {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }
}

/// `link-mode`, `auto` when unset.
fn link_mode(doc: &Document<'_>, raw: Option<&Spanned<String>>) -> Result<LinkMode, ConfigError> {
    match raw {
        None => Ok(LinkMode::Auto),
        Some(mode) => mode
            .get_ref()
            .parse::<LinkMode>()
            .map_err(|message: String| doc.error_at(Some(mode.span()), &message)),
    }
}

/// `compile-bytecode`, `true` when unset.
fn bytecode_mode(
    doc: &Document<'_>,
    raw: Option<&Spanned<RawBytecode>>,
) -> Result<BytecodeMode, ConfigError> {
    let Some(raw) = raw else {
        return Ok(BytecodeMode::Compile);
    };
    match raw.get_ref() {
        RawBytecode::Flag(true) => Ok(BytecodeMode::Compile),
        RawBytecode::Flag(false) => Ok(BytecodeMode::Off),
        RawBytecode::Mode(mode) if mode == "lazy" => Ok(BytecodeMode::Lazy),
        // Only "lazy" is a string; "true" and "false" are written as booleans.
        RawBytecode::Mode(other) => {
            Err(doc.error_at(Some(raw.span()), &unknown_bytecode_mode(other)))
        }
    }
}

/// `keep-generations`, 3 when unset.
fn keep_generations(doc: &Document<'_>, raw: Option<&Spanned<i64>>) -> Result<usize, ConfigError> {
    match raw {
        None => Ok(3),
        Some(n) if *n.get_ref() >= 1 => Ok(*n.get_ref() as usize),
        Some(n) => Err(doc.error_at(
            Some(n.span()),
            "keep-generations must be at least 1 (the generation in use is always kept)",
        )),
    }
}

/// Turns the `[tiers.*]` tables into tiers: each plain tier from its sets
/// and requirements, each union from its members, and one more tier per
/// further Python version.
struct TierReader<'a> {
    doc: &'a Document<'a>,
    raw: &'a RawConfig,
    dir: &'a Path,
    sets: SetResolver<'a>,
    /// The top-level `python`, for tiers that name none.
    python: String,
    venv_root: PathBuf,
}

impl<'a> TierReader<'a> {
    fn new(doc: &'a Document<'a>, raw: &'a RawConfig, dir: &'a Path) -> Self {
        Self {
            doc,
            raw,
            dir,
            sets: SetResolver {
                doc,
                raw: &raw.sets,
                dir,
            },
            python: raw.python.clone().unwrap_or_else(|| "3.11".to_string()),
            venv_root: match &raw.venv_root {
                Some(root) => expand_path(root, dir),
                None => expand_path("~/venvs", dir),
            },
        }
    }

    fn read_all(&self) -> Result<BTreeMap<String, Tier>, ConfigError> {
        let mut tiers: BTreeMap<String, Tier> = BTreeMap::new();
        // Plain tiers first: a union tier takes its members' requirements.
        let mut order: Vec<(&Spanned<String>, &RawTier)> = self.raw.tiers.iter().collect();
        order.sort_by_key(|(_, t)| !t.union.is_empty());
        for (name, raw_tier) in order {
            self.check_name(name)?;
            let collected = self.own_requirements(raw_tier)?;
            let versions = self.python_versions(name, raw_tier)?;
            let tier = self.tier(name, raw_tier, collected, &versions[0], &tiers)?;
            for variant in self.python_variants(name, raw_tier, &tier, &versions[1..])? {
                tiers.insert(variant.name.clone(), variant);
            }
            tiers.insert(name.get_ref().clone(), tier);
        }
        Ok(tiers)
    }

    /// One tier, for its first Python version: `collected` (its own
    /// requirements) with those of the tiers it unites.
    fn tier(
        &self,
        name: &Spanned<String>,
        raw_tier: &RawTier,
        mut collected: Collected,
        python: &str,
        earlier: &BTreeMap<String, Tier>,
    ) -> Result<Tier, ConfigError> {
        let union_index =
            self.union_members(name.get_ref(), raw_tier, python, earlier, &mut collected)?;
        let Collected {
            mut requirements,
            mut constraints,
            index: index_lines,
        } = collected;
        dedup_by_text(&mut requirements);
        dedup_by_text(&mut constraints);
        if requirements.is_empty() {
            return Err(self.doc.error_at(
                Some(name.span()),
                &format!(
                    "tier `{name}` has no requirements: give it `sets = [...]`, `requirements = [...]` \
                     or `union = [...]`"
                ),
            ));
        }
        Ok(Tier {
            name: name.get_ref().clone(),
            variant_of: None,
            python: python.to_string(),
            venv: match &raw_tier.venv {
                Some(path) => expand_path(path, self.dir),
                None => self.venv_root.join(name.get_ref()),
            },
            requirements,
            constraints,
            index: match union_index {
                // A union reads its members' indexes.
                Some(index) if index_lines.is_empty() => index,
                _ => tier_index(self.raw, index_lines, self.dir),
            },
            compile_bytecode: bytecode_mode(
                self.doc,
                raw_tier
                    .compile_bytecode
                    .as_ref()
                    .or(self.raw.compile_bytecode.as_ref()),
            )?,
            solve_group: solve_group(self.doc, raw_tier.solve_group.as_ref())?,
            components: raw_tier
                .components
                .iter()
                .map(|c| c.get_ref().to_lowercase())
                .collect(),
        })
    }

    /// The requirements of the tier's sets, then its own.
    fn own_requirements(&self, raw_tier: &RawTier) -> Result<Collected, ConfigError> {
        let mut collected = Collected::default();
        for set in &raw_tier.sets {
            self.sets.expand(set, &mut Vec::new(), &mut collected)?;
        }
        for req in &raw_tier.requirements {
            collected
                .requirements
                .push(requirement_value(self.doc, req, self.dir)?);
        }
        Ok(collected)
    }

    fn check_name(&self, name: &Spanned<String>) -> Result<(), ConfigError> {
        if is_valid_tier_name(name.get_ref()) {
            return Ok(());
        }
        Err(self.doc.error_at(
            Some(name.span()),
            &format!(
                "tier name `{name}` is not allowed: it names the venv directory and the lock \
                 file, so use letters, digits, `-`, `_` and `.`, starting with a letter or digit"
            ),
        ))
    }

    /// The tier's Python versions, the first being the tier's own.
    fn python_versions(
        &self,
        name: &Spanned<String>,
        raw_tier: &RawTier,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(python) = &raw_tier.python else {
            return Ok(vec![self.python.clone()]);
        };
        match python.get_ref() {
            PythonVersions::One(v) => Ok(vec![v.clone()]),
            PythonVersions::Several(list) if !list.is_empty() => Ok(list.clone()),
            PythonVersions::Several(_) => Err(self.doc.error_at(
                Some(python.span()),
                &format!("tier `{name}` has `python = []`: name at least one version"),
            )),
        }
    }

    /// Adds the requirements and constraints of a union's members (plain
    /// tiers read before it) and returns the package indexes they share.
    fn union_members(
        &self,
        name: &str,
        raw_tier: &RawTier,
        python: &str,
        earlier: &BTreeMap<String, Tier>,
        collected: &mut Collected,
    ) -> Result<Option<IndexSettings>, ConfigError> {
        let mut union_index = None;
        for member in &raw_tier.union {
            let Some(tier) = earlier.get(member.get_ref()) else {
                let known: Vec<&str> = self
                    .raw
                    .tiers
                    .iter()
                    .filter(|(_, t)| t.union.is_empty())
                    .map(|(n, _)| n.get_ref().as_str())
                    .collect();
                return Err(self.doc.error_at(
                    Some(member.span()),
                    &format!(
                        "`union` names `{}`, which is not a tier without a union of its own; \
                         use one of: {}",
                        member.get_ref(),
                        known.join(", ")
                    ),
                ));
            };
            if tier.python != python {
                return Err(self.doc.error_at(
                    Some(member.span()),
                    &format!(
                        "tier `{name}` (Python {python}) cannot be the union of `{}` \
                         (Python {}): a union shares one Python version",
                        tier.name, tier.python
                    ),
                ));
            }
            collected
                .requirements
                .extend(tier.requirements.iter().cloned());
            collected
                .constraints
                .extend(tier.constraints.iter().cloned());
            match &union_index {
                None => union_index = Some(tier.index.clone()),
                Some(index) if *index != tier.index => {
                    return Err(self.doc.error_at(
                        Some(member.span()),
                        &format!(
                            "tier `{name}` unites tiers with different package indexes \
                             (`{}` differs); they cannot be locked as one",
                            tier.name
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(union_index)
    }

    /// Every further Python version is a tier of its own, named
    /// `<tier>-py<version>`, with its own venv and lock; its objects are
    /// shared wherever the files are the same.
    fn python_variants(
        &self,
        name: &Spanned<String>,
        raw_tier: &RawTier,
        tier: &Tier,
        versions: &[String],
    ) -> Result<Vec<Tier>, ConfigError> {
        let mut variants = Vec::with_capacity(versions.len());
        for version in versions {
            let variant = format!("{name}-py{version}");
            if self.raw.tiers.contains_key(variant.as_str()) || !is_valid_tier_name(&variant) {
                return Err(self.doc.error_at(
                    raw_tier.python.as_ref().map(Spanned::span),
                    &format!(
                        "tier `{name}`: Python `{version}` would make a tier named `{variant}`, \
                         which is taken or not a valid name"
                    ),
                ));
            }
            let mut other = tier.clone();
            other.venv = PathBuf::from(format!("{}-py{version}", tier.venv.display()));
            other.name = variant;
            other.variant_of = Some(name.get_ref().clone());
            other.python = version.clone();
            other.components = Vec::new();
            variants.push(other);
        }
        Ok(variants)
    }
}

/// A component names one tier: it may not appear in two, nor be another
/// tier's name (`tstore run NAME` must mean one venv).
fn check_components(
    raw: &BTreeMap<Spanned<String>, RawTier>,
    tiers: &BTreeMap<String, Tier>,
    doc: &Document<'_>,
) -> Result<(), ConfigError> {
    let mut owner: BTreeMap<String, &str> = BTreeMap::new();
    for (tier, raw_tier) in raw {
        let tier = tier.get_ref();
        for written in &raw_tier.components {
            let component = written.get_ref().to_lowercase();
            if let Some(other) = owner.insert(component.clone(), tier)
                && other != tier
            {
                return Err(doc.error_at(
                    Some(written.span()),
                    &format!(
                        "component `{component}` is listed in tiers `{other}` and `{tier}`: a component \
                         runs in one tier, so remove it from one of them"
                    ),
                ));
            }
            if tiers.contains_key(component.as_str()) && component != *tier {
                return Err(doc.error_at(
                    Some(written.span()),
                    &format!(
                        "component `{component}` of tier `{tier}` has the name of another tier: rename one"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Tier names become directory and file names (`pylock.<tier>.toml`).
fn is_valid_tier_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn global_index(raw: &RawConfig) -> IndexSettings {
    IndexSettings {
        index_url: raw.index_url.clone(),
        extra_index_urls: raw.extra_index_urls.clone(),
        find_links: raw.find_links.clone(),
        no_index: raw.no_index,
    }
}

/// The global settings, with a requirement file's `--index-url` replacing
/// the main index and its other options added. Directories found in files
/// are kept relative to tiers.toml, like those written there.
fn tier_index(raw: &RawConfig, lines: IndexLines, dir: &Path) -> IndexSettings {
    let mut index = global_index(raw);
    if let Some((url, _)) = lines.index_url {
        index.index_url = Some(url);
    }
    index.extra_index_urls.extend(lines.extra_index_urls);
    for link in lines.find_links {
        let shown = match Path::new(&link).strip_prefix(dir) {
            Ok(rel) if !link.contains("://") => rel.display().to_string(),
            _ => link,
        };
        index.find_links.push(shown);
    }
    index.no_index |= lines.no_index;
    index.extra_index_urls.dedup();
    index.find_links.dedup();
    index
}

/// One entry of a `requirements` array: a PEP 508 string, a local project
/// path (`"./libs/x"`, editable unless written as a table with
/// `editable = false`), or `"-e PATH"`.
fn requirement_value(
    doc: &Document<'_>,
    value: &Spanned<toml::Value>,
    dir: &Path,
) -> Result<RequirementLine, ConfigError> {
    let origin = doc.location(value.span().start);
    let local = |path: &str, editable: bool| {
        RequirementLine::local(
            &expand_path(path.trim(), dir),
            editable,
            origin.clone(),
            dir,
        )
    };
    match value.get_ref() {
        toml::Value::String(text) => {
            let text = text.trim();
            if let Some(path) = text
                .strip_prefix("-e ")
                .or(text.strip_prefix("--editable "))
            {
                local(path, true)
            } else if requirements::looks_like_path(text) {
                local(text, true)
            } else {
                RequirementLine::parse(text, origin.clone())
            }
        }
        toml::Value::Table(table) => {
            let unknown: Vec<&String> = table
                .keys()
                .filter(|k| *k != "path" && *k != "editable")
                .collect();
            let path = table.get("path").and_then(|p| p.as_str());
            let editable = table.get("editable").map(|e| e.as_bool());
            match (path, editable, unknown.is_empty()) {
                (Some(path), None, true) => local(path, true),
                (Some(path), Some(Some(editable)), true) => local(path, editable),
                _ => Err(doc.error_at(
                    Some(value.span()),
                    "a local project is written `{ path = \"../libs/x\", editable = false }` \
                     (`editable` is optional, true by default)",
                )),
            }
        }
        _ => Err(doc.error_at(
            Some(value.span()),
            "a requirement is a string (`\"fastapi>=0.105\"`, `\"./libs/x\"`) or a table \
             `{ path = \"./libs/x\", editable = false }`",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    python: Option<String>,
    venv_root: Option<String>,
    link_mode: Option<Spanned<String>>,
    keep_generations: Option<Spanned<i64>>,
    index_url: Option<String>,
    #[serde(default)]
    extra_index_urls: Vec<String>,
    #[serde(default)]
    find_links: Vec<String>,
    #[serde(default)]
    no_index: bool,
    compile_bytecode: Option<Spanned<RawBytecode>>,
    remote: Option<String>,
    #[serde(default)]
    sets: BTreeMap<String, RawSet>,
    /// Keys spanned, so errors about a tier point at its table.
    #[serde(default)]
    tiers: BTreeMap<Spanned<String>, RawTier>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSet {
    #[serde(default)]
    requirements: Vec<Spanned<toml::Value>>,
    /// A pip-style requirement file, relative to tiers.toml.
    file: Option<Spanned<String>>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTier {
    #[serde(default)]
    sets: Vec<Spanned<String>>,
    #[serde(default)]
    requirements: Vec<Spanned<toml::Value>>,
    /// Other tiers whose requirements this one holds all of.
    #[serde(default)]
    union: Vec<Spanned<String>>,
    #[serde(default)]
    components: Vec<Spanned<String>>,
    /// One version, or a list: one venv per version.
    python: Option<Spanned<PythonVersions>>,
    venv: Option<String>,
    compile_bytecode: Option<Spanned<RawBytecode>>,
    /// A group name, `true` (the default group) or `false` (alone).
    solve_group: Option<Spanned<RawSolveGroup>>,
}

/// `compile-bytecode`: `true`, `false` or `"lazy"`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawBytecode {
    Flag(bool),
    Mode(String),
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawSolveGroup {
    Flag(bool),
    Name(String),
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum PythonVersions {
    One(String),
    Several(Vec<String>),
}

fn solve_group(
    doc: &Document<'_>,
    raw: Option<&Spanned<RawSolveGroup>>,
) -> Result<SolveGroup, ConfigError> {
    let Some(raw) = raw else {
        return Ok(SolveGroup::Default);
    };
    Ok(match raw.get_ref() {
        RawSolveGroup::Flag(true) => SolveGroup::Default,
        RawSolveGroup::Flag(false) => SolveGroup::Alone,
        RawSolveGroup::Name(name) if name == "default" => SolveGroup::Default,
        RawSolveGroup::Name(name) if is_valid_tier_name(name) => SolveGroup::Named(name.clone()),
        RawSolveGroup::Name(name) => {
            return Err(doc.error_at(
                Some(raw.span()),
                &format!(
                    "`solve-group = \"{name}\"` is not a valid group name: use letters, digits, \
                     `-` and `_`, or `false` to lock the tier alone"
                ),
            ));
        }
    })
}

/// The text being parsed, for turning byte offsets into `file:line:col`.
struct Document<'a> {
    text: &'a str,
    source: &'a ConfigSource,
}

impl Document<'_> {
    fn location(&self, offset: usize) -> String {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("{}:{line}:{col}", self.source)
    }

    fn error_at(&self, span: Option<std::ops::Range<usize>>, message: &str) -> ConfigError {
        ConfigError::Invalid {
            location: self.location(span.map_or(0, |s| s.start)),
            message: message.trim().to_string(),
        }
    }
}

/// Expands `[sets.*]` with their includes and requirement files.
struct SetResolver<'a> {
    doc: &'a Document<'a>,
    raw: &'a BTreeMap<String, RawSet>,
    dir: &'a Path,
}

impl SetResolver<'_> {
    fn expand(
        &self,
        name: &Spanned<String>,
        stack: &mut Vec<String>,
        out: &mut Collected,
    ) -> Result<(), ConfigError> {
        let key = name.get_ref();
        let Some(set) = self.raw.get(key) else {
            let known: Vec<&str> = self.raw.keys().map(String::as_str).collect();
            let hint = closest(key, &known)
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            return Err(self.doc.error_at(
                Some(name.span()),
                &format!(
                    "unknown set `{key}`: {hint}define it as `[sets.{key}]` or use one of: {}",
                    known.join(", ")
                ),
            ));
        };
        if stack.iter().any(|s| s == key) {
            stack.push(key.clone());
            return Err(self.doc.error_at(
                Some(name.span()),
                &format!(
                    "sets include each other in a cycle ({}): remove one of these includes",
                    stack.join(" -> ")
                ),
            ));
        }
        stack.push(key.clone());
        for include in &set.include {
            self.expand(include, stack, out)?;
        }
        if let Some(file) = &set.file {
            let path = self.dir.join(file.get_ref());
            if !path.is_file() {
                return Err(self.doc.error_at(
                    Some(file.span()),
                    &format!(
                        "requirement file {} does not exist (paths are relative to tiers.toml)",
                        path.display()
                    ),
                ));
            }
            requirements::read_file(&path, &mut Vec::new(), out, self.dir)?;
        }
        for req in &set.requirements {
            out.requirements
                .push(requirement_value(self.doc, req, self.dir)?);
        }
        stack.pop();
        Ok(())
    }
}

fn dedup_by_text(lines: &mut Vec<RequirementLine>) {
    let mut seen = std::collections::HashSet::new();
    lines.retain(|line| seen.insert(line.text.clone()));
}

/// `~` expands to `$HOME`; relative paths are relative to tiers.toml.
pub fn expand_path(path: &str, base: &Path) -> PathBuf {
    if let Some(rest) = path
        .strip_prefix("~/")
        .or(if path == "~" { Some("") } else { None })
    {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        return home.join(rest);
    }
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// find-links entries may be URLs or directories relative to tiers.toml.
pub fn resolve_find_links(link: &str, base: &Path) -> String {
    if link.contains("://") {
        link.to_string()
    } else {
        expand_path(link, base).display().to_string()
    }
}

/// The known name closest to `name`, if it is close enough to be a typo.
pub fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            ConfigSource::File("tiers.toml".into()),
            Path::new("/nonexistent"),
        )
    }

    #[test]
    fn embedded_default_has_tektons_five_tiers() {
        let config = Config::parse(EMBEDDED_TIERS, ConfigSource::Embedded, Path::new(".")).unwrap();
        let names: Vec<_> = config.tiers.keys().cloned().collect();
        assert_eq!(
            names,
            [
                "tekton-ai",
                "tekton-core",
                "tekton-data",
                "tekton-dev",
                "tekton-ml"
            ]
        );
        let core = config.tier("tekton-core").unwrap();
        // web includes base, plus the tier's own extra.
        let texts: Vec<_> = core.requirements.iter().map(|r| r.text.as_str()).collect();
        assert!(texts.contains(&"pydantic>=2.11.5"));
        assert!(texts.contains(&"fastapi>=0.105.0"));
        assert!(texts.contains(&"fastmcp"));
        assert!(core.components.contains(&"apollo".to_string()));
        assert!(core.venv.ends_with("venvs/tekton-core"));
        let ml = config.tier("tekton-ml").unwrap();
        assert!(ml.requirements.iter().any(|r| r.name == "torch"));
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let err = parse("python = \"3.11\"\n\n[tiers.a]\nrequirements = [\"x\"]\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("tiers.toml:5:"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn unknown_set_suggests_the_closest() {
        let err = parse("[sets.web]\nrequirements = [\"x\"]\n[tiers.a]\nsets = [\"wbe\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("tiers.toml:4:"), "{err}");
        assert!(err.contains("did you mean `web`"), "{err}");
    }

    #[test]
    fn include_cycle_is_named() {
        let text =
            "[sets.a]\ninclude = [\"b\"]\n[sets.b]\ninclude = [\"a\"]\n[tiers.t]\nsets = [\"a\"]\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("a -> b -> a"), "{err}");
    }

    #[test]
    fn bad_requirement_and_link_mode_are_located() {
        let err = parse("[tiers.\"../x\"]\nrequirements = [\"x\"]\n").unwrap_err();
        assert!(
            err.to_string().contains("tier name `../x` is not allowed"),
            "{err}"
        );
        let err = parse("[tiers.t]\nrequirements = [\"ok\", \"bad req ===\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("tiers.toml:2:"), "{err}");
        let err = parse("link-mode = \"symlink\"\n[tiers.t]\nrequirements = [\"x\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tiers.toml:1:") && err.contains("hardlink"),
            "{err}"
        );
    }

    #[test]
    fn compile_bytecode_is_a_flag_or_lazy_and_a_tier_overrides_the_default() {
        let config = parse(
            "compile-bytecode = \"lazy\"\n[tiers.a]\nrequirements = [\"x\"]\n\
             [tiers.b]\nrequirements = [\"x\"]\ncompile-bytecode = false\n\
             [tiers.c]\nrequirements = [\"x\"]\ncompile-bytecode = true\n",
        )
        .unwrap();
        let modes: Vec<BytecodeMode> = ["a", "b", "c"]
            .iter()
            .map(|name| config.tier(name).unwrap().compile_bytecode)
            .collect();
        assert_eq!(
            modes,
            [BytecodeMode::Lazy, BytecodeMode::Off, BytecodeMode::Compile]
        );
        let unset = parse("[tiers.a]\nrequirements = [\"x\"]\n").unwrap();
        assert_eq!(
            unset.tier("a").unwrap().compile_bytecode,
            BytecodeMode::Compile
        );
    }

    #[test]
    fn a_union_tier_holds_its_members_requirements() {
        let config = parse(
            "[tiers.a]\nrequirements = [\"x\", \"y\"]\n[tiers.b]\nrequirements = [\"y\", \"z\"]\n\
             [tiers.all]\nunion = [\"a\", \"b\"]\nrequirements = [\"w\"]\n",
        )
        .unwrap();
        let texts: Vec<_> = config.tiers["all"]
            .requirements
            .iter()
            .map(|r| r.text.as_str())
            .collect();
        assert_eq!(texts, ["w", "x", "y", "z"]);
        let err = parse("[tiers.a]\nrequirements = [\"x\"]\n[tiers.all]\nunion = [\"b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("tiers.toml:4:") && err.contains("use one of: a"),
            "{err}"
        );
        let err = parse(
            "[tiers.a]\nrequirements = [\"x\"]\npython = \"3.12\"\n[tiers.all]\nunion = [\"a\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("a union shares one Python version"), "{err}");
    }

    #[test]
    fn several_pythons_make_one_venv_each() {
        let config = parse(
            "venv-root = \"/v\"\n[tiers.a]\nrequirements = [\"x\"]\npython = [\"3.11\", \"3.12\"]\n\
             components = [\"api\"]\n",
        )
        .unwrap();
        let extra = &config.tiers["a-py3.12"];
        assert_eq!(
            (extra.python.as_str(), extra.venv.as_path()),
            ("3.12", Path::new("/v/a-py3.12"))
        );
        assert_eq!(config.tiers["a"].python, "3.11");
        let names: Vec<_> = config
            .select(&["a".into()])
            .unwrap()
            .iter()
            .map(|t| t.name.clone())
            .collect();
        assert_eq!(names, ["a", "a-py3.12"]);
        assert_eq!(config.tier_or_component("api").unwrap().name, "a");
    }

    #[test]
    fn components_name_their_tier() {
        let config = Config::parse(EMBEDDED_TIERS, ConfigSource::Embedded, Path::new(".")).unwrap();
        assert_eq!(
            config.tier_or_component("Hermes").unwrap().name,
            "tekton-ml"
        );
        assert_eq!(
            config.tier_or_component("tekton-ai").unwrap().name,
            "tekton-ai"
        );
        let err = config.tier_or_component("hermess").unwrap_err().to_string();
        assert!(err.contains("did you mean `hermes`"), "{err}");
        assert!(
            err.contains("apollo") && err.contains("tekton-core"),
            "{err}"
        );

        let err = parse(
            "[tiers.a]\nrequirements = [\"x\"]\ncomponents = [\"web\"]\n\
             [tiers.b]\nrequirements = [\"x\"]\ncomponents = [\"Web\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`web` is listed in tiers `a` and `b`"),
            "{err}"
        );
    }

    /// The `file:line:col` an error names, and its message.
    fn located(text: &str) -> (usize, usize, String) {
        let err = parse(text).unwrap_err().to_string();
        let rest = err
            .strip_prefix("tiers.toml:")
            .unwrap_or_else(|| panic!("no location in {err}"));
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().unwrap().parse().unwrap();
        let col = parts.next().unwrap().parse().unwrap();
        (line, col, err)
    }

    #[test]
    fn every_error_points_at_the_key_at_fault() {
        // (text, line, column, words of the message)
        let cases: &[(&str, usize, usize, &str)] = &[
            (
                "[sets.a]\nrequirements = [\"x\"]\n\n[tiers.t]\nsets = [\"a\"]\n[sets.b]\ninclude = [\"nope\"]\n[tiers.u]\nsets = [\"b\"]\n",
                7,
                12,
                "unknown set `nope`",
            ),
            (
                "[sets.a]\ninclude = [\"b\"]\n[sets.b]\ninclude = [\"a\"]\n[tiers.t]\nsets = [\"a\"]\n",
                4,
                12,
                "a -> b -> a",
            ),
            (
                "[tiers.a]\nrequirements = [\"x\"]\n[tiers.all]\nunion = [\"a\", \"b\"]\n",
                4,
                15,
                "`union` names `b`",
            ),
            (
                "[tiers.a]\nrequirements = [\"x\"]\npython = \"3.12\"\n[tiers.all]\nunion = [\"a\"]\n",
                5,
                10,
                "a union shares one Python version",
            ),
            (
                "[tiers.a]\nrequirements = [\"x\"]\n\n[tiers.b]\nrequirements = [\"y\"]\npython = []\n",
                6,
                10,
                "has `python = []`",
            ),
            (
                "[tiers.a]\nrequirements = [\"x\"]\npython = [\"3.11\", \"3.12\"]\n[tiers.\"a-py3.12\"]\nrequirements = [\"x\"]\n",
                3,
                10,
                "would make a tier named `a-py3.12`",
            ),
            (
                "# how venvs get their files\nlink-mode = \"symlink\"\n[tiers.t]\nrequirements = [\"x\"]\n",
                2,
                13,
                "unknown link mode `symlink`",
            ),
            (
                "[tiers.a]\nrequirements = [\"x\"]\ncomponents = [\"web\"]\n[tiers.b]\nrequirements = [\"y\"]\ncomponents = [\"api\", \"Web\"]\n",
                6,
                22,
                "`web` is listed in tiers `a` and `b`",
            ),
            (
                "[tiers.a]\nrequirements = [\"x\"]\n[tiers.b]\nrequirements = [\"y\"]\ncomponents = [\"a\"]\n",
                5,
                15,
                "has the name of another tier",
            ),
            (
                "[tiers.a]\nrequirements = [\"x\"]\n\n[tiers.\"../x\"]\nrequirements = [\"x\"]\n",
                4,
                8,
                "tier name `../x` is not allowed",
            ),
            (
                "[tiers.a]\nrequirements = [\"x\"]\n\n[tiers.empty]\ncomponents = [\"e\"]\n",
                4,
                8,
                "tier `empty` has no requirements",
            ),
            (
                "[tiers.a]\nrequirements = [\"x\"]\nsolve-group = \"a b\"\n",
                3,
                15,
                "not a valid group name",
            ),
            (
                "[tiers.a]\nrequirements = [\"x\"]\ncompile-bytecode = \"sometimes\"\n",
                3,
                20,
                "unknown compile-bytecode `sometimes`: use true",
            ),
            (
                "python = \"3.12\"\nkeep-generations = 0\n[tiers.a]\nrequirements = [\"x\"]\n",
                2,
                20,
                "keep-generations must be at least 1",
            ),
            (
                "[sets.s]\nfile = \"missing.txt\"\n[tiers.a]\nsets = [\"s\"]\n",
                2,
                8,
                "requirement file /nonexistent/missing.txt does not exist",
            ),
            (
                "[tiers.a]\nrequirements = [\"x\", { path = \"./p\", bogus = 1 }]\n",
                2,
                22,
                "a local project is written",
            ),
        ];
        for (text, line, col, words) in cases {
            let (at_line, at_col, err) = located(text);
            assert_eq!((at_line, at_col), (*line, *col), "{err}");
            assert!(err.contains(words), "{err}");
        }
    }

    #[test]
    fn unknown_tier_suggests() {
        let config = Config::parse(EMBEDDED_TIERS, ConfigSource::Embedded, Path::new(".")).unwrap();
        let err = config.tier("tekton-a").unwrap_err().to_string();
        assert!(err.contains("did you mean `tekton-ai`"), "{err}");
        assert!(err.contains("tekton-core"), "{err}");
    }
}
