//! `outpost`: the command-line client of an Outpost node.
//!
//! Every command except `init`, `id` (partly) and `daemon` talks to the running
//! daemon through its local API. Errors print as one line on stderr with a hint,
//! and the exit code says what kind of failure it was (see [`exit`]).

mod cal;
mod chat;
mod doc;
mod exit;
mod file;
mod org;
mod output;
mod search;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use outpost_node::{
    api::{IdResponse, Invite, Join, LinkTicket, SetPosting, StatusResponse},
    client::Client,
    control::{Posting, Role},
    core::{
        Changed, DeviceView, Grant, InboxEntry, Invited, Joined, LinkState, Linked, MemberChange, Members, Revoked,
    },
    daemon,
    identity::DeviceKeys,
};

/// Outpost: peer-to-peer, offline-first, end-to-end encrypted collaboration.
///
/// Start with `outpost init`, run `outpost daemon`, then create a chat with
/// `outpost chat create NAME --member CARD` and talk with `outpost chat send`.
#[derive(Parser)]
#[command(name = "outpost", version, propagate_version = true)]
struct Cli {
    /// The node's home directory (keys, database, API socket).
    #[arg(long, global = true, env = "OUTPOST_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Create this device's identity (ed25519 signing key + X25519 key).
    Init {
        /// A name for this device, shown to you only.
        #[arg(long)]
        name: Option<String>,
    },
    /// Print this device's id, peer id, card and listen addresses.
    Id(JsonFlag),
    /// Run the node: sync with peers and serve the local API.
    Daemon(DaemonArgs),
    /// Show peers and per-space sync state: tells "synced" from "stuck".
    Status(JsonFlag),
    /// Chat spaces.
    #[command(subcommand)]
    Chat(chat::ChatCommand),
    /// Shared documents: Markdown, co-edited offline, merged character by character.
    #[command(subcommand)]
    Doc(doc::DocCmd),
    /// Shared calendars: events with recurrence, time zones, invitations, ICS import and export.
    #[command(subcommand)]
    Cal(cal::CalCmd),
    /// Who is in a space: members, roles, removal, leaving, key rotation.
    #[command(subcommand)]
    Space(SpaceCommand),
    /// Your devices: link a new one to your user, list them, revoke a lost one.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// The organisation: an admin-signed policy every node verifies offline.
    #[command(subcommand)]
    Org(org::OrgCmd),
    /// Notifications for you: mentions in documents, newest last.
    Inbox {
        /// How many of the newest to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// The org directory: people by name, department or title.
    #[command(subcommand)]
    Dir(org::DirCmd),
    /// Search the messages and documents you can read (Chinese too; words
    /// match their beginnings). The index is this device's own, never synced.
    Search(search::SearchArgs),
    /// Files attached to chat messages: fetch and save them.
    #[command(subcommand)]
    File(file::FileCmd),
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Link a new device to your user. Prints a ticket (valid 10 minutes) to pass
    /// to `outpost device join` on the new device, then waits: when the new device
    /// asks, both show a six-digit code; confirm here if they match. The new device
    /// is then added, with your role, to every space you are in, and syncs them.
    /// Run it on the device that created your user (the first one).
    Link {
        /// Confirm the first valid request without asking (scripts).
        #[arg(long)]
        yes: bool,
        /// Print the ticket and the result as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Join this device to the user of the device that printed TICKET. Shows the
    /// code to compare with the other device, asks, then waits for the other
    /// device to confirm (within a minute).
    Join {
        ticket: String,
        /// Do not ask (scripts).
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// List your user's devices known here (active and revoked).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a device of yours (lost or stolen): it is removed from every space
    /// you share, each under a new key epoch, and reads nothing written after.
    Revoke {
        #[arg(value_name = "DEVICE_ID|CARD")]
        device: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SpaceCommand {
    /// Add a member to a space (owners and admins; anyone may add their own
    /// devices). Name the person by one device's card: that device gets the
    /// space's key and its whole history as soon as it connects to any member,
    /// and then adds the user's other devices itself. With `--replicator`, name a
    /// replicate-only node instead: it stores and forwards the space for
    /// availability and never gets the key.
    Invite {
        space: String,
        /// The device's card (from `outpost id` on it), or, if this node has met it, its device
        /// id or its user's id. Members are users: the user's other devices follow.
        #[arg(value_name = "CARD|DEVICE_ID|USER_ID")]
        member: String,
        /// What it may do: read, write, or also manage members (admin, owner).
        #[arg(long, value_enum, default_value_t = RoleArg::Writer, conflicts_with = "replicator")]
        role: RoleArg,
        /// A replicate-only node, not a member.
        #[arg(long)]
        replicator: bool,
        #[arg(long)]
        json: bool,
    },
    /// List a space's members with their roles, and its replicate-only nodes.
    Members {
        space: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a member (the user, all their devices; name them by a device card,
    /// device id or user id) or a replicator. Owners and admins; only owners
    /// remove owners. The same signed operation starts a new key epoch wrapped
    /// only for the remaining devices: the removed ones read nothing written after
    /// the removal reaches its writers.
    Remove {
        space: String,
        #[arg(value_name = "CARD|DEVICE_ID|USER_ID")]
        member: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a member's role, on all their devices (owners; admins for roles up
    /// to admin). A demotion also voids what the member did concurrently with it
    /// (see docs/protocol.md).
    Role {
        space: String,
        #[arg(value_name = "CARD|DEVICE_ID|USER_ID")]
        member: String,
        #[arg(value_enum)]
        role: RoleArg,
        #[arg(long)]
        json: bool,
    },
    /// Leave a space: your devices are removed and the key rotated for the others.
    /// They keep what they could read, and receive nothing new.
    Leave {
        space: String,
        #[arg(long)]
        json: bool,
    },
    /// Start a new key epoch for the current members (any member; done
    /// automatically whenever the members change).
    Rotate {
        space: String,
        #[arg(long)]
        json: bool,
    },
    /// Set who may post: `admins` makes an announcement room (only owners and
    /// admins post, every node refuses other members' posts alike);
    /// `writers` opens it to every writer again. Owners and admins.
    Posting {
        space: String,
        #[arg(value_enum)]
        who: PostingArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PostingArg {
    Writers,
    Admins,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Reader,
    Writer,
    Admin,
    Owner,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Reader => Role::Reader,
            RoleArg::Writer => Role::Writer,
            RoleArg::Admin => Role::Admin,
            RoleArg::Owner => Role::Owner,
        }
    }
}

#[derive(Args)]
struct JsonFlag {
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DaemonArgs {
    /// Address to listen on (repeatable). Default: all interfaces, TCP and QUIC, random ports.
    #[arg(long, value_name = "MULTIADDR", conflicts_with = "no_listen")]
    listen: Vec<String>,
    /// Open no port: reach peers only by dialling them, and be reached through
    /// an anchor's relay (for a device behind a NAT or a firewall).
    #[arg(long)]
    no_listen: bool,
    /// Serve as the org's anchor: a circuit relay sized for sync and a
    /// rendezvous point where the org's nodes find each other, holding
    /// enrollment requests for admin devices that are offline. Follow the org
    /// here (`org follow ORG`: the relay then serves the org's devices only)
    /// and name this device in the policy (`org propose --anchor DEVICE`): the
    /// org's nodes then use it, and it replicates every space, storing and
    /// forwarding ciphertext it cannot read.
    #[arg(long)]
    anchor: bool,
    /// A peer to keep connected to (repeatable), e.g. /ip4/10.0.0.2/tcp/4001.
    #[arg(long, value_name = "MULTIADDR")]
    peer: Vec<String>,
    /// Do not discover peers on the LAN with mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Seconds between full re-syncs with every connected peer.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    resync_secs: u64,
    /// Most attachment bytes per second this node serves to peers, e.g. `5M`
    /// on a branch office's thin uplink (K, M and G are powers of 1024). No
    /// limit by default.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    max_upload_rate: Option<u64>,
    /// Messages this node writes into a room's shard before opening the next
    /// (for tests and benchmarks; peers accept any size).
    #[arg(long, hide = true, value_name = "N", default_value_t = outpost_node::core::SHARD_MESSAGES)]
    shard_messages: usize,
}

/// A byte rate: a number with an optional K, M or G suffix (powers of 1024).
fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim().trim_end_matches("/s").trim_end_matches(['B', 'b']);
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, ' '),
    };
    let scale: u64 = match unit {
        ' ' => 1,
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        _ => return Err(format!("unknown unit in {text:?}: use K, M or G")),
    };
    match digits.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n.saturating_mul(scale)),
        _ => Err(format!(
            "{text:?} is not a rate: give bytes per second, e.g. 500K or 5M"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            return exit::report(&anyhow::Error::new(e).context("cannot start the async runtime"));
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e),
    }
}

fn home(cli_home: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(h) = cli_home {
        return Ok(h);
    }
    use etcetera::BaseStrategy;
    let base = etcetera::choose_base_strategy().context("cannot find a data directory: pass --home DIR")?;
    Ok(base.data_dir().join("outpost"))
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let home = home(cli.home)?;
    let client = Client::for_home(&home);
    match cli.command {
        Command::Init { name } => {
            init_logging("warn");
            let keys = DeviceKeys::create(&home)?;
            if let Some(name) = name {
                std::fs::write(home.join("name"), name).context("cannot write the device name")?;
            }
            println!("{}", keys.device_id());
            eprintln!("created device identity in {}", home.display());
        }
        Command::Id(f) => {
            init_logging("warn");
            let keys = DeviceKeys::load(&home)?;
            let listen = match client.get::<IdResponse>("/v1/id").await {
                Ok(id) => Some(id.listen),
                Err(outpost_node::client::Error::NotRunning(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let peer_id = keys.libp2p_keypair().public().to_peer_id().to_string();
            let name = std::fs::read_to_string(home.join("name")).ok();
            let id = serde_json::json!({
                "device_id": keys.device_id(),
                "user_id": keys.user_id(),
                "peer_id": peer_id,
                "name": name,
                "card": keys.cert().to_card(),
                "daemon_running": listen.is_some(),
                "listen": listen.clone().unwrap_or_default(),
            });
            if f.json {
                output::json(&id)?;
            } else {
                println!("device id  {}", keys.device_id());
                println!("user id    {}", keys.user_id());
                println!("peer id    {peer_id}");
                if let Some(name) = name {
                    println!("name       {name}");
                }
                println!("card       {}", keys.cert().to_card());
                match listen {
                    Some(l) => l.iter().for_each(|a| println!("listening  {a}")),
                    None => println!("daemon     not running"),
                }
            }
        }
        Command::Daemon(args) => {
            init_logging("info");
            let mut config = daemon::Config::new(home);
            if args.no_listen {
                config.net.listen.clear();
            } else if !args.listen.is_empty() {
                config.net.listen = parse_addrs(&args.listen, "--listen")?;
            }
            config.net.anchor = args.anchor;
            config.net.upload_rate = args.max_upload_rate;
            config.net.peers = parse_addrs(&args.peer, "--peer")?;
            config.net.mdns = !args.no_mdns;
            config.net.resync_interval = Duration::from_secs(args.resync_secs.max(1));
            config.core.shard_messages = args.shard_messages;
            daemon::run(config, shutdown_signal()).await?;
        }
        Command::Status(f) => {
            init_logging("warn");
            let status: StatusResponse = client.get("/v1/status").await?;
            if f.json {
                output::json(&status)?;
            } else {
                output::status(&status);
            }
        }
        Command::Chat(cmd) => {
            init_logging("warn");
            chat::run(&client, cmd).await?;
        }
        Command::Inbox { limit, json } => {
            init_logging("warn");
            let entries: Vec<InboxEntry> = client.get(&format!("/v1/inbox?limit={limit}")).await?;
            if json {
                output::json(&entries)?;
            } else {
                entries.iter().for_each(output::inbox_entry);
            }
        }
        Command::Doc(cmd) => {
            init_logging("warn");
            doc::run(&client, cmd).await?;
        }
        Command::Cal(cmd) => {
            init_logging("warn");
            cal::run(&client, cmd).await?;
        }
        Command::Space(cmd) => {
            init_logging("warn");
            space(&client, cmd).await?;
        }
        Command::Device(cmd) => {
            init_logging("warn");
            device(&client, &home, cmd).await?;
        }
        Command::Org(cmd) => {
            init_logging("warn");
            org::run(&client, &home, cmd).await?;
        }
        Command::Search(args) => {
            init_logging("warn");
            search::run(&client, args).await?;
        }
        Command::File(cmd) => {
            init_logging("warn");
            file::run(&client, cmd).await?;
        }
        Command::Dir(cmd) => {
            init_logging("warn");
            org::dir(&client, cmd).await?;
        }
    }
    Ok(())
}

async fn space(client: &Client, cmd: SpaceCommand) -> anyhow::Result<()> {
    match cmd {
        SpaceCommand::Invite {
            space,
            member,
            role,
            replicator,
            json,
        } => {
            let invited: Invited = client
                .post(
                    &format!("/v1/spaces/{space}/members"),
                    &Invite {
                        member,
                        role: role.into(),
                        replicator,
                    },
                )
                .await?;
            if json {
                output::json(&invited)?;
            } else {
                let what = match invited.grant {
                    Grant::Member(role) => output::role(role),
                    Grant::Replicator => "replicator",
                };
                println!("added {} as {what}", invited.device);
            }
        }
        SpaceCommand::Members { space, json } => {
            let members: Members = client.get(&format!("/v1/spaces/{space}/members")).await?;
            if json {
                output::json(&members)?;
            } else {
                output::members(&members);
            }
        }
        SpaceCommand::Remove { space, member, json } => {
            change(client, &space, MemberChange::Remove(member), json, "removed").await?
        }
        SpaceCommand::Role {
            space,
            member,
            role,
            json,
        } => {
            change(
                client,
                &space,
                MemberChange::SetRole(member, role.into()),
                json,
                "role changed",
            )
            .await?
        }
        SpaceCommand::Leave { space, json } => {
            change(client, &space, MemberChange::Leave, json, "left the space").await?
        }
        SpaceCommand::Rotate { space, json } => change(client, &space, MemberChange::Rotate, json, "rotated").await?,
        SpaceCommand::Posting { space, who, json } => {
            let posting = match who {
                PostingArg::Writers => Posting::Writers,
                PostingArg::Admins => Posting::Admins,
            };
            let changed: Changed = client
                .post(&format!("/v1/spaces/{space}/posting"), &SetPosting { posting })
                .await?;
            if json {
                output::json(&changed)?;
            } else {
                println!("posting set to {posting:?}; the space's key epoch is {}", changed.epoch);
            }
        }
    }
    Ok(())
}

async fn device(client: &Client, home: &std::path::Path, cmd: DeviceCommand) -> anyhow::Result<()> {
    match cmd {
        DeviceCommand::Link { yes, json } => {
            let made: LinkTicket = client.post("/v1/devices/link", &serde_json::json!({})).await?;
            if json {
                output::json_line(&made)?;
            } else {
                println!("On the new device, run:\n\n  outpost device join {}\n", made.ticket);
                println!("Waiting for it (the ticket expires in 10 minutes)...");
            }
            let (device, code) = loop {
                let state: LinkState = client.get(&format!("/v1/devices/link/{}", made.id)).await?;
                match state {
                    LinkState::Waiting { .. } => tokio::time::sleep(std::time::Duration::from_millis(300)).await,
                    LinkState::Requested { device, code } => break (device, code),
                    LinkState::Linked { .. } | LinkState::Expired => {
                        anyhow::bail!(
                            "the ticket expired before a device asked to join; run `outpost device link` again"
                        )
                    }
                }
            };
            if !json {
                println!("Device {device} asks to join. Confirmation code: {code}");
            }
            if !yes && !ask("Does the new device show the same code?")? {
                anyhow::bail!("not confirmed; the device was not linked");
            }
            let linked: Linked = client
                .post(&format!("/v1/devices/link/{}/confirm", made.id), &serde_json::json!({}))
                .await?;
            if json {
                output::json_line(&linked)?;
            } else {
                println!("linked {}; added to {} spaces", linked.device, linked.spaces.len());
            }
        }
        DeviceCommand::Join { ticket, yes, json } => {
            let parsed = outpost_node::link::Ticket::from_text(&ticket, outpost_node::clock::now_ms())?;
            let me = DeviceKeys::load(home)?.device_id();
            let code = outpost_node::link::confirmation_code(&parsed.secret, &parsed.device, &me);
            if !json {
                println!(
                    "Confirmation code: {code}\nCheck that your other device shows the same code, then confirm there."
                );
            }
            if !yes && !ask("Join the user of that device?")? {
                anyhow::bail!("not joined");
            }
            let joined: Joined = client.post("/v1/devices/join", &Join { ticket }).await?;
            if json {
                output::json(&joined)?;
            } else {
                println!(
                    "this device now belongs to user {} (with {} other devices); it receives your spaces as the other device adds it",
                    joined.user,
                    joined.siblings.len()
                );
            }
        }
        DeviceCommand::List { json } => {
            let devices: Vec<DeviceView> = client.get("/v1/devices").await?;
            if json {
                output::json(&devices)?;
            } else {
                output::devices(&devices);
            }
        }
        DeviceCommand::Revoke { device, json } => {
            let revoked: Revoked = client
                .post(&format!("/v1/devices/{device}/revoke"), &serde_json::json!({}))
                .await?;
            if json {
                output::json(&revoked)?;
            } else {
                println!(
                    "revoked {}; removed from {} spaces, each under a new key epoch",
                    revoked.device,
                    revoked.spaces.len()
                );
            }
        }
    }
    Ok(())
}

/// Asks a yes/no question on the terminal; anything but y/yes is no.
fn ask(question: &str) -> anyhow::Result<bool> {
    use std::io::Write;
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}

async fn change(client: &Client, space: &str, change: MemberChange, json: bool, done: &str) -> anyhow::Result<()> {
    let changed: Changed = client.post(&format!("/v1/spaces/{space}/changes"), &change).await?;
    if json {
        output::json(&changed)?;
    } else {
        println!("{done}; the space's key epoch is now {}", changed.epoch);
    }
    Ok(())
}

fn parse_addrs(addrs: &[String], flag: &str) -> anyhow::Result<Vec<outpost_node::net::Multiaddr>> {
    addrs
        .iter()
        .map(|a| {
            a.parse()
                .with_context(|| format!("{flag} {a:?} is not a multiaddr (e.g. /ip4/127.0.0.1/tcp/4001)"))
        })
        .collect()
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler succeeds");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Clap checks a command's definition only when it is used: check them all.
    #[test]
    fn every_command_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn rates_parse_with_units() {
        use super::parse_rate;
        assert_eq!(parse_rate("500"), Ok(500));
        assert_eq!(parse_rate("5M"), Ok(5 << 20));
        assert_eq!(parse_rate("40MB/s"), Ok(40 << 20));
        assert_eq!(parse_rate("2k"), Ok(2048));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5X").is_err());
    }
}
