//! JSONL plumbing shared by the readers and writers: numbered lines, JSON errors that name
//! `file:line`, and atomic whole-file writes.
//!
//! Lines are read as bytes and decoded one by one, so a file with one bad byte reports the
//! line that holds it. Blank lines are skipped but still counted, so line numbers match what
//! an editor shows.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::{Result, TraceError};

/// One non-blank line of a JSONL file.
pub(crate) struct Line {
    /// 1-based line number.
    pub number: usize,
    /// The text, without its line terminator.
    pub text: String,
    /// Whether the line ended with `\n` (only the last line of a file can lack one).
    pub terminated: bool,
}

/// Reads every non-blank line of `path`.
pub(crate) fn read_lines(path: &Path) -> Result<Vec<Line>> {
    let file = File::open(path).map_err(|source| TraceError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| TraceError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        if n == 0 {
            break;
        }
        number += 1;
        let terminated = buf.last() == Some(&b'\n');
        if terminated {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        let mut text = String::from_utf8(std::mem::take(&mut buf)).map_err(|e| {
            line_error(
                path,
                number,
                format!(
                    "not valid UTF-8 (bad byte at column {})",
                    e.utf8_error().valid_up_to() + 1
                ),
            )
        })?;
        if number == 1 && text.starts_with('\u{feff}') {
            text.drain(..'\u{feff}'.len_utf8());
        }
        if text.trim().is_empty() {
            continue;
        }
        lines.push(Line {
            number,
            text,
            terminated,
        });
    }
    Ok(lines)
}

/// An error for line `line` of `path`.
pub(crate) fn line_error(path: &Path, line: usize, message: impl Into<String>) -> TraceError {
    TraceError::Line {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// serde_json's message without its own "at line 1 column N" suffix (we parse one line at a
/// time, so its line number is always 1 and ours is the one that matters).
pub(crate) fn json_message(err: &serde_json::Error) -> String {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
    if err.is_syntax() || err.is_eof() {
        format!("invalid JSON: {message} (column {})", err.column())
    } else {
        message
    }
}

/// Parses one line as JSON into `T`, with an error naming `path:line`. A last line that fails
/// and has no newline gets a hint that a write was probably cut short.
pub(crate) fn parse_line<T: DeserializeOwned>(path: &Path, line: &Line) -> Result<T> {
    serde_json::from_str(&line.text).map_err(|err| {
        let mut message = json_message(&err);
        if !line.terminated {
            message.push_str(
                "; this last line has no newline: it is probably truncated (an interrupted write)",
            );
        }
        line_error(path, line.number, message)
    })
}

/// `PATH.tmp`: the temporary file an atomic write of `PATH` goes through.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `path` atomically: `write` fills `PATH.tmp`, which is flushed, synced to disk and
/// renamed over `path`; the directory is then synced (best effort). A reader sees the old file
/// or the new one, never a half-written one. On failure the temporary file is removed.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<()> {
    let tmp = tmp_path(path);
    let result = (|| -> io::Result<()> {
        let mut writer = BufWriter::new(File::create(&tmp)?);
        write(&mut writer)?;
        writer.flush()?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(TraceError::Write {
            path: path.to_path_buf(),
            source,
        });
    }
    sync_dir(path);
    Ok(())
}

/// Reads every line of a JSONL file as a `T`, with errors that name `file:line` (a last line
/// cut short by an interrupted write is reported as such; remove it first with
/// [`crate::schema::drop_incomplete_tail`] when resuming).
pub fn read_json_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    read_lines(path)?
        .iter()
        .map(|line| parse_line(path, line))
        .collect()
}

/// Appends `value` to `file` as one whole JSON line, then flushes and syncs it (`sync_data`):
/// a line reported written survives a crash. Open the file in append mode; if a killed run
/// left it mid-line, a newline is written first so the new line stays whole.
pub fn append_json_line<T: serde::Serialize>(file: &mut File, value: &T) -> io::Result<()> {
    let json = serde_json::to_string(value)?;
    let mut line = String::with_capacity(json.len() + 2);
    if crate::schema::ends_mid_line(file)? {
        line.push('\n');
    }
    line.push_str(&json);
    line.push('\n');
    file.write_all(line.as_bytes())?;
    file.flush()?;
    file.sync_data()
}

/// Syncs the directory that holds `path`, so that a rename survives a power cut. Best effort:
/// not every platform can open a directory for syncing.
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_message_drops_serde_position_and_keeps_column() {
        let err = serde_json::from_str::<serde_json::Value>("{\"a\": tru}")
            .expect_err("invalid JSON must fail");
        let message = json_message(&err);
        assert!(message.starts_with("invalid JSON: "), "{message}");
        assert!(!message.contains("line 1"), "{message}");
        assert!(message.contains("column"), "{message}");
    }

    #[test]
    fn tmp_path_appends_suffix() {
        assert_eq!(
            tmp_path(Path::new("out/traces.jsonl")),
            PathBuf::from("out/traces.jsonl.tmp")
        );
    }

    #[test]
    fn lines_are_numbered_like_an_editor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.jsonl");
        fs::write(&path, "\u{feff}{\"a\":1}\r\n\n  \n{\"b\":2}\n{\"c\":").expect("write");
        let lines = read_lines(&path).expect("read");
        let numbers: Vec<usize> = lines.iter().map(|l| l.number).collect();
        assert_eq!(numbers, vec![1, 4, 5]);
        assert_eq!(lines[0].text, "{\"a\":1}");
        assert!(lines[1].terminated);
        assert!(!lines[2].terminated);
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.jsonl");
        fs::write(&path, b"{}\n{\"a\":\"\xff\"}\n").expect("write");
        let err = read_lines(&path).err().expect("bad UTF-8 must fail");
        let message = err.to_string();
        assert!(message.contains("x.jsonl:2: not valid UTF-8"), "{message}");
    }
}
