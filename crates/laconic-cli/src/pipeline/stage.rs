//! Stages of a pipeline run: each is one `laconic` command, run as a child process with its
//! own progress on stderr. A finished stage leaves a marker (`RUN/stages/NAME.json`: the
//! command, digests of its inputs, its time and its stdout); a re-run skips it while the
//! command and inputs are the same, and refuses to go on when they changed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

/// One stage: a `laconic` command line, the files it reads and the files it writes.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Short name (the marker's file name).
    pub name: String,
    /// What it does, for the progress lines.
    pub title: String,
    /// Arguments after `laconic`.
    pub args: Vec<String>,
    /// Files or directories it reads (their content is part of the marker).
    pub inputs: Vec<PathBuf>,
    /// Files or directories it writes (all must exist for the stage to count as done).
    pub outputs: Vec<PathBuf>,
    /// Appended when the stage was started before and can continue (`--resume`).
    pub resume: Option<Vec<String>>,
    /// Removed before a fresh (not resumed) start: partial outputs of a killed run that the
    /// command would refuse to overwrite.
    pub clear: Vec<PathBuf>,
}

/// What a finished stage recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// The command (arguments after `laconic`).
    pub command: Vec<String>,
    /// Content digests of the inputs, in order.
    pub inputs: Vec<(String, String)>,
    /// Seconds the stage took (the last attempt).
    pub seconds: f64,
    /// What the command printed on stdout.
    pub stdout: String,
}

/// `a` as a POSIX shell word: unchanged when it is safe, else in single quotes.
pub fn shell_quote(a: &str) -> String {
    let safe = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
    if safe {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

fn quoted(args: &[String]) -> String {
    args.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// FNV-1a over the bytes of a file, or of every file under a directory in name order (names
/// included).
pub fn digest(path: &Path) -> Result<String> {
    fn feed(h: &mut u64, bytes: &[u8]) {
        for &b in bytes {
            *h ^= u64::from(b);
            *h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn walk(h: &mut u64, path: &Path, root: &Path) -> Result<()> {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("reading {}", path.display()))?;
            entries.sort();
            for e in entries {
                walk(h, &e, root)?;
            }
        } else {
            let rel = path.strip_prefix(root).unwrap_or(path);
            feed(h, rel.to_string_lossy().as_bytes());
            let mut f =
                std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f
                    .read(&mut buf)
                    .with_context(|| format!("reading {}", path.display()))?;
                if n == 0 {
                    break;
                }
                feed(h, &buf[..n]);
            }
        }
        Ok(())
    }
    if !path.exists() {
        bail!("{}: no such file or directory", path.display());
    }
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    walk(&mut h, path, path)?;
    Ok(format!("{h:016x}"))
}

/// Runs stages in a run directory.
pub struct Runner {
    /// The `laconic` executable.
    exe: PathBuf,
    /// `RUN/stages`.
    markers: PathBuf,
    /// Stages in the plan (for `[i/n]`).
    total: usize,
    done: usize,
    /// Print the commands, run nothing.
    dry_run: bool,
}

/// How a stage ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Its marker.
    pub marker: Marker,
    /// Whether it was skipped as already finished.
    pub skipped: bool,
}

impl Runner {
    /// A runner for `total` stages writing markers under `run/stages`; a dry run only prints
    /// the commands.
    pub fn new(run: &Path, total: usize, dry_run: bool) -> Result<Self> {
        let exe = std::env::current_exe().context("locating the laconic executable")?;
        let markers = run.join("stages");
        std::fs::create_dir_all(&markers)
            .with_context(|| format!("creating {}", markers.display()))?;
        Ok(Self {
            exe,
            markers,
            total,
            done: 0,
            dry_run,
        })
    }

    fn marker_path(&self, stage: &Stage) -> PathBuf {
        self.markers.join(format!("{}.json", stage.name))
    }

    /// The marker of a stage that finished before, if any.
    pub fn finished(&self, name: &str) -> Result<Option<Marker>> {
        let path = self.markers.join(format!("{name}.json"));
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let m = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a stage marker", path.display()))?;
        Ok(Some(m))
    }

    /// Runs a stage, or skips it when it finished before with the same command and inputs.
    pub fn run(&mut self, stage: &Stage) -> Result<Outcome> {
        self.done += 1;
        let head = format!("[{}/{}] {}", self.done, self.total, stage.title);
        if self.dry_run {
            eprintln!("{head}\n  laconic {}", quoted(&stage.args));
            return Ok(Outcome {
                marker: Marker {
                    command: stage.args.clone(),
                    inputs: Vec::new(),
                    seconds: 0.0,
                    stdout: String::new(),
                },
                skipped: true,
            });
        }
        for input in &stage.inputs {
            if !input.exists() {
                bail!(
                    "stage {}: its input {} is missing (an earlier stage's output was removed? \
                     delete {} to redo that stage)",
                    stage.name,
                    input.display(),
                    self.markers.display()
                );
            }
        }
        let inputs: Vec<(String, String)> = stage
            .inputs
            .iter()
            .map(|p| Ok((p.display().to_string(), digest(p)?)))
            .collect::<Result<_>>()?;
        let marker_path = self.marker_path(stage);
        if let Some(old) = self.finished(&stage.name)? {
            let missing: Vec<&PathBuf> = stage.outputs.iter().filter(|p| !p.exists()).collect();
            if old.command == stage.args && old.inputs == inputs && missing.is_empty() {
                eprintln!("{head}: done before ({:.0} s), skipped", old.seconds);
                return Ok(Outcome {
                    marker: old,
                    skipped: true,
                });
            }
            let why = if old.command != stage.args {
                format!(
                    "its command changed\n  was: laconic {}\n  now: laconic {}",
                    old.command.join(" "),
                    stage.args.join(" ")
                )
            } else if old.inputs != inputs {
                let changed: Vec<&str> = old
                    .inputs
                    .iter()
                    .zip(&inputs)
                    .filter(|(a, b)| a != b)
                    .map(|(a, _)| a.0.as_str())
                    .collect();
                format!("its inputs changed since it ran: {}", changed.join(", "))
            } else {
                format!(
                    "its outputs are missing: {}",
                    missing
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            bail!(
                "stage {} finished before, but {why}.\nTo redo it (and what follows), delete {} \
                 and its outputs ({}), or write the run to another directory.",
                stage.name,
                marker_path.display(),
                stage
                    .outputs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut args = stage.args.clone();
        match &stage.resume {
            Some(extra) => {
                eprintln!("{head}: continuing where it stopped");
                args.extend(extra.iter().cloned());
            }
            None => {
                for p in &stage.clear {
                    if p.is_dir() {
                        std::fs::remove_dir_all(p)
                    } else if p.exists() {
                        std::fs::remove_file(p)
                    } else {
                        Ok(())
                    }
                    .with_context(|| format!("removing the partial output {}", p.display()))?;
                }
                eprintln!("{head}");
            }
        }
        eprintln!(
            "  laconic {}",
            args.iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let started = Instant::now();
        let child = Command::new(&self.exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        let out = child
            .wait_with_output()
            .with_context(|| format!("waiting for stage {}", stage.name))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(anyhow!(
                "stage {} failed ({}); what it wrote is kept, and running the pipeline again \
                 continues from there",
                stage.name,
                out.status
            ));
        }
        let marker = Marker {
            command: stage.args.clone(),
            inputs,
            seconds: started.elapsed().as_secs_f64(),
            stdout,
        };
        let json = serde_json::to_vec_pretty(&marker)?;
        laconic_train::checkpoint::write_atomic(&marker_path, &json)?;
        eprintln!("  done in {:.0} s", marker.seconds);
        Ok(Outcome {
            marker,
            skipped: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("--kv-budget"), "--kv-budget");
        assert_eq!(
            shell_quote("procedural:count=8,seed=99"),
            "procedural:count=8,seed=99"
        );
        assert_eq!(shell_quote("Solve it. `x`"), "'Solve it. `x`'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn digests_follow_content_and_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        std::fs::create_dir(&a).expect("mkdir");
        std::fs::write(a.join("x"), "one").expect("write");
        let d1 = digest(&a).expect("digest");
        std::fs::write(a.join("x"), "two").expect("write");
        let d2 = digest(&a).expect("digest");
        assert_ne!(d1, d2);
        std::fs::rename(a.join("x"), a.join("y")).expect("rename");
        assert_ne!(digest(&a).expect("digest"), d2);
        assert_eq!(
            digest(&a.join("y")).expect("file"),
            digest(&a.join("y")).expect("again")
        );
        assert!(digest(&dir.path().join("none")).is_err());
    }
}
