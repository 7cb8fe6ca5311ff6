//! `outpost file` and `chat send --file`: attachments up and down, with
//! progress bars. The daemon encrypts as the upload streams in and decrypts
//! as the file streams out, so neither side holds a whole file in memory.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use futures::StreamExt;
use outpost_node::{
    api::Upload,
    client::Client,
    core::{FileStatus, Sent},
};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{exit::Usage, output};

/// Bytes read from disk per upload piece.
const PIECE: usize = 256 << 10;
/// How often a waiting `file get` asks how far the download is.
const POLL: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Subcommand)]
pub(crate) enum FileCmd {
    /// Fetch an attached file (from any peer holding it, resuming where an
    /// earlier attempt or run stopped) and save it. Prints progress while it
    /// downloads; Ctrl-C leaves the download going on in the daemon.
    Get {
        /// The file's id (as `outpost chat log` shows it) or a unique prefix of it.
        id: String,
        /// Where to save it; the file's own name in this directory by default.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Replace PATH if it exists.
        #[arg(long)]
        force: bool,
        /// Give up waiting after SECS seconds (the download goes on in the
        /// daemon; `outpost file show ID` tells how far it is).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Show a file's name, size, and whether it is here.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

/// What `file get --json` prints.
#[derive(Serialize)]
struct Saved<'a> {
    #[serde(flatten)]
    file: &'a FileStatus,
    path: &'a Path,
}

fn bar(total: u64, message: &'static str, hidden: bool) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(message);
    if hidden {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// `chat send --file`: streams the file to the daemon, which posts it with
/// `text` once it is stored.
pub(crate) async fn send(
    client: &Client,
    space: &str,
    path: &Path,
    upload: Upload,
    json: bool,
) -> anyhow::Result<Sent> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Usage(format!("cannot read {}: {e}", path.display())))?;
    let size = file.metadata().await?.len();
    let name = match upload.name.is_empty() {
        false => upload.name.clone(),
        true => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Usage(format!("{} names no file", path.display())))?,
    };
    let mut query = format!("name={}", output::percent_encode(&name));
    if !upload.text.is_empty() {
        query += &format!("&text={}", output::percent_encode(&upload.text));
    }
    if let Some(r) = &upload.reply_to {
        query += &format!("&reply_to={}", output::percent_encode(r));
    }
    if let Some(c) = &upload.client_id {
        query += &format!("&client_id={}", output::percent_encode(c));
    }
    let progress = bar(size, "sending", json);
    let counted = progress.clone();
    let pieces = futures::stream::unfold(Some(file), move |file| {
        let progress = counted.clone();
        async move {
            let mut file = file?;
            let mut buf = vec![0u8; PIECE];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    progress.inc(n as u64);
                    Some((Ok(buf), Some(file)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    let sent = client
        .post_stream(&format!("/v1/chats/{space}/files?{query}"), pieces)
        .await;
    progress.finish_and_clear();
    Ok(sent?)
}

pub(crate) async fn run(client: &Client, cmd: FileCmd) -> anyhow::Result<()> {
    match cmd {
        FileCmd::Show { id, json } => {
            let status: FileStatus = client.get(&format!("/v1/files/{id}")).await?;
            if json {
                output::json(&status)?;
            } else {
                output::file(&status);
            }
        }
        FileCmd::Get {
            id,
            output: path,
            force,
            timeout,
            json,
        } => {
            let mut status: FileStatus = client.post(&format!("/v1/files/{id}/get"), &()).await?;
            let path = match path {
                Some(path) => path,
                None => default_path(&status.name)?,
            };
            if path.exists() && !force {
                return Err(Usage(format!(
                    "{} exists: pass --force to replace it, or -o PATH",
                    path.display()
                ))
                .into());
            }
            let id = status.id.to_string();
            if !status.complete {
                let deadline = timeout.map(|secs| tokio::time::Instant::now() + std::time::Duration::from_secs(secs));
                let progress = bar(status.size, "fetching", json);
                progress.set_message("waiting for a peer");
                while !status.complete {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        progress.finish_and_clear();
                        anyhow::bail!(TimedOut {
                            id: id.clone(),
                            secs: timeout.unwrap_or_default(),
                        });
                    }
                    tokio::time::sleep(POLL).await;
                    status = client.get(&format!("/v1/files/{id}")).await?;
                    if let Some(p) = status.progress.filter(|p| p.total > 0) {
                        progress.set_message("fetching");
                        progress.set_position(plain_position(p.have, p.total, status.size));
                    }
                }
                progress.finish_and_clear();
            }
            save(client, &status, &path).await?;
            if json {
                output::json(&Saved {
                    file: &status,
                    path: &path,
                })?;
            } else {
                println!("saved {} ({} bytes) to {}", status.name, status.size, path.display());
            }
        }
    }
    Ok(())
}

/// `file get --timeout` ran out: the download is not abandoned.
#[derive(Debug)]
struct TimedOut {
    id: String,
    secs: u64,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "file {} is not here after {} s; the download continues in the daemon: \
             check it with `outpost file show {}` and run `outpost file get` again to save it",
            self.id, self.secs, self.id
        )
    }
}

impl std::error::Error for TimedOut {}

/// Where a file is saved without `-o`: its name's last component only, in
/// the current directory. Names are checked by the daemon already; this is
/// defence in depth against one that is a path.
fn default_path(name: &str) -> anyhow::Result<PathBuf> {
    match Path::new(name).file_name() {
        Some(plain) => Ok(PathBuf::from(plain)),
        None => Err(Usage(format!(
            "the file's name {name:?} is not a file name: save it with -o PATH"
        ))
        .into()),
    }
}

/// The bar's position in file bytes for `have` of `total` ciphertext bytes
/// (u128: `have * size` overflows u64 for large files).
fn plain_position(have: u64, total: u64, size: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    let position = u128::from(have.min(total)) * u128::from(size) / u128::from(total);
    u64::try_from(position).unwrap_or(size)
}

/// Streams the file's plaintext from the daemon into `path` (through a
/// temporary file beside it, renamed once whole; removed if it fails).
async fn save(client: &Client, status: &FileStatus, path: &Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.outpost-part", status.id.fmt_short()));
    let saved = save_through(client, status, dir, &tmp, path).await;
    if saved.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    saved
}

async fn save_through(client: &Client, status: &FileStatus, dir: &Path, tmp: &Path, path: &Path) -> anyhow::Result<()> {
    let mut out = tokio::fs::File::create(tmp)
        .await
        .map_err(|e| Usage(format!("cannot write in {}: {e}", dir.display())))?;
    let stream = client.get_stream(&format!("/v1/files/{}/content", status.id)).await?;
    let mut stream = std::pin::pin!(stream);
    let mut written = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        written += piece.len() as u64;
        out.write_all(&piece).await?;
    }
    out.sync_all().await?;
    if written != status.size {
        anyhow::bail!(
            "the file arrived short ({written} of {} bytes); run the command again",
            status.size
        );
    }
    tokio::fs::rename(tmp, path).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_does_not_overflow_on_large_files() {
        let size = 60u64 << 30;
        let total = size + size / 4000;
        assert_eq!(plain_position(total, total, size), size);
        // Half the sealed bytes is half the plain bytes, give or take the
        // rounding of an odd total.
        assert!(plain_position(total / 2, total, size).abs_diff(size / 2) <= 1);
        assert_eq!(plain_position(5, 0, size), 0);
    }

    #[test]
    fn a_name_saves_as_its_last_component_only() {
        assert_eq!(default_path("plans.pdf").unwrap(), PathBuf::from("plans.pdf"));
        assert_eq!(
            default_path("../../.ssh/authorized_keys").unwrap(),
            PathBuf::from("authorized_keys")
        );
        assert_eq!(default_path("/etc/passwd").unwrap(), PathBuf::from("passwd"));
        assert!(default_path("..").is_err());
        assert!(default_path("/").is_err());
        assert!(default_path("").is_err());
    }
}
