//! `outpost doc`: shared documents, edited as Markdown.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use outpost_crdt::text::{blocks_of_saved, markdown};
use outpost_node::{
    api::{CreateDoc, Created},
    client::Client,
    clock::utc,
    core::{DocAnswer, DocEdit, DocFormat, DocQuery, DocView, SpaceSummary, Written},
};

use crate::output;

#[derive(Subcommand)]
pub(crate) enum DocCmd {
    /// Create a shared document. Members edit it offline; edits merge character
    /// by character when devices sync. Prints the document's id.
    New {
        title: String,
        /// A member's device card (or id, if this node has met it); repeat.
        #[arg(long)]
        member: Vec<String>,
        /// Start from this Markdown file.
        #[arg(long, value_name = "FILE.md")]
        from: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// List the documents this node holds.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print a document (the current text, or a version of it).
    Show {
        doc: String,
        /// A version id from `outpost doc history` (a unique prefix will do).
        #[arg(long, value_name = "VERSION")]
        at: Option<String>,
        #[arg(long, value_enum, default_value_t = TextFormat::Md)]
        format: TextFormat,
        #[arg(long)]
        json: bool,
    },
    /// Edit a document in $EDITOR (or $VISUAL). On save, the change is applied
    /// as the smallest character-level edit of the version you opened, so
    /// edits others make meanwhile are kept.
    Edit {
        doc: String,
        #[arg(long)]
        json: bool,
    },
    /// Replace a document's text with a Markdown file (`-` reads stdin), applied
    /// as the smallest character-level edit: for scripts.
    Write {
        doc: String,
        #[arg(long, value_name = "FILE.md")]
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List a document's versions: who, when, what changed.
    History {
        doc: String,
        #[arg(long)]
        json: bool,
    },
    /// Show what changed between two versions (or a version and now).
    Diff {
        doc: String,
        from: String,
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Make the text what it was at a version, as a new version: history is
    /// kept, and edits made elsewhere meanwhile still merge.
    Restore {
        doc: String,
        /// A version id from `outpost doc history` (a unique prefix will do).
        #[arg(value_name = "VERSION")]
        to_version: String,
        #[arg(long)]
        json: bool,
    },
    /// Show who wrote each line.
    Blame {
        doc: String,
        #[arg(long)]
        json: bool,
    },
    /// Write a document to a file: Markdown, HTML, plain text, or the standard
    /// Automerge binary (with its whole history; other Automerge applications load it).
    Export {
        doc: String,
        #[arg(long, value_enum, default_value_t = ExportFormat::Md)]
        format: ExportFormat,
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Create a document from a Markdown file or an Automerge binary
    /// (`.automerge`). Its title is the first heading, or the file name.
    Import {
        file: PathBuf,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        member: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum TextFormat {
    Md,
    Html,
    Text,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ExportFormat {
    Md,
    Html,
    Text,
    Automerge,
}

impl From<TextFormat> for DocFormat {
    fn from(f: TextFormat) -> Self {
        match f {
            TextFormat::Md => DocFormat::Md,
            TextFormat::Html => DocFormat::Html,
            TextFormat::Text => DocFormat::Text,
        }
    }
}

impl From<ExportFormat> for DocFormat {
    fn from(f: ExportFormat) -> Self {
        match f {
            ExportFormat::Md => DocFormat::Md,
            ExportFormat::Html => DocFormat::Html,
            ExportFormat::Text => DocFormat::Text,
            ExportFormat::Automerge => DocFormat::Automerge,
        }
    }
}

pub(crate) async fn run(client: &Client, cmd: DocCmd) -> anyhow::Result<()> {
    match cmd {
        DocCmd::New {
            title,
            member,
            from,
            json,
        } => {
            let markdown = from.as_deref().map(read_text).transpose()?;
            let created = create(client, title, member, markdown).await?;
            print_created(&created, json)?;
        }
        DocCmd::Import {
            file,
            title,
            member,
            json,
        } => {
            let markdown = if file.extension().is_some_and(|e| e == "automerge") {
                let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
                let blocks = blocks_of_saved(&bytes)
                    .with_context(|| format!("{} is not an Automerge document with a text", file.display()))?;
                markdown::render(&blocks)
            } else {
                read_text(&file)?
            };
            let title = title.unwrap_or_else(|| title_of(&markdown, &file));
            let created = create(client, title, member, Some(markdown)).await?;
            print_created(&created, json)?;
        }
        DocCmd::List { json } => {
            let spaces: Vec<SpaceSummary> = client.get("/v1/spaces").await?;
            let docs: Vec<SpaceSummary> = spaces.into_iter().filter(|s| s.kind == "doc").collect();
            if json {
                output::json(&docs)?;
            } else {
                for d in docs {
                    let name = d.name.as_deref().unwrap_or("(not readable here)");
                    println!("{}  {name}", d.space);
                }
            }
        }
        DocCmd::Show { doc, at, format, json } => {
            let view = show(client, &doc, at, format.into()).await?;
            if json {
                output::json(&view)?;
            } else {
                print!("{}", view.content);
            }
        }
        DocCmd::Edit { doc, json } => {
            let view = show(client, &doc, None, DocFormat::Md).await?;
            let (edited, file) = edit_in_editor(&view.content)?;
            let written: Written = if edited == view.content {
                Written { version: None }
            } else if edited.trim().is_empty() && !view.content.trim().is_empty() {
                bail!(
                    "the file was emptied, so nothing was saved (to empty the document on purpose: `outpost doc write {doc} --file /dev/null`)"
                );
            } else {
                match write(client, &doc, edited, view.heads).await {
                    Ok(written) => written,
                    Err(e) => {
                        // Never lose what the user typed.
                        let kept = file.keep().context("cannot keep the edited file")?;
                        return Err(e.context(format!("your edit is kept in {}", kept.display())));
                    }
                }
            };
            print_written(&written, json)?;
        }
        DocCmd::Write { doc, file, json } => {
            let markdown = read_text(&file)?;
            print_written(&write(client, &doc, markdown, Vec::new()).await?, json)?;
        }
        DocCmd::History { doc, json } => {
            let DocAnswer::History(versions) = read(client, &doc, DocQuery::History).await? else {
                bail!("the daemon answered another question");
            };
            if json {
                output::json(&versions)?;
            } else {
                for v in versions {
                    let blocks = if v.blocks > 0 {
                        format!(" {} blocks", v.blocks)
                    } else {
                        String::new()
                    };
                    println!(
                        "{}  {}  {}  +{} -{}{blocks}  {}",
                        &v.id[..12],
                        utc(v.time_ms),
                        v.author.fmt_short(),
                        v.inserted,
                        v.deleted,
                        v.excerpt
                    );
                }
            }
        }
        DocCmd::Diff { doc, from, to, json } => {
            let DocAnswer::Diff(diff) = read(client, &doc, DocQuery::Diff { from, to }).await? else {
                bail!("the daemon answered another question");
            };
            if json {
                output::json(&diff)?;
            } else {
                print!("{}", diff.diff);
            }
        }
        DocCmd::Restore { doc, to_version, json } => {
            let written: Written = client
                .post(&format!("/v1/docs/{doc}"), &DocEdit::Restore { version: to_version })
                .await?;
            print_written(&written, json)?;
        }
        DocCmd::Blame { doc, json } => {
            let DocAnswer::Blame(lines) = read(client, &doc, DocQuery::Blame).await? else {
                bail!("the daemon answered another question");
            };
            if json {
                output::json(&lines)?;
            } else {
                for l in lines {
                    let who = l.author.map_or_else(|| "?".repeat(8), |a| a.fmt_short());
                    println!("{who}  {}", l.line);
                }
            }
        }
        DocCmd::Export { doc, format, output } => {
            let view = show(client, &doc, None, format.into()).await?;
            let bytes = match format {
                ExportFormat::Automerge => data_encoding::BASE64
                    .decode(view.content.as_bytes())
                    .context("the daemon sent a malformed Automerge export")?,
                _ => view.content.into_bytes(),
            };
            std::fs::write(&output, bytes).with_context(|| format!("cannot write {}", output.display()))?;
        }
    }
    Ok(())
}

async fn create(
    client: &Client,
    name: String,
    members: Vec<String>,
    markdown: Option<String>,
) -> anyhow::Result<Created> {
    let created: Created = client
        .post(
            "/v1/docs",
            &CreateDoc {
                name,
                members,
                replicators: Vec::new(),
            },
        )
        .await?;
    if let Some(markdown) = markdown {
        write(client, &created.space.to_string(), markdown, Vec::new())
            .await
            .with_context(|| format!("document {} was created, but its text was not written", created.space))?;
    }
    Ok(created)
}

async fn show(client: &Client, doc: &str, at: Option<String>, format: DocFormat) -> anyhow::Result<DocView> {
    match read(client, doc, DocQuery::Show { at, format }).await? {
        DocAnswer::Show(view) => Ok(view),
        _ => bail!("the daemon answered another question"),
    }
}

async fn read(client: &Client, doc: &str, query: DocQuery) -> anyhow::Result<DocAnswer> {
    Ok(client.post(&format!("/v1/docs/{doc}/read"), &query).await?)
}

async fn write(client: &Client, doc: &str, markdown: String, base: Vec<String>) -> anyhow::Result<Written> {
    Ok(client
        .post(&format!("/v1/docs/{doc}"), &DocEdit::Markdown { markdown, base })
        .await?)
}

fn print_created(created: &Created, json: bool) -> anyhow::Result<()> {
    if json {
        output::json(created)
    } else {
        println!("{}", created.space);
        Ok(())
    }
}

fn print_written(written: &Written, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(written);
    }
    match &written.version {
        Some(v) => println!("saved version {}", &v[..12.min(v.len())]),
        None => println!("no change"),
    }
    Ok(())
}

/// A text file, or stdin for `-`.
fn read_text(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        return std::io::read_to_string(std::io::stdin()).context("cannot read stdin");
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {} (a UTF-8 text file)", path.display()))
}

/// The first heading's text, or the file name without its extension.
fn title_of(markdown: &str, file: &Path) -> String {
    let blocks = markdown::parse(markdown, &|_| None);
    blocks
        .iter()
        .find(|b| matches!(b.kind, outpost_crdt::text::BlockKind::Heading(_)))
        .map(|b| b.text().trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "Untitled".into())
        })
}

/// Opens `text` in the user's editor; returns what was saved and the file
/// (deleted when dropped, unless kept).
fn edit_in_editor(text: &str) -> anyhow::Result<(String, tempfile::TempPath)> {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let editor = set("VISUAL").or_else(|| set("EDITOR")).unwrap_or_else(|| "vi".into());
    let file = tempfile::Builder::new()
        .prefix("outpost-doc-")
        .suffix(".md")
        .tempfile()
        .context("cannot create a temporary file to edit in")?;
    std::fs::write(file.path(), text)?;
    // The editor may carry arguments (`code --wait`): run it through the shell.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file.path())
        .status()
        .with_context(|| format!("cannot run the editor {editor:?} (set $EDITOR)"))?;
    if !status.success() {
        bail!("the editor {editor:?} failed ({status}); the document is unchanged");
    }
    let edited = read_text(file.path())?;
    Ok((edited, file.into_temp_path()))
}
