//! Requirement files read through tiers.toml, one table row per behaviour
//! that pip's and uv's requirement-file readers agree on: comments, line
//! joins, line endings, encodings, includes, local projects, URLs, hashes,
//! and the pip options a tier cannot honour.

use std::path::Path;

use tstore::config::{Config, ConfigSource};

/// How the tier's requirements come out, or where and why it is refused.
enum Expect {
    /// Requirement and constraint texts, each followed by its hashes as
    /// ` --hash=…`.
    Reads {
        requirements: &'static [&'static str],
        constraints: &'static [&'static str],
    },
    /// `file:line` (file relative to the case's root) and words of the
    /// reason.
    Refused {
        at: &'static str,
        saying: &'static [&'static str],
    },
}

struct Case {
    what: &'static str,
    /// Files to write; the tier's set reads the first one.
    files: Vec<(&'static str, Vec<u8>)>,
    expect: Expect,
}

fn text(path: &'static str, content: &str) -> (&'static str, Vec<u8>) {
    (path, content.as_bytes().to_vec())
}

fn reads(requirements: &'static [&'static str]) -> Expect {
    Expect::Reads {
        requirements,
        constraints: &[],
    }
}

fn refused(at: &'static str, saying: &'static [&'static str]) -> Expect {
    Expect::Refused { at, saying }
}

const ALPHA: (&str, &str) = ("libs/alpha/pyproject.toml", "[project]\nname = \"alpha\"\n");
const BETA: (&str, &str) = ("libs/beta/setup.py", "");

const SHA_A: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const SHA_B: &str = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn cases() -> Vec<Case> {
    let hashed = format!("redis==5.0.1 --hash={SHA_A} \\\n    --hash {SHA_B}  # pinned\n");
    let mut utf16 = vec![0xff, 0xfe];
    for unit in "# comment\r\nredis>=5\r\n".encode_utf16() {
        utf16.extend(unit.to_le_bytes());
    }
    vec![
        // Comments.
        Case {
            what: "a whole-line comment may contain another ` #`",
            files: vec![text(
                "db.txt",
                "# psycopg2-binary>=2.9.0  # PostgreSQL adapter\n  # indented # too\nredis>=5\n",
            )],
            expect: reads(&["redis>=5"]),
        },
        Case {
            what: "inline comments after spaces or a tab",
            files: vec![text(
                "web.txt",
                "fastapi>=0.105   # web framework\nuvicorn>=0.24\t# server\n",
            )],
            expect: reads(&["fastapi>=0.105", "uvicorn>=0.24"]),
        },
        Case {
            what: "a `#` right after other characters is not a comment",
            files: vec![text("a.txt", "redis\nfoo#bar\n")],
            expect: refused("a.txt:2", &["`foo#bar` is not a valid requirement"]),
        },
        Case {
            what: "`#egg=` stays part of a VCS URL (which a tier refuses)",
            files: vec![text(
                "a.txt",
                "git+https://example.com/repo.git@v1#egg=thing  # from git\n",
            )],
            expect: refused(
                "a.txt:1",
                &["git+https://example.com/repo.git@v1#egg=thing`", "VCS"],
            ),
        },
        Case {
            what: "`#sha256=` stays part of a direct URL (which a tier refuses)",
            files: vec![text(
                "a.txt",
                "thing @ https://files.example/thing-1.0-py3-none-any.whl#sha256=abcd\n",
            )],
            expect: refused("a.txt:1", &["whl#sha256=abcd`", "direct URL"]),
        },
        // Joined lines.
        Case {
            what: "a `\\` joins the next line",
            files: vec![text("a.txt", "fastapi \\\n    >=0.105\nredis\n")],
            expect: reads(&["fastapi     >=0.105", "redis"]),
        },
        Case {
            what: "several joins make one line, numbered by its first line",
            files: vec![text(
                "a.txt",
                "redis\nuvicorn\\\n[standard\\\n>=0.24\nalembic\n",
            )],
            expect: refused(
                "a.txt:2",
                &["`uvicorn[standard>=0.24` is not a valid requirement"],
            ),
        },
        Case {
            what: "a join followed by a comment line ends at the comment",
            files: vec![text("a.txt", "fastapi>=0.105 \\\n# web\nredis\n")],
            expect: reads(&["fastapi>=0.105", "redis"]),
        },
        Case {
            what: "a comment line ending in `\\` joins nothing",
            files: vec![text("a.txt", "# note \\\nredis\n")],
            expect: reads(&["redis"]),
        },
        Case {
            what: "a join on the last line of the file",
            files: vec![text("a.txt", "redis\nfastapi>=0.105 \\")],
            expect: reads(&["redis", "fastapi>=0.105"]),
        },
        // Line ends and encodings.
        Case {
            what: "blank and whitespace-only lines",
            files: vec![text("a.txt", "\n   \n\t\nredis\n\n \t \n")],
            expect: reads(&["redis"]),
        },
        Case {
            what: "no newline after the last line",
            files: vec![text("a.txt", "redis\nalembic>=1.12  # migrations")],
            expect: reads(&["redis", "alembic>=1.12"]),
        },
        Case {
            what: "CRLF line ends, with comments and a join",
            files: vec![text(
                "a.txt",
                "# cache\r\nredis  # client\r\n\r\nfastapi \\\r\n>=0.105\r\n",
            )],
            expect: reads(&["redis", "fastapi >=0.105"]),
        },
        Case {
            what: "a lone CR ends a line",
            files: vec![text("a.txt", "redis\ralembic\r")],
            expect: reads(&["redis", "alembic"]),
        },
        Case {
            what: "a UTF-8 byte-order mark",
            files: vec![text("a.txt", "\u{feff}redis\n")],
            expect: reads(&["redis"]),
        },
        Case {
            what: "UTF-16 with its byte-order mark",
            files: vec![("a.txt", utf16)],
            expect: reads(&["redis>=5"]),
        },
        Case {
            what: "line numbers count CRLF lines and the BOM line",
            files: vec![text("a.txt", "\u{feff}# c\r\nredis\r\n!bad\r\n")],
            expect: refused("a.txt:3", &["`!bad` is not a valid requirement"]),
        },
        // Includes.
        Case {
            what: "`-r` nested, each relative to the file that includes it",
            files: vec![
                text("app/requirements.txt", "-r ../shared/web.txt\nflask\n"),
                text("shared/web.txt", "-r base.txt  # models\nfastapi\n"),
                text("shared/base.txt", "pydantic>=2\n"),
            ],
            expect: reads(&["pydantic>=2", "fastapi", "flask"]),
        },
        Case {
            what: "`--requirement=`, `--requirement FILE`, `-rFILE` and quotes",
            files: vec![
                text(
                    "a.txt",
                    "--requirement=b.txt\n--requirement c.txt\n-rd.txt\n-r \"e.txt\"\n",
                ),
                text("b.txt", "bb\n"),
                text("c.txt", "cc\n"),
                text("d.txt", "dd\n"),
                text("e.txt", "ee\n"),
            ],
            expect: reads(&["bb", "cc", "dd", "ee"]),
        },
        Case {
            what: "`-c` and `--constraint=` nested; all a constraints file holds constrains",
            files: vec![
                text("a.txt", "redis\n-c pins/c.txt\n"),
                text(
                    "pins/c.txt",
                    "redis<6\n--constraint=more.txt\n-r extra.txt\n",
                ),
                text("pins/more.txt", "alembic==1.12\n"),
                text("pins/extra.txt", "fastapi<1\n"),
            ],
            expect: Expect::Reads {
                requirements: &["redis"],
                constraints: &["redis<6", "fastapi<1", "alembic==1.12"],
            },
        },
        Case {
            what: "an include cycle",
            files: vec![
                text("a.txt", "-r b.txt\n"),
                text("b.txt", "redis\n-r a.txt\n"),
            ],
            expect: refused("b.txt", &["cycle", "a.txt -> ", "b.txt -> "]),
        },
        Case {
            what: "an include that does not exist",
            files: vec![text("a.txt", "redis\n-r missing.txt\n")],
            expect: refused("a.txt:2", &["missing.txt does not exist"]),
        },
        Case {
            what: "a remote include",
            files: vec![text("a.txt", "-r https://example.com/reqs.txt\n")],
            expect: refused("a.txt:1", &["read from this machine only"]),
        },
        Case {
            what: "a file named without `-r`",
            files: vec![text("a.txt", "base.txt\n"), text("base.txt", "redis\n")],
            expect: refused("a.txt:1", &["-r base.txt"]),
        },
        // Local projects.
        Case {
            what: "`-e` and `--editable=` paths relative to the including file",
            files: vec![
                text(
                    "reqs/dev.txt",
                    "-e ../libs/alpha\n--editable=../libs/beta\n",
                ),
                text(ALPHA.0, ALPHA.1),
                text(BETA.0, BETA.1),
            ],
            expect: reads(&["-e ./libs/alpha", "-e ./libs/beta"]),
        },
        Case {
            what: "a bare path is a project built into a wheel",
            files: vec![
                text("reqs/prod.txt", "../libs/beta  # built\n"),
                text(BETA.0, BETA.1),
            ],
            expect: reads(&["./libs/beta"]),
        },
        Case {
            what: "a local path that holds no project",
            files: vec![text("a.txt", "./nothing-here\n")],
            expect: refused("a.txt:1", &["not a Python project folder"]),
        },
        Case {
            what: "a local archive file",
            files: vec![
                text("a.txt", "./dist/thing-1.0-py3-none-any.whl\n"),
                text("dist/thing-1.0-py3-none-any.whl", ""),
            ],
            expect: refused("a.txt:1", &["is a file", "--find-links"]),
        },
        Case {
            what: "extras of a local project",
            files: vec![
                text("a.txt", "-e ./libs/alpha[dev]\n"),
                text(ALPHA.0, ALPHA.1),
            ],
            expect: refused("a.txt:1", &["extras of a local project"]),
        },
        Case {
            what: "an editable VCS checkout",
            files: vec![text("a.txt", "-e git+https://example.com/r.git#egg=r\n")],
            expect: refused("a.txt:1", &["VCS requirements are not supported"]),
        },
        Case {
            what: "a local project read as a constraint",
            files: vec![
                text("a.txt", "redis\n-c c.txt\n"),
                text("c.txt", "-e ./libs/alpha\n"),
                text(ALPHA.0, ALPHA.1),
            ],
            expect: refused("c.txt:1", &["read as a constraint", "a.txt:2"]),
        },
        // Requirements.
        Case {
            what: "extras and markers, as written",
            files: vec![text(
                "a.txt",
                "uvicorn[standard]>=0.24 ; python_version >= \"3.8\"  # server\n\
                 python-jose[cryptography]>=3.3.0\n",
            )],
            expect: reads(&[
                "uvicorn[standard]>=0.24 ; python_version >= \"3.8\"",
                "python-jose[cryptography]>=3.3.0",
            ]),
        },
        Case {
            what: "a named VCS requirement",
            files: vec![text(
                "a.txt",
                "thing @ git+https://example.com/thing.git@main\n",
            )],
            expect: refused("a.txt:1", &["VCS requirements are not supported"]),
        },
        Case {
            what: "`--hash` options after a requirement, across a join",
            files: vec![("a.txt", hashed.into_bytes())],
            expect: reads(&[
                "redis==5.0.1 --hash=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef \
                 --hash=sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
            ]),
        },
        Case {
            what: "a hash with a short digest",
            files: vec![text("a.txt", "redis==5 --hash=sha256:abc\n")],
            expect: refused("a.txt:1", &["64 hexadecimal digits"]),
        },
        Case {
            what: "a hash with an algorithm pip does not accept",
            files: vec![text(
                "a.txt",
                "redis==5 --hash=md5:0123456789abcdef0123456789abcdef\n",
            )],
            expect: refused("a.txt:1", &["sha256:HEX"]),
        },
        Case {
            what: "`--hash` on a line of its own",
            files: vec![text("a.txt", "redis==5\n--hash=sha256:abc\n")],
            expect: refused("a.txt:2", &["`--hash` is not supported here", "same line"]),
        },
        Case {
            what: "`--hash` on a local project",
            files: vec![
                text("a.txt", &format!("./libs/beta --hash={SHA_A}\n")),
                text(BETA.0, BETA.1),
            ],
            expect: refused("a.txt:1", &["no file for `--hash` to check"]),
        },
        // Options a tier cannot honour.
        Case {
            what: "`--pre`",
            files: vec![text("a.txt", "redis\n--pre\n")],
            expect: refused("a.txt:2", &["`--pre` is not supported here", "name>=2.0b1"]),
        },
        Case {
            what: "`--prefer-binary`",
            files: vec![text("a.txt", "--prefer-binary\n")],
            expect: refused("a.txt:1", &["`--prefer-binary` is not supported here"]),
        },
        Case {
            what: "`--trusted-host`",
            files: vec![text("a.txt", "--trusted-host example.com\n")],
            expect: refused("a.txt:1", &["`--trusted-host`", "SSL_CERT_FILE"]),
        },
        Case {
            what: "`--use-feature`",
            files: vec![text("a.txt", "--use-feature=truststore\n")],
            expect: refused("a.txt:1", &["`--use-feature` is not supported here"]),
        },
        Case {
            what: "`--no-binary`",
            files: vec![text("a.txt", "--no-binary :all:\n")],
            expect: refused("a.txt:1", &["`--no-binary`", "build policies"]),
        },
        Case {
            what: "`--only-binary`",
            files: vec![text("a.txt", "--only-binary=:all:\n")],
            expect: refused("a.txt:1", &["`--only-binary`", "build policies"]),
        },
        Case {
            what: "`--require-hashes`",
            files: vec![text("a.txt", "--require-hashes\n")],
            expect: refused("a.txt:1", &["`--require-hashes`", "not yet compared"]),
        },
        Case {
            what: "a build option after a requirement",
            files: vec![text("a.txt", "redis --config-settings=key=value\n")],
            expect: refused("a.txt:1", &["`--config-settings`", "not passed on to uv"]),
        },
        Case {
            what: "an option pip does not know either",
            files: vec![text("a.txt", "--frobnicate\n")],
            expect: refused("a.txt:1", &["not an option of requirement files"]),
        },
        Case {
            what: "two different `--index-url`s in one tier",
            files: vec![
                text("a.txt", "-i https://one.example/simple\n-r b.txt\n"),
                text("b.txt", "redis\n--index-url https://two.example/simple\n"),
            ],
            expect: refused("b.txt:2", &["conflicts with", "a.txt:1"]),
        },
    ]
}

/// Writes the case's files under `root` with a tiers.toml whose one set
/// reads the first file.
fn load(root: &Path, files: &[(&str, Vec<u8>)]) -> Result<Config, String> {
    for (path, content) in files {
        let path = root.join(path);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, content).unwrap();
    }
    let tiers = format!(
        "[sets.s]\nfile = \"{}\"\n\n[tiers.t]\nsets = [\"s\"]\n",
        files[0].0
    );
    fs_err::write(root.join("tiers.toml"), &tiers).unwrap();
    Config::parse(&tiers, ConfigSource::File(root.join("tiers.toml")), root)
        .map_err(|err| err.to_string())
}

fn described(lines: &[tstore::config::RequirementLine]) -> Vec<String> {
    lines
        .iter()
        .map(|line| {
            let hashes: String = line.hashes.iter().map(|h| format!(" --hash={h}")).collect();
            format!("{}{hashes}", line.text)
        })
        .collect()
}

#[test]
fn requirement_files_are_read_as_pip_and_uv_read_them() {
    let mut failures = Vec::new();
    for case in cases() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs_err::canonicalize(dir.path()).unwrap();
        let result = load(&root, &case.files);
        let problem = match (&case.expect, result) {
            (
                Expect::Reads {
                    requirements,
                    constraints,
                },
                Ok(config),
            ) => {
                let tier = &config.tiers["t"];
                let got = (described(&tier.requirements), described(&tier.constraints));
                (got.0 != *requirements || got.1 != *constraints)
                    .then(|| format!("read {got:?}, expected ({requirements:?}, {constraints:?})"))
            }
            (Expect::Reads { .. }, Err(err)) => Some(format!("refused: {err}")),
            (Expect::Refused { at, saying }, Err(err)) => {
                let location = format!("{}/{at}", root.display());
                let placed = err.starts_with(&format!("{location}:"))
                    || err.starts_with(&format!("{location} "))
                    || (!at.contains(':') && err.starts_with(&location));
                let missing: Vec<_> = saying.iter().filter(|s| !err.contains(*s)).collect();
                (!placed || !missing.is_empty())
                    .then(|| format!("refused at the wrong place or missing {missing:?}: {err}"))
            }
            (Expect::Refused { .. }, Ok(config)) => Some(format!(
                "accepted: {:?}",
                described(&config.tiers["t"].requirements)
            )),
        };
        if let Some(problem) = problem {
            failures.push(format!("{}: {problem}", case.what));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn env_vars_are_expanded_after_comments_are_removed() {
    // CARGO_MANIFEST_DIR is set for test runs, so no test changes the
    // environment of its process.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = fs_err::canonicalize(dir.path()).unwrap();
    let files = [text(
        "a.txt",
        "-r ${CARGO_MANIFEST_DIR}/tests/fixtures/tekton-shaped/shared/requirements/base.txt\n\
         thing-${TSTORE_SURELY_UNSET_VARIABLE}\n",
    )];
    let err = load(&root, &files).unwrap_err();
    // An unset variable is left as written, which is no requirement.
    assert!(
        err.contains("a.txt:2") && err.contains("thing-${TSTORE_SURELY_UNSET_VARIABLE}"),
        "{err}"
    );

    fs_err::write(
        root.join("a.txt"),
        "-r ${CARGO_MANIFEST_DIR}/tests/fixtures/tekton-shaped/shared/requirements/base.txt\n\
         -f ${CARGO_MANIFEST_DIR}/wheels  # local wheels\n",
    )
    .unwrap();
    let tiers = "[sets.s]\nfile = \"a.txt\"\n\n[tiers.t]\nsets = [\"s\"]\n";
    let config = Config::parse(tiers, ConfigSource::File(root.join("tiers.toml")), &root).unwrap();
    let tier = &config.tiers["t"];
    assert!(
        tier.requirements.iter().any(|r| r
            .origin
            .starts_with(&format!("{manifest}/tests/fixtures/tekton-shaped/"))),
        "{:?}",
        tier.requirements
    );
    assert_eq!(tier.index.find_links, [format!("{manifest}/wheels")]);
}

#[test]
fn index_options_apply_to_the_tier_that_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = fs_err::canonicalize(dir.path()).unwrap();
    let files = [
        text(
            "reqs/a.txt",
            "-i https://one.example/simple  # main\n\
             --extra-index-url=https://two.example/simple\n\
             -f ../wheels\n--no-index\nredis\n",
        ),
        text("wheels/.keep", ""),
    ];
    let config = load(&root, &files).unwrap();
    let index = &config.tiers["t"].index;
    assert_eq!(
        index.index_url.as_deref(),
        Some("https://one.example/simple")
    );
    assert_eq!(index.extra_index_urls, ["https://two.example/simple"]);
    assert_eq!(index.find_links, ["wheels"]);
    assert!(index.no_index);
}
