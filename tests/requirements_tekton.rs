//! Requirement files shaped like Tekton's: the fixture checkout in
//! `tests/fixtures/tekton-shaped` (shared sets with comments, CRLF line ends
//! and no final newline, included by two components' own requirements.txt)
//! locked by real uv offline, materialized and run; and the shapes of every
//! requirement file in Tekton's repository, parsed.

mod common;

use std::path::Path;

use common::*;
use tstore::config::{Config, ConfigSource};

fn copy_tree(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).unwrap();
    for entry in fs_err::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs_err::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_tekton_shaped_checkout_locks_materializes_and_runs_its_components() {
    let world = World::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tekton-shaped");
    copy_tree(&fixture, &world.project());
    let tiers = fs_err::read_to_string(world.project().join("tiers.toml")).unwrap();
    world.write_tiers(&format!(
        "no-index = true\nfind-links = [\"../wheels\"]\n\n{tiers}"
    ));
    for (name, version) in [
        ("tk-settings", "1.0"),
        ("tk-models", "2.1"),
        ("tk-web", "0.110.0"),
        ("tk-server", "0.30"),
        ("tk-http", "0.27"),
        ("tk-sql", "2.0.1"),
        ("tk-mcp", "1.2.0"),
    ] {
        let module = name.replace('-', "_");
        WheelBuilder::new(name, version)
            .file(
                &format!("{module}/__init__.py"),
                &format!("VERSION = '{version}'\n"),
            )
            .build(&world.wheels());
    }

    let out = world.ok(&["lock"]);
    assert!(
        out.contains("tekton-core: locked") && out.contains("tekton-data: locked"),
        "{out}"
    );
    world.ok(&["materialize", "tekton-core", "tekton-data"]);

    // Each component runs in its tier, with what its requirements.txt and
    // the shared files it includes name, and nothing that is commented out.
    let apollo = world.ok(&[
        "run",
        "apollo",
        "--",
        "python",
        "-c",
        "import tk_settings, tk_models, tk_web, tk_server, tk_http, tk_mcp; \
         import importlib.util as u; print('apollo', tk_models.VERSION, u.find_spec('tk_sql'))",
    ]);
    assert!(apollo.contains("apollo 2.1 None"), "{apollo}");
    let hermes = world.ok(&[
        "run",
        "hermes",
        "--",
        "python",
        "-c",
        "import tekton_core, tk_sql, tk_web, tk_mcp; print('hermes', tekton_core.NAME, \
         tekton_core.__file__)",
    ]);
    let editable = world.project().join("tekton-core/tekton_core/__init__.py");
    assert!(
        hermes.contains(&format!("hermes tekton-core {}", editable.display())),
        "{hermes}"
    );
    // The two tiers share the files of the packages they both have.
    let shared = |tier: &str| {
        inode_of(
            &world
                .venv(tier)
                .join("lib/python3.11/site-packages/tk_models/__init__.py"),
        )
    };
    assert_eq!(shared("tekton-core"), shared("tekton-data"));
}

/// A file of Tekton's repository, as a path and its shape: the same kinds of
/// lines in the same order (includes with and without trailing comments,
/// aligned inline comments, commented-out requirements, extras, ranges), no
/// final newline where Tekton's file has none.
const TEKTON_SHAPES: &[(&str, &str)] = &[
    (
        "shared/requirements/base.txt",
        "# Base set\n# What every component needs\n\npython-dotenv>=1.0.0        # env files\n\
         pydantic>=2.11.5           # models\npydantic-settings>=2.9.1   # settings",
    ),
    (
        "shared/requirements/web.txt",
        "# Web set\n# Used by: most components\n\n-r base.txt\n\n# Framework\n\
         fastapi>=0.105.0           # framework\nuvicorn>=0.24.0           # server\n\
         starlette>=0.31.1         # toolkit\n\n# Async\nwebsockets>=12.0.0        # sockets\n\
         aiohttp>=3.9.0           # client\nhttpx>=0.24.0            # client\n\
         sse-starlette>=1.6.5     # events\n\n# More\npython-multipart>=0.0.6   # forms\n\
         jinja2>=3.1.0            # templates\nPyYAML>=6.0              # yaml\n\
         requests>=2.31.0         # sync client",
    ),
    (
        "shared/requirements/ai.txt",
        "# AI set\n# Used by: several\n\n# Providers\nanthropic>=0.52.0         # one\n\
         openai>=1.1.0            # two\nlitellm>=1.63.0          # three\n\n# Tools\n\
         tiktoken>=0.9.0          # tokens\nlangchain>=0.1.0         # chains\n\
         langchain-community>=0.0.10  # more chains\npydantic-ai>=0.0.35      # agents\n\n\
         # Retries\ntenacity>=8.2.0          # retry\nbackoff>=2.2.0           # backoff",
    ),
    (
        "shared/requirements/data.txt",
        "# Data set\n# Used by: several\n\n# Frames\npandas>=2.0.0            # frames\n\
         numpy>=1.26.0           # arrays\n\n# Plots\nplotly>=5.18.0          # plots\n\
         matplotlib>=3.8.0       # plots\n\n# Parsing\nbeautifulsoup4>=4.13.0  # html\n\
         lxml>=5.0.0            # xml\nopenpyxl>=3.1.0        # excel\n\n# Language\n\
         nltk>=3.8.0            # nlp\nspacy>=3.7.0           # nlp",
    ),
    (
        "shared/requirements/database.txt",
        "# Database set\n# Used by: several\n\n# Tools\nsqlalchemy>=2.0.0        # orm\n\
         alembic>=1.12.0         # migrations\n\n# Drivers\naiosqlite>=0.19.0       # sqlite\n\
         redis>=5.0.0            # cache\ntinydb>=4.8.0           # documents\n\n\
         # Optional drivers (uncomment as needed)\n# psycopg2-binary>=2.9.0  # PostgreSQL adapter\n\
         # pymysql>=1.1.0          # MySQL adapter",
    ),
    (
        "shared/requirements/dev.txt",
        "# Dev set\n# Not for production\n\n# Tests\npytest>=8.0.0            # tests\n\
         pytest-asyncio>=0.21.0   # async\npytest-cov>=4.1.0       # coverage\n\
         pytest-mock>=3.12.0     # mocks\n\n# Quality\nflake8>=7.0.0           # lint\n\
         black>=23.0.0           # format\nisort>=5.13.0          # imports\n\
         mypy>=1.8.0            # types\n\n# Tools\nipython>=8.18.0         # shell\n\
         ipdb>=0.13.0           # debugger\nrich>=13.7.0           # text\n\
         typer>=0.9.0           # cli",
    ),
    (
        "shared/requirements/utilities.txt",
        "# Utilities set\n# Misc\n\n# CLI\nclick>=8.1.0            # cli\n\
         typer>=0.9.0           # cli (also in dev.txt)\nrich>=13.7.0           # text\n\
         colorama>=0.4.6        # colour\n\n# Config\npython-decouple>=3.8    # settings\n\
         pytz>=2023.3           # zones\ncroniter>=2.0.0        # cron\n\n# Async\n\
         asyncio-throttle>=1.0.0 # limits\naiofiles>=23.2.0       # files\n\n# Logs\n\
         structlog>=24.1.0      # logs\nloguru>=0.7.0         # logs\n\
         prometheus-client>=0.19.0  # metrics\npsutil>=5.9.0         # processes",
    ),
    (
        "shared/requirements/vector.txt",
        "# Vector set\n# Used by: several\n# Note: the largest set\n\n# Search\n\
         faiss-cpu>=1.7.4         # search\nqdrant-client>=1.7.0     # client\n\n# Models\n\
         sentence-transformers>=2.2.2  # embeddings\ntorch>=2.0.0             # torch\n\
         transformers>=4.36.0     # models\n\n# Science\nnumpy>=1.26.0            # arrays\n\
         scipy>=1.13.0            # science\nscikit-learn>=1.3.0      # learning\n\n# Hub\n\
         huggingface-hub>=0.19.0  # downloads",
    ),
    (
        "Apollo/requirements.txt",
        "# Shared sets\n-r ../shared/requirements/base.txt\n-r ../shared/requirements/web.txt\n\
         -r ../shared/requirements/ai.txt     # For one thing\n\
         -r ../shared/requirements/utilities.txt  # For another\n\n# MCP\n\
         fastmcp>=1.0.0  # decorators",
    ),
    (
        "Athena/requirements.txt",
        "# Shared sets\n-r ../shared/requirements/base.txt\n-r ../shared/requirements/web.txt\n\
         -r ../shared/requirements/database.txt\n-r ../shared/requirements/data.txt      # frames\n\
         -r ../shared/requirements/ai.txt        # templates\n\n# Tekton\ntekton-core>=0.1.0\n\n\
         # Graphs (not shared)\nneo4j>=5.0.0\npy2neo>=2021.2.0",
    ),
    (
        "Ergon/agents/mail/requirements.txt",
        "# Mail agent\ngoogle-api-python-client>=2.110.0\ngoogle-auth-httplib2>=0.1.1\n\
         google-auth-oauthlib>=1.1.0\nmsal>=1.28.0\nemail-validator>=2.0.0\nimapclient>=2.3.0\n\
         beautifulsoup4>=4.12.0",
    ),
    (
        "Ergon/agents/browser/requirements.txt",
        "# Browser agent\nbrowser-use==0.1.40\nplaywright==1.49.1\n\n# Images\nPillow>=11.0.0",
    ),
    (
        "Ergon/requirements.txt",
        "# Ergon\n# Agents\n\n# Shared sets\n-r ../shared/requirements/base.txt\n\
         -r ../shared/requirements/web.txt\n-r ../shared/requirements/database.txt\n\
         -r ../shared/requirements/ai.txt\n-r ../shared/requirements/utilities.txt\n\n# More\n\
         streamlit>=1.31.0\n\n# Services\nPyGithub>=2.1.1\ngoogle-api-python-client>=2.110.0\n\n\
         # Tekton\ntekton-llm-client>=1.0.0\ntekton-core>=0.1.0\n\n# Tests (development only)\n\
         -r ../shared/requirements/dev.txt",
    ),
    (
        "Hephaestus/requirements.txt",
        "# Shared sets\n-r ../shared/requirements/base.txt\n-r ../shared/requirements/web.txt\n\n\
         # Own\n# websockets comes from web.txt\n\n# UI tools\nbeautifulsoup4>=4.12.0\n\
         lxml>=5.0.0\ncssselect>=1.2.0\n\n# Note: installed separately\n# playwright>=1.40.0\n\n\
         # The rest is the standard library",
    ),
    (
        "Metis/requirements.txt",
        "# Metis\n# Planning\n\n# Shared sets\n-r ../shared/requirements/base.txt\n\
         -r ../shared/requirements/web.txt\n-r ../shared/requirements/database.txt\n\
         -r ../shared/requirements/utilities.txt\n\n# Own\n\
         python-jose[cryptography]>=3.3.0  # tokens\nuuid>=1.30\n\n# Tekton\n\
         tekton-llm-client>=1.0.0\ntekton-core>=0.1.0",
    ),
    (
        "Numa/requirements.txt",
        "fastapi==0.104.1\nuvicorn[standard]==0.24.0\nhttpx==0.25.2\npydantic==2.5.2\n\
         python-multipart==0.0.6\nasyncio==3.4.3",
    ),
    (
        "Terma/requirements.txt",
        "fastapi>=0.95.0\nuvicorn>=0.21.1\nwebsockets>=11.0.3,<12.0.0\npydantic>=2.5.0,<3.0.0\n\
         python-dotenv>=1.0.0\nhttpx>=0.24.0\nrequests>=2.28.2\nptyprocess>=0.7.0\naiohttp>=3.8.4",
    ),
    (
        "tekton-core/requirements.txt",
        "# Shared sets\n-r ../shared/requirements/base.txt\n-r ../shared/requirements/web.txt\n\
         -r ../shared/requirements/vector.txt\n\n# MCP\nfastmcp>=1.0.0\n\n# Monitoring\n\
         psutil>=5.9.0\npy-cpuinfo>=8.0.0\n\n# Files\nwatchdog>=3.0.0\n\n# Optional GPU\n\
         # pynvml>=11.0.0  # Uncomment to enable NVIDIA GPU monitoring",
    ),
];

#[test]
fn every_shape_of_tekton_requirement_file_parses() {
    let dir = tempfile::tempdir().unwrap();
    let root = fs_err::canonicalize(dir.path()).unwrap();
    let mut tiers = String::new();
    for (index, (path, text)) in TEKTON_SHAPES.iter().enumerate() {
        let file = root.join(path);
        fs_err::create_dir_all(file.parent().unwrap()).unwrap();
        fs_err::write(&file, text).unwrap();
        tiers.push_str(&format!(
            "[sets.s{index}]\nfile = \"{path}\"\n[tiers.t{index}]\nsets = [\"s{index}\"]\n"
        ));
    }
    let config = Config::parse(&tiers, ConfigSource::File(root.join("tiers.toml")), &root)
        .unwrap_or_else(|err| panic!("{err}"));
    let names = |index: usize| -> Vec<String> {
        config.tiers[&format!("t{index}")]
            .requirements
            .iter()
            .map(|r| r.name.clone())
            .collect()
    };
    let index_of = |path: &str| TEKTON_SHAPES.iter().position(|(p, _)| *p == path).unwrap();
    // Every requirement line became one requirement: count them per file.
    for (index, (path, text)) in TEKTON_SHAPES.iter().enumerate() {
        let written = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.starts_with("-r"))
            .count();
        let tier = &config.tiers[&format!("t{index}")];
        let own = tier
            .requirements
            .iter()
            .filter(|r| {
                r.origin
                    .starts_with(&format!("{}:", root.join(path).display()))
            })
            .count();
        assert_eq!(own, written, "{path}: {:?}", names(index));
    }
    let database = names(index_of("shared/requirements/database.txt"));
    assert!(
        !database
            .iter()
            .any(|n| n == "psycopg2-binary" || n == "pymysql")
    );
    let web = names(index_of("shared/requirements/web.txt"));
    assert_eq!(
        &web[..3],
        ["python-dotenv", "pydantic", "pydantic-settings"]
    );
    assert_eq!(web.last().unwrap(), "requests");
    let ergon = names(index_of("Ergon/requirements.txt"));
    assert!(ergon.contains(&"pytest".to_string()) && ergon.contains(&"tekton-core".to_string()));
    let metis = &config.tiers[&format!("t{}", index_of("Metis/requirements.txt"))];
    assert!(
        metis
            .requirements
            .iter()
            .any(|r| r.text == "python-jose[cryptography]>=3.3.0"),
        "{:?}",
        metis.requirements
    );
    let core = names(index_of("tekton-core/requirements.txt"));
    assert!(!core.iter().any(|n| n == "pynvml") && core.contains(&"watchdog".to_string()));
}
