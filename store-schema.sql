-- tstore's SQLite index. Applied by src/store/db.rs when a store is opened;
-- the schema version lives in `PRAGMA user_version` (set by the code after this
-- script runs) so later versions can migrate an existing store.

-- One row per distinct file content. `key` is the blake3 hex digest of the
-- content, with a `-x` suffix when the file is executable: the exec bit is part
-- of an object's identity because hardlinks share one mode. The object itself
-- is `objects/<first two hex digits>/<key>`.
CREATE TABLE IF NOT EXISTS objects (
    key  TEXT PRIMARY KEY,
    size INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per ingested wheel, identified by the sha256 of the wheel file.
CREATE TABLE IF NOT EXISTS distributions (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,     -- normalized (PEP 503)
    version       TEXT NOT NULL,
    filename      TEXT NOT NULL,
    sha256        TEXT NOT NULL UNIQUE,
    size          INTEGER NOT NULL,
    tags          TEXT NOT NULL,     -- the wheel's compressed tag set, e.g. cp311-cp311-manylinux_2_17_x86_64
    url           TEXT,              -- where it was fetched from (or the sdist's URL), for repair
    ingested_at   INTEGER NOT NULL   -- unix seconds
);
CREATE INDEX IF NOT EXISTS distributions_name ON distributions (name, version);

-- Every file of a distribution, as the wheel names it.
CREATE TABLE IF NOT EXISTS files (
    dist_id INTEGER NOT NULL REFERENCES distributions (id) ON DELETE CASCADE,
    path    TEXT NOT NULL,           -- path inside the wheel
    object  TEXT REFERENCES objects (key),  -- NULL for empty files: never shared by link
    mode    INTEGER NOT NULL,        -- 420 (0644) or 493 (0755)
    size    INTEGER NOT NULL,
    sha256  TEXT NOT NULL,           -- urlsafe base64 without padding, as RECORD writes it (a wheel the lock pins: its RECORD's, not recomputed)
    PRIMARY KEY (dist_id, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_object ON files (object);

-- Wheels tstore built from sdists, keyed by the sdist's sha256 so each is built once.
-- Wheels built from local project folders use `local-tree:<blake3 of the source
-- tree>` (built installs) or `local-metadata:<blake3 of the metadata files>`
-- (editable installs, which use only the dist-info) as the key.
CREATE TABLE IF NOT EXISTS sdist_builds (
    sdist_sha256 TEXT PRIMARY KEY,
    dist_id      INTEGER NOT NULL REFERENCES distributions (id) ON DELETE CASCADE
) WITHOUT ROWID;

-- Materialized tiers: the stable venv path (a symlink) and the generation it
-- points at.
CREATE TABLE IF NOT EXISTS tiers (
    venv        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    config      TEXT NOT NULL,       -- tiers.toml path, or <embedded tiers.toml>
    current     INTEGER NOT NULL     -- generation number the venv path points at
) WITHOUT ROWID;

-- Every kept generation of a tier: a complete venv directory. The kept
-- generations of all tiers are gc roots.
CREATE TABLE IF NOT EXISTS generations (
    venv        TEXT NOT NULL REFERENCES tiers (venv) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    path        TEXT NOT NULL,       -- the generation's directory
    plan        TEXT NOT NULL,       -- hash of its manifest (manifests/<plan>.json)
    lock        TEXT NOT NULL,       -- pylock it was built from
    link_method TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (venv, number)
) WITHOUT ROWID;

-- The distributions each generation holds.
CREATE TABLE IF NOT EXISTS generation_distributions (
    venv    TEXT NOT NULL,
    number  INTEGER NOT NULL,
    dist_id INTEGER NOT NULL REFERENCES distributions (id),
    PRIMARY KEY (venv, number, dist_id),
    FOREIGN KEY (venv, number) REFERENCES generations (venv, number) ON DELETE CASCADE
) WITHOUT ROWID;

-- Bytecode compiled once per source content and interpreter (schema 2).
-- The pycs are PEP 552 checked-hash pycs: valid wherever the source is linked.
CREATE TABLE IF NOT EXISTS bytecode (
    source  TEXT NOT NULL,           -- object key of the .py, or 'empty' for an empty file
    tag     TEXT NOT NULL,           -- cache tag and magic number, e.g. cpython-311-a70d0d0a
    pyc     TEXT REFERENCES objects (key),  -- NULL: the source does not compile
    PRIMARY KEY (source, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bytecode_pyc ON bytecode (pyc);

-- Venvs made by pip or uv whose recorded files `tstore adopt` replaced by
-- links to objects (schema 3). gc forgets a venv once its folder is gone.
CREATE TABLE IF NOT EXISTS adopted_venvs (
    path        TEXT PRIMARY KEY,    -- the venv's absolute path
    adopted_at  INTEGER NOT NULL     -- unix seconds of the last adopt
) WITHOUT ROWID;

-- The objects an adopted venv links to: kept by gc while the venv exists.
CREATE TABLE IF NOT EXISTS adopted_objects (
    venv    TEXT NOT NULL REFERENCES adopted_venvs (path) ON DELETE CASCADE,
    object  TEXT NOT NULL REFERENCES objects (key),
    PRIMARY KEY (venv, object)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS adopted_objects_object ON adopted_objects (object);
