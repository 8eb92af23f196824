//! The lines of a requirement file as pip splits them: decoding, line
//! ends, `\` continuations, comments, `${VAR}`.

/// The file's text: UTF-8 without its byte-order mark, or UTF-16 with one.
pub(super) fn decode(bytes: &[u8]) -> Option<String> {
    let utf16 = |rest: &[u8], from: fn([u8; 2]) -> u16| {
        if !rest.len().is_multiple_of(2) {
            return None;
        }
        let units: Vec<u16> = rest.chunks_exact(2).map(|c| from([c[0], c[1]])).collect();
        String::from_utf16(&units).ok()
    };
    if let Some(rest) = bytes.strip_prefix(b"\xef\xbb\xbf") {
        String::from_utf8(rest.to_vec()).ok()
    } else if let Some(rest) = bytes.strip_prefix(b"\xff\xfe") {
        utf16(rest, u16::from_le_bytes)
    } else if let Some(rest) = bytes.strip_prefix(b"\xfe\xff") {
        utf16(rest, u16::from_be_bytes)
    } else {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// Lines split at `\n`, `\r\n` or a lone `\r`.
pub(super) fn physical_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while let Some(end) = rest.find(['\n', '\r']) {
        lines.push(&rest[..end]);
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    if !rest.is_empty() {
        lines.push(rest);
    }
    lines
}

/// Logical lines, numbered by the line they start on: continuations joined,
/// comments removed, `${VAR}` expanded, blank lines dropped.
pub(super) fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut finish = |start: usize, joined: &str| {
        let line = strip_comment(joined).trim();
        if !line.is_empty() {
            out.push((start, uv_pep508::expand_env_vars(line).into_owned()));
        }
    };
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in physical_lines(text).into_iter().enumerate() {
        let comment_line = raw.trim_start().starts_with('#');
        if !comment_line && let Some(body) = raw.strip_suffix('\\') {
            pending
                .get_or_insert_with(|| (index + 1, String::new()))
                .1
                .push_str(body);
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        if !comment_line {
            joined.push_str(raw);
        }
        finish(start, &joined);
    }
    if let Some((start, joined)) = pending {
        finish(start, &joined);
    }
    out
}

/// `line` up to its comment: a `#` at the start or after whitespace.
fn strip_comment(line: &str) -> &str {
    let mut after_space = true;
    for (index, c) in line.char_indices() {
        if c == '#' && after_space {
            return &line[..index];
        }
        after_space = c.is_whitespace();
    }
    line
}
