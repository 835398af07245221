//! Backup set names (`20261122T031500Z[-N]`), their times, and retention.

use super::*;

fn utc(secs: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// `20261122T031500Z`
pub(super) fn set_timestamp(secs: i64) -> String {
    utc(secs).format("%Y%m%dT%H%M%SZ").to_string()
}

/// `2026-11-22T03:15:00Z`
pub(super) fn rfc3339(secs: i64) -> String {
    utc(secs).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A set folder name: `YYYYMMDDTHHMMSSZ` with an optional `-N` suffix. Returns the sort key
/// (unix seconds, suffix) or `None` for anything else (such folders are never touched).
pub fn parse_set_name(name: &str) -> Option<(i64, u32)> {
    let (stamp, suffix) = match name.split_once('-') {
        Some((s, n)) => {
            if n.is_empty() || n.len() > 6 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (s, n.parse::<u32>().ok()?)
        }
        None => (name, 0),
    };
    // Exactly the shape `set_timestamp` writes: chrono alone would accept shorter fields.
    let b = stamp.as_bytes();
    let shape = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !shape {
        return None;
    }
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").ok()?;
    Some((t.and_utc().timestamp(), suffix))
}

/// Which sets to delete: all but the newest `keep` complete ones, plus incomplete ones that are
/// older than an hour. Names that are not set names are never returned.
pub(super) fn plan_prune(sets: &[(String, bool)], keep: usize, now: i64) -> Vec<String> {
    let mut parsed: Vec<((i64, u32), &str, bool)> = sets
        .iter()
        .filter_map(|(n, complete)| parse_set_name(n).map(|k| (k, n.as_str(), *complete)))
        .collect();
    // Newest first.
    parsed.sort_by_key(|p| std::cmp::Reverse(p.0));
    let mut kept = 0;
    let mut out = Vec::new();
    for ((secs, _), name, complete) in parsed {
        if complete {
            if kept < keep {
                kept += 1;
            } else {
                out.push(name.to_string());
            }
        } else if now - secs > STALE_INCOMPLETE_SECS {
            out.push(name.to_string());
        }
    }
    out
}

/// Creates `parent/<prefix><timestamp>[-N]` atomically (never reusing an existing folder).
pub(super) fn create_set_dir(
    parent: &Path,
    prefix: &str,
    now: i64,
) -> anyhow::Result<(String, PathBuf)> {
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create backup folder {}", parent.display()))?;
    let stamp = format!("{prefix}{}", set_timestamp(now));
    // Start above every existing suffix of this second, so names keep sorting in creation
    // order even after retention removed the unsuffixed one.
    let first = std::fs::read_dir(parent)
        .with_context(|| format!("cannot list {}", parent.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let rest = name.strip_prefix(stamp.as_str())?;
            match rest {
                "" => Some(1),
                _ => rest.strip_prefix('-')?.parse::<u32>().ok().map(|n| n + 1),
            }
        })
        .max()
        .unwrap_or(0);
    for n in first..first + 10_000 {
        let name = if n == 0 {
            stamp.clone()
        } else {
            format!("{stamp}-{n}")
        };
        let path = parent.join(&name);
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            // The token database holds (encrypted) credentials: owner only.
            builder.mode(0o700);
        }
        match builder.create(&path) {
            Ok(()) => return Ok((name, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", path.display()));
            }
        }
    }
    bail!(
        "cannot create a backup set in {}: too many sets named {stamp}",
        parent.display()
    )
}
