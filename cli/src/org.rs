//! `outpost org …`: the organisation's signed policy.

use std::path::Path;

use clap::Subcommand;
use outpost_node::{
    api::{Join, OrgInvite, OrgTicket},
    client::Client,
    clock::utc,
    core::{DirEntry, OrgCommand, OrgView, Proposal},
    ids::DeviceId,
    org::{
        AdminKey, AdminKeys, OrgId,
        enroll::{EnrollOutcome, EnrollTicket},
    },
};

use crate::output;

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
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
        /// Name a device as one of the org's anchors (`outpost id` on the node
        /// started with `daemon --anchor` prints it): every node uses it as relay
        /// and rendezvous, and space owners and admins name it a replicator of
        /// their spaces so it stores and forwards what it cannot read. Repeatable.
        #[arg(long, value_name = "DEVICE")]
        anchor: Vec<DeviceId>,
        /// Stop naming a device as an anchor. Repeatable.
        #[arg(long, value_name = "DEVICE")]
        drop_anchor: Vec<DeviceId>,
        /// Hide a department (e.g. `总部/法务部`) from everyone outside it except admins. Repeatable.
        #[arg(long, value_name = "PATH")]
        hide: Vec<String>,
        /// Show a hidden department again. Repeatable.
        #[arg(long, value_name = "PATH")]
        unhide: Vec<String>,
        /// List a device under a member, as `MEMBER_ID=DEVICE`. Repeatable.
        #[arg(long, value_name = "MEMBER=DEVICE", value_parser = member_device)]
        device: Vec<(String, DeviceId)>,
        /// Make a member a super admin of the directory (sees hidden departments). Repeatable.
        #[arg(long, value_name = "MEMBER")]
        super_admin: Vec<String>,
        /// Make a member the admin of a department and everything below it, as
        /// `MEMBER_ID=PATH` (e.g. `1002=总部/法务部`): it sees that subtree even
        /// where hidden, and may make department rooms. Repeatable.
        #[arg(long, value_name = "MEMBER=PATH", value_parser = member_department)]
        department_admin: Vec<(String, String)>,
        /// Make a member a plain member again (no admin role). Repeatable.
        #[arg(long, value_name = "MEMBER")]
        plain_member: Vec<String>,
        /// Whether members below admin may create spaces (default: they may).
        #[arg(long, value_name = "BOOL")]
        members_create_spaces: Option<bool>,
        /// Whether members may add devices outside the org to spaces (default: they may not).
        #[arg(long, value_name = "BOOL")]
        invite_outsiders: Option<bool>,
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
    /// A member leaves: proposes the next version with the member offboarded
    /// and every device of it revoked, naming SUCCESSOR (another member, whose
    /// devices this node has met), and publishes it when this admin's signature
    /// is enough. Then, in every space the member owned, a member hands its
    /// place to the successor's devices (owners, under a new key epoch); the
    /// member's devices leave every space.
    Offboard {
        /// The departing member's id (as in the org chart).
        member: String,
        /// The member who takes over the spaces it owned.
        #[arg(long, value_name = "MEMBER")]
        successor: String,
        #[arg(long)]
        json: bool,
    },
    /// Read the org chart from a spreadsheet (.xlsx, .xls, .ods, or .csv in UTF-8
    /// or GBK) and propose it as the next version: one row per member with member
    /// id, name, department path (`总部/技术部/前端组`), title, email, phone and a
    /// department-head flag (headers in English or Chinese: 工号, 姓名, 部门, 职位,
    /// 邮箱, 手机, 负责人). Every problem is reported with its row and column and
    /// nothing changes; members keep their devices by id.
    Import {
        file: std::path::PathBuf,
        /// Only show what would change against the current version.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Invite a member's new device into the org (admins): prints a ticket,
    /// good once for 7 days, for `outpost org enroll` on that device.
    Invite {
        /// The member's id in the org chart (`outpost dir search` finds it).
        member: String,
        #[arg(long)]
        json: bool,
    },
    /// Enroll this device with a ticket from `outpost org invite`: follows the
    /// ticket's org and asks the admin's device, which lists this device under
    /// the member in the next policy version (published at once, or once the
    /// other admins sign).
    Enroll {
        ticket: String,
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
            let proposal = Proposal {
                revoke: vec![device],
                ..Proposal::default()
            };
            return propose_and_publish(client, proposal, json).await;
        }
        OrgCmd::Offboard {
            member,
            successor,
            json,
        } => {
            let proposal = Proposal {
                offboard: vec![(member, successor)],
                ..Proposal::default()
            };
            return propose_and_publish(client, proposal, json).await;
        }
        OrgCmd::Propose {
            name,
            add_admin,
            remove_admin,
            threshold,
            revoke,
            anchor,
            drop_anchor,
            hide,
            unhide,
            device,
            super_admin,
            department_admin,
            plain_member,
            members_create_spaces,
            invite_outsiders,
            expires_days,
            json,
        } => (
            OrgCommand::Propose(Box::new(Proposal {
                name,
                add_admins: add_admin,
                remove_admins: remove_admin,
                threshold,
                revoke,
                add_anchors: anchor,
                remove_anchors: drop_anchor,
                hide,
                unhide,
                devices: device,
                super_admins: super_admin,
                department_admins: department_admin,
                plain_members: plain_member,
                members_create_spaces,
                invite_outsiders,
                expires_days,
                ..Proposal::default()
            })),
            json,
        ),
        OrgCmd::Import { file, dry_run, json } => return import(client, &file, dry_run, json).await,
        OrgCmd::Invite { member, json } => {
            let ticket: OrgTicket = client.post("/v1/org/invite", &OrgInvite { member }).await?;
            if json {
                output::json(&ticket)?;
            } else {
                println!("On the new device of member {}, run:\n", ticket.member);
                println!("  outpost org enroll {}\n", ticket.ticket);
                println!("(good once, until {} UTC)", utc(ticket.expires_ms as i64));
            }
            return Ok(());
        }
        OrgCmd::Enroll { ticket, json } => {
            let parsed = EnrollTicket::from_text(&ticket, outpost_node::clock::now_ms())
                .map_err(|e| crate::exit::Usage(e.to_string()))?;
            let outcome: EnrollOutcome = client.post("/v1/org/enroll", &Join { ticket }).await?;
            if json {
                return output::json(&outcome);
            }
            match outcome {
                EnrollOutcome::Accepted {
                    version,
                    published: true,
                } => println!(
                    "enrolled as a device of member {} in org {}: policy version {version} lists it",
                    parsed.member, parsed.org
                ),
                EnrollOutcome::Accepted { version, .. } => println!(
                    "enrolled as a device of member {} in org {}: version {version} lists it once enough admins sign",
                    parsed.member, parsed.org
                ),
                EnrollOutcome::Queued { anchor } => println!(
                    "the admin's device is offline: anchor {} holds the request for member {}; this device is in org {} once that device picks it up (`outpost org show`)",
                    anchor.fmt_short(),
                    parsed.member,
                    parsed.org
                ),
                EnrollOutcome::Refused(why) => anyhow::bail!("refused: {why}"),
            }
            return Ok(());
        }
        OrgCmd::Sign { draft, json } => (OrgCommand::Sign { draft }, json),
        OrgCmd::Publish { draft, json } => (OrgCommand::Publish { draft }, json),
    };
    let view: OrgView = client.post("/v1/org", &command).await?;
    print(&view, json, None)
}

/// `org import`: reads and checks the file here (with a progress bar), then
/// proposes the chart (or shows what it would change).
async fn import(client: &Client, file: &Path, dry_run: bool, json: bool) -> anyhow::Result<()> {
    use outpost_node::org::import;
    let rows = import::read_rows(file).map_err(|e| crate::exit::Usage(e.to_string()))?;
    let bar = indicatif::ProgressBar::new(rows.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} rows")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message("checking");
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let parsed = import::parse(&rows, |done| bar.set_position(done as u64));
    bar.finish_and_clear();
    let chart = match parsed {
        Ok(chart) => chart,
        Err(problems) => {
            if json {
                output::json(&serde_json::json!({ "problems": problems }))?;
            } else {
                for p in &problems {
                    eprintln!("{}: {p}", file.display());
                }
            }
            return Err(crate::exit::Usage(format!(
                "{} problems in {}; nothing was changed",
                problems.len(),
                file.display()
            ))
            .into());
        }
    };
    let members = chart.members.len();
    let departments = chart.departments.len();
    let proposal = Proposal {
        dry_run,
        chart: Some(chart),
        ..Proposal::default()
    };
    let spinner = indicatif::ProgressBar::new_spinner().with_message("signing the new version");
    if !json {
        spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    }
    let view: OrgView = client.post("/v1/org", &OrgCommand::Propose(Box::new(proposal))).await?;
    let view = if dry_run {
        view
    } else {
        publish_if_ready(client, view).await?
    };
    spinner.finish_and_clear();
    if json {
        return output::json(&view);
    }
    println!(
        "{members} members in {departments} departments read from {}",
        file.display()
    );
    match &view.dry_run {
        Some(diff) => {
            println!("dry run: {} changes against version {}", diff.len(), view.version);
            print_lines(diff, DIFF_LINES_SHOWN * 10);
            Ok(())
        }
        None => print(&view, false, None),
    }
}

/// Diff lines printed per draft (all of them with `--json`).
const DIFF_LINES_SHOWN: usize = 20;

fn print_lines(lines: &[String], at_most: usize) {
    for line in lines.iter().take(at_most) {
        println!("      {line}");
    }
    if lines.len() > at_most {
        println!(
            "      … and {} more (`--json` lists every change)",
            lines.len() - at_most
        );
    }
}

fn member_device(text: &str) -> Result<(String, DeviceId), String> {
    let (member, device) = text
        .split_once('=')
        .ok_or("write MEMBER_ID=DEVICE, e.g. 1001=<device id>")?;
    let device = device
        .trim()
        .parse()
        .map_err(|e: outpost_node::ids::ParseIdError| e.to_string())?;
    Ok((member.trim().to_string(), device))
}

fn member_department(text: &str) -> Result<(String, String), String> {
    let (member, path) = text
        .split_once('=')
        .ok_or("write MEMBER_ID=PATH, e.g. 1002=总部/法务部")?;
    Ok((member.trim().to_string(), path.trim().to_string()))
}

/// Proposes `proposal` and publishes it when this admin's signature is enough.
async fn propose_and_publish(client: &Client, proposal: Proposal, json: bool) -> anyhow::Result<()> {
    let view = client.post("/v1/org", &OrgCommand::Propose(Box::new(proposal))).await?;
    print(&publish_if_ready(client, view).await?, json, None)
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
        for a in &view.anchors {
            println!("  anchor {a}");
        }
    }
    for d in &view.drafts {
        let state = if d.ready { "ready to publish" } else { "signing" };
        println!(
            "  draft {}  version {}  {} of {} signatures, {state}",
            d.id, d.version, d.signatures, d.needed
        );
        print_lines(&d.diff, DIFF_LINES_SHOWN);
    }
    Ok(())
}

#[derive(Subcommand)]
pub(crate) enum DirCmd {
    /// Find org members by name, department or title (Chinese or not; part of a
    /// word is enough). Hidden departments show only to their own members and
    /// to admins.
    Search {
        query: String,
        #[arg(long)]
        json: bool,
    },
    /// The members of a department and of those under it, e.g. `总部/技术部`.
    Dept {
        path: String,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn dir(client: &Client, cmd: DirCmd) -> anyhow::Result<()> {
    let (url, json) = match cmd {
        DirCmd::Search { query, json } => (format!("/v1/dir/search?q={}", output::percent_encode(&query)), json),
        DirCmd::Dept { path, json } => (format!("/v1/dir/dept?path={}", output::percent_encode(&path)), json),
    };
    let entries: Vec<DirEntry> = client.get(&url).await?;
    if json {
        return output::json(&entries);
    }
    for e in &entries {
        let head = if e.head { "  (head)" } else { "" };
        let contact = [e.email.as_str(), e.phone.as_str()]
            .iter()
            .filter(|c| !c.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        println!("{}  {}  {}  {}{head}  {contact}", e.id, e.name, e.department, e.title);
    }
    if entries.is_empty() {
        eprintln!("nobody found");
    }
    Ok(())
}
