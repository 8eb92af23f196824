//! The option syntax of requirement files (`--name=value`, `-xvalue`,
//! options after a requirement) and why a tier refuses pip's options it
//! cannot honour.

use crate::config::ConfigError;

/// Options pip reads in requirement files that a tier cannot honour, and
/// why; any other option is unknown to pip as well.
pub(super) fn refusal(option: &str) -> String {
    let why = match option {
        "--pre" => {
            "a tier has no switch that allows every pre-release; write the pre-release into \
             the requirement (`name>=2.0b1`), which uv then accepts"
        }
        "--prefer-binary" => {
            "a tier's lock takes the newest version allowed; pin a version that has wheels \
             for your platforms"
        }
        "--no-binary" | "--only-binary" => {
            "tstore does not hand build policies to uv: a tier installs the wheel that fits \
             its interpreter and builds an sdist only when no wheel fits"
        }
        "--require-hashes" => {
            "every file tstore installs is checked against the sha256 in the lock, but \
             requirement-file hashes are not yet compared with the lock, so hash-checking mode \
             cannot be promised"
        }
        "--trusted-host" => {
            "tstore always verifies TLS; give the host's certificate authority through \
             SSL_CERT_FILE instead"
        }
        "--use-feature" => "it switches features of pip itself, which neither uv nor tstore has",
        "--hash" => {
            "a hash checks the requirement written before it on the same line \
             (`name==1.0 --hash=sha256:…`)"
        }
        "-C" | "--config-settings" | "--global-option" | "--install-option" | "--build-option" => {
            "build options for pip's build step are not passed on to uv"
        }
        _ => {
            return format!(
                "`{option}` is not an option of requirement files: tstore reads `-r`, `-c`, \
                 `-e`, `--index-url`, `--extra-index-url`, `--find-links`, `--no-index` and \
                 `--hash` after a requirement"
            );
        }
    };
    format!("`{option}` is not supported here: {why}")
}

/// `--hash=ALGO:HEX` options after a requirement; any other option there is
/// refused.
pub(super) fn hash_options(options: &str, origin: &str) -> Result<Vec<String>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        location: origin.to_string(),
        message,
    };
    let mut hashes = Vec::new();
    let mut words = options.split_whitespace();
    while let Some(word) = words.next() {
        let (name, glued) = split_option(word);
        if name != "--hash" {
            return Err(invalid(refusal(name)));
        }
        let value = match glued {
            Some(value) => value.to_string(),
            None => words
                .next()
                .ok_or_else(|| invalid("`--hash` needs a value (`sha256:HEX`)".to_string()))?
                .to_string(),
        };
        let digest_len = match value.split_once(':') {
            Some(("sha256", hex)) => (hex, 64),
            Some(("sha384", hex)) => (hex, 96),
            Some(("sha512", hex)) => (hex, 128),
            _ => {
                return Err(invalid(format!(
                    "`--hash={value}`: a hash is written `sha256:HEX` (or sha384, sha512)"
                )));
            }
        };
        let (hex, len) = digest_len;
        if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "`--hash={value}`: the digest should be {len} hexadecimal digits"
            )));
        }
        hashes.push(value);
    }
    Ok(hashes)
}

/// An option's name and its value: `--name=value`, `--name value`,
/// `-xvalue`, `-x value`, `-x=value`; quotes around the value removed.
pub(super) fn split_option(text: &str) -> (&str, Option<&str>) {
    let (name, rest) = if text.starts_with("--") {
        let end = text
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(text.len());
        text.split_at(end)
    } else {
        let end = text
            .char_indices()
            .nth(2)
            .map_or(text.len(), |(index, _)| index);
        text.split_at(end)
    };
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|q| rest.strip_prefix(*q)?.strip_suffix(*q))
        .unwrap_or(rest);
    (name, (!unquoted.is_empty()).then_some(unquoted))
}

/// A requirement and the options after it: they start at the first word
/// that begins with `-`.
pub(super) fn split_trailing_options(line: &str) -> (&str, &str) {
    let mut after_space = false;
    for (index, c) in line.char_indices() {
        if after_space && c == '-' {
            return (line[..index].trim_end(), &line[index..]);
        }
        after_space = c.is_whitespace();
    }
    (line.trim_end(), "")
}
