//! `outpost org …`: the organisation's signed policy.

use std::path::Path;

use clap::Subcommand;
use outpost_node::{
    client::Client,
    clock::utc,
    core::{OrgCommand, OrgView, Proposal},
    ids::DeviceId,
    org::{AdminKey, AdminKeys, OrgId},
};

use crate::output;

#[derive(Subcommand)]
pub(crate) enum OrgCmd {
    /// Print this device's admin key, making it on first use. An admin-to-be
    /// runs this and gives the key to whoever runs `org init` or `org propose`.
    Keygen {
        #[arg(long)]
        json: bool,
    },
    /// Create an org: this device's admin key plus the `--admin` keys, of which
    /// `--threshold` must sign every policy version. Prints the org id, which
    /// other nodes follow. With a threshold of 1 version 1 is published at
    /// once; otherwise the other admins sign it first.
    Init {
        #[arg(long)]
        name: String,
        /// Another admin's key (from `outpost org keygen` on their device). Repeatable.
        #[arg(long = "admin", value_name = "KEY")]
        admin: Vec<AdminKey>,
        /// How many admin keys in all (this device's included): a check that
        /// every `--admin` was given.
        #[arg(long)]
        admins: Option<usize>,
        /// How many admins sign each version. Above half the admins, two
        /// partitioned groups can never both publish.
        #[arg(long)]
        threshold: u16,
        /// Days each version stays valid (default 180); past it the node runs
        /// degraded until a fresh version arrives.
        #[arg(long)]
        expires_days: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Follow an org: accept its policy from any peer. The org id commits to
    /// the org's first admin keys, so no peer can pass off another org.
    Follow {
        org: OrgId,
        #[arg(long)]
        json: bool,
    },
    /// Propose the next policy version (signed by this device's admin key):
    /// prints its draft id and what it changes.
    Propose {
        /// Rename the org.
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "add-admin", value_name = "KEY")]
        add_admin: Vec<AdminKey>,
        #[arg(long = "remove-admin", value_name = "KEY")]
        remove_admin: Vec<AdminKey>,
        #[arg(long)]
        threshold: Option<u16>,
        /// A device no node may sync with any more. Repeatable.
        #[arg(long, value_name = "DEVICE")]
        revoke: Vec<DeviceId>,
        #[arg(long)]
        expires_days: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a device (lost or stolen): proposes the next version with it
    /// revoked, and publishes it when this admin's signature is enough. Once a
    /// node knows the version, it opens no session with the device, and the
    /// owners and admins of every space the device is in remove it (a new key
    /// epoch without it).
    Revoke {
        device: DeviceId,
        #[arg(long)]
        json: bool,
    },
    /// Sign a draft with this device's admin key (once per version: an admin
    /// never signs two different drafts of one version).
    Sign {
        /// The draft id, or a unique prefix of it.
        draft: String,
        #[arg(long)]
        json: bool,
    },
    /// Publish a draft that has enough signatures: it becomes the policy every
    /// node verifies and enforces.
    Publish {
        draft: String,
        #[arg(long)]
        json: bool,
    },
    /// The org: its policy version, admins, expiry, drafts.
    Show {
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(client: &Client, home: &Path, cmd: OrgCmd) -> anyhow::Result<()> {
    let (command, json) = match cmd {
        OrgCmd::Keygen { json } => {
            let key = AdminKeys::load_or_create(home)?.public();
            if json {
                output::json(&serde_json::json!({ "admin_key": key }))?;
            } else {
                println!("{key}");
            }
            return Ok(());
        }
        OrgCmd::Show { json } => {
            let view: OrgView = client.get("/v1/org").await?;
            return print(&view, json, None);
        }
        OrgCmd::Init {
            name,
            admin,
            admins,
            threshold,
            expires_days,
            json,
        } => {
            let total = admin.len() + 1;
            if let Some(n) = admins
                && n != total
            {
                return Err(crate::exit::Usage(format!(
                    "--admins {n}, but this device's key and {} --admin keys make {total}: each other admin runs `outpost org keygen` and gives you the key for --admin",
                    admin.len()
                ))
                .into());
            }
            if total > 1 && threshold == 1 {
                eprintln!("warning: a threshold of 1 lets any single admin key change the policy alone");
            } else if total > 1 && usize::from(threshold) == total {
                eprintln!(
                    "warning: a threshold equal to the number of admins means one lost admin device blocks every change"
                );
            }
            let init = OrgCommand::Init {
                name,
                admins: admin,
                threshold,
                expires_days,
            };
            let view = publish_if_ready(client, client.post("/v1/org", &init).await?).await?;
            return print(&view, json, Some("created"));
        }
        OrgCmd::Follow { org, json } => (OrgCommand::Follow { org }, json),
        OrgCmd::Revoke { device, json } => {
            let proposal = OrgCommand::Propose(Proposal {
                revoke: vec![device],
                ..Proposal::default()
            });
            let view = publish_if_ready(client, client.post("/v1/org", &proposal).await?).await?;
            return print(&view, json, None);
        }
        OrgCmd::Propose {
            name,
            add_admin,
            remove_admin,
            threshold,
            revoke,
            expires_days,
            json,
        } => (
            OrgCommand::Propose(Proposal {
                name,
                add_admins: add_admin,
                remove_admins: remove_admin,
                threshold,
                revoke,
                expires_days,
            }),
            json,
        ),
        OrgCmd::Sign { draft, json } => (OrgCommand::Sign { draft }, json),
        OrgCmd::Publish { draft, json } => (OrgCommand::Publish { draft }, json),
    };
    let view: OrgView = client.post("/v1/org", &command).await?;
    print(&view, json, None)
}

/// Publishes the draft that already has enough signatures (this admin's alone,
/// with a threshold of 1), if there is one.
async fn publish_if_ready(client: &Client, view: OrgView) -> anyhow::Result<OrgView> {
    match view.drafts.iter().find(|d| d.ready) {
        Some(d) => Ok(client
            .post("/v1/org", &OrgCommand::Publish { draft: d.id.clone() })
            .await?),
        None => Ok(view),
    }
}

fn print(view: &OrgView, json: bool, what: Option<&str>) -> anyhow::Result<()> {
    if json {
        return output::json(view);
    }
    if let Some(what) = what {
        println!("{what} org {}", view.org);
    }
    let name = view.name.as_deref().unwrap_or("(no version yet)");
    println!("org {}  {name:?}  version {}", view.org, view.version);
    if let (Some(issued), Some(expires)) = (view.issued_at_ms, view.expires_at_ms) {
        println!(
            "  issued {} UTC, expires {} UTC",
            utc(issued as i64),
            utc(expires as i64)
        );
    }
    output::org_warnings(view);
    if view.version > 0 {
        println!(
            "  admins ({} of {} sign each version):",
            view.threshold,
            view.admins.len()
        );
        for a in &view.admins {
            let me = if Some(*a) == view.admin_key {
                "  (this device)"
            } else {
                ""
            };
            println!("    {a}{me}");
        }
        println!(
            "  {} departments, {} members, {} revoked devices",
            view.departments,
            view.members,
            view.revoked.len()
        );
    }
    for d in &view.drafts {
        let state = if d.ready { "ready to publish" } else { "signing" };
        println!(
            "  draft {}  version {}  {} of {} signatures, {state}",
            d.id, d.version, d.signatures, d.needed
        );
        for line in &d.diff {
            println!("      {line}");
        }
    }
    Ok(())
}
