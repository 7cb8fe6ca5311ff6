//! `outpost chat`: rooms, messages, replies, mentions, edits, retraction,
//! reactions, announcements and pinned messages.

use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use outpost_node::{
    api::{ApiEvent, ChatOpRequest, CreateChat, Created, Direct, SendMessage, Upload},
    client::Client,
    control::{History, Posting},
    core::{
        ChatDone, ChatOp, DirectRoom, MarkedRead, MessageView, Quiet, QuietHours, QuietView, RoomView, Sent,
        SpaceSummary,
    },
};

use crate::{exit::Usage, output};

#[derive(Subcommand)]
pub(crate) enum ChatCommand {
    /// Create a chat space and print its id.
    Create {
        name: String,
        /// A member device: its card (from `outpost id`) or, if this node has met it, its device id. Repeatable.
        #[arg(long, value_name = "CARD|DEVICE_ID")]
        member: Vec<String>,
        /// A replicate-only node: stores and forwards the space, never reads it. Repeatable.
        #[arg(long, value_name = "CARD|DEVICE_ID")]
        replicator: Vec<String>,
        /// Whether people added later read what was written before they joined
        /// (`shared`), or only what is written from their join on (`from-join`:
        /// the join starts a key epoch that opens nothing older). Another device
        /// of a member's user reads what that user reads either way.
        #[arg(long, value_enum, default_value = "shared")]
        history: HistoryArg,
        /// An announcement room: only owners and admins post; everyone else
        /// reads (every node refuses other members' posts alike).
        #[arg(long)]
        announcement: bool,
        /// A department room (org admins): its members follow the org chart,
        /// the department (e.g. `总部/技术部`) and those below it. People who
        /// join the department are added, those who leave it are removed.
        #[arg(long, value_name = "PATH")]
        department: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The direct-message room with a user (made when there is none; both of
    /// you own it), printing its id; with TEXT, sends it there too.
    Dm {
        /// Their device card, or a device or user id this node has met.
        user: String,
        text: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Send a message; returns once it is durably stored, printing its id.
    ///
    /// `@name` mentions a member (an org member's id, name or e-mail name, or
    /// at least 8 hex digits of a user id): it lands in their `outpost inbox`.
    /// `@all` mentions everyone in the room.
    Send {
        space: String,
        /// The message (with --file, a caption; may be left out).
        text: Option<String>,
        /// Attach a file (up to 64 GiB): encrypted as it is sent, fetched by
        /// others with `outpost file get ID`. Shows a progress bar.
        #[arg(long, value_name = "PATH")]
        file: Option<std::path::PathBuf>,
        /// Answer a message (its id, or a unique prefix of it).
        #[arg(long, value_name = "MSG")]
        reply_to: Option<String>,
        /// Idempotency key: resending with the same id never duplicates.
        #[arg(long)]
        client_id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Replace the text of one of your messages (the earlier texts stay in its
    /// history, shown by `chat log`).
    Edit {
        /// The message: its id or a unique prefix (see `chat log`).
        message: String,
        text: String,
        #[command(flatten)]
        room: RoomArg,
    },
    /// Retract a message: its text is deleted on every node, relays included.
    /// Authors may retract their own messages within the room's window
    /// (`chat retract-window`, a day unless set); owners and admins any message,
    /// any time.
    Retract {
        message: String,
        #[command(flatten)]
        room: RoomArg,
    },
    /// React to a message with an emoji (or a short word); `--remove` takes it back.
    React {
        message: String,
        emoji: String,
        #[arg(long)]
        remove: bool,
        #[command(flatten)]
        room: RoomArg,
    },
    /// Owners and admins: post an announcement and pin it; `chat info` shows
    /// it to everyone, newcomers included.
    Announce {
        space: String,
        text: String,
        #[arg(long)]
        json: bool,
    },
    /// Owners and admins: set the room's topic ("" clears it).
    Topic { space: String, text: String },
    /// Owners and admins: set the message `chat info` shows newcomers ("" clears it).
    Welcome { space: String, text: String },
    /// Owners and admins: pin a message (`--unpin` to take it down).
    Pin {
        message: String,
        #[arg(long)]
        unpin: bool,
        #[command(flatten)]
        room: RoomArg,
    },
    /// Owners and admins: how long authors may retract their own messages,
    /// e.g. `2m`, `1h`, `1d`, or `0` (never).
    RetractWindow { space: String, window: String },
    /// Mark everything in the room read (on all your devices; every member
    /// sees who has read each message in `chat log`).
    Read {
        space: String,
        #[arg(long)]
        json: bool,
    },
    /// Hold back this room's notifications on this device (mentions still
    /// land in `outpost inbox`, marked held); `--unmute` lets them through.
    Mute {
        space: String,
        #[arg(long)]
        unmute: bool,
        #[arg(long)]
        json: bool,
    },
    /// A daily window (this machine's time) in which notifications are held
    /// back, e.g. `22:00-07:00`; `off` ends it; no argument shows the settings.
    /// Messages still arrive; held notifications come when the window ends.
    Quiet {
        window: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The room's topic, welcome message, announcement and pinned messages.
    Info {
        space: String,
        #[arg(long)]
        json: bool,
    },
    /// Show the latest messages, in the same order on every node, with
    /// replies, edits, reactions and retractions.
    Log {
        space: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Follow a chat live.
    Tail {
        space: String,
        /// Print each message as a JSON line.
        #[arg(long)]
        json: bool,
    },
    /// List chat spaces on this node.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// The room a message is in, when its id alone is ambiguous.
#[derive(Args)]
pub(crate) struct RoomArg {
    /// The room (default: the one room holding the message).
    #[arg(long, value_name = "SPACE")]
    space: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum HistoryArg {
    Shared,
    FromJoin,
}

impl From<HistoryArg> for History {
    fn from(h: HistoryArg) -> Self {
        match h {
            HistoryArg::Shared => History::Shared,
            HistoryArg::FromJoin => History::FromJoin,
        }
    }
}

pub(crate) async fn run(client: &Client, cmd: ChatCommand) -> anyhow::Result<()> {
    match cmd {
        ChatCommand::Create {
            name,
            member,
            replicator,
            history,
            announcement,
            department,
            json,
        } => {
            let created: Created = client
                .post(
                    "/v1/chats",
                    &CreateChat {
                        name,
                        kind: outpost_node::control::SpaceKind::Chat,
                        history: history.into(),
                        posting: if announcement {
                            Posting::Admins
                        } else {
                            Posting::Writers
                        },
                        department,
                        members: member,
                        replicators: replicator,
                    },
                )
                .await?;
            if json {
                output::json(&created)?;
            } else {
                println!("{}", created.space);
            }
        }
        ChatCommand::Send {
            space,
            text,
            file,
            reply_to,
            client_id,
            json,
        } => {
            let sent: Sent = match (file, text) {
                (Some(path), text) => {
                    let upload = Upload {
                        name: String::new(),
                        text: text.unwrap_or_default(),
                        reply_to,
                        client_id,
                    };
                    crate::file::send(client, &space, &path, upload, json).await?
                }
                (None, Some(text)) => {
                    let send = SendMessage {
                        text,
                        reply_to,
                        client_id,
                    };
                    client.post(&format!("/v1/chats/{space}/messages"), &send).await?
                }
                (None, None) => return Err(Usage("give the message's TEXT, a --file, or both".into()).into()),
            };
            if json {
                output::json(&sent)?;
            } else {
                println!("{}", sent.id);
            }
        }
        ChatCommand::Dm { user, text, json } => {
            let room: DirectRoom = client.post("/v1/chats/dm", &Direct { user }).await?;
            let sent = match text {
                Some(text) => {
                    let send = SendMessage {
                        text,
                        reply_to: None,
                        client_id: None,
                    };
                    Some(
                        client
                            .post::<_, Sent>(&format!("/v1/chats/{}/messages", room.space), &send)
                            .await?,
                    )
                }
                None => None,
            };
            if json {
                output::json(&serde_json::json!({ "space": room.space, "created": room.created, "sent": sent }))?;
            } else {
                println!("{}", room.space);
            }
        }
        ChatCommand::Edit { message, text, room } => op(client, room, ChatOp::Edit { message, text }).await?,
        ChatCommand::Retract { message, room } => op(client, room, ChatOp::Retract { message }).await?,
        ChatCommand::React {
            message,
            emoji,
            remove,
            room,
        } => {
            let react = ChatOp::React {
                message,
                emoji,
                on: !remove,
            };
            op(client, room, react).await?
        }
        ChatCommand::Announce { space, text, json } => {
            op(
                client,
                RoomArg {
                    space: Some(space),
                    json,
                },
                ChatOp::Announce { text },
            )
            .await?
        }
        ChatCommand::Topic { space, text } => op(client, in_room(space), ChatOp::Topic { text }).await?,
        ChatCommand::Welcome { space, text } => op(client, in_room(space), ChatOp::Welcome { text }).await?,
        ChatCommand::Pin { message, unpin, room } => op(client, room, ChatOp::Pin { message, on: !unpin }).await?,
        ChatCommand::RetractWindow { space, window } => {
            let seconds = parse_window(&window)?;
            op(client, in_room(space), ChatOp::RetractWindow { seconds }).await?
        }
        ChatCommand::Read { space, json } => {
            let done: MarkedRead = client.post(&format!("/v1/chats/{space}/read"), &()).await?;
            if json {
                output::json(&done)?;
            } else {
                println!("{} new message(s) marked read", done.newly_read);
            }
        }
        ChatCommand::Mute { space, unmute, json } => {
            let space = space
                .parse()
                .map_err(|_| Usage(format!("`{space}` is not a space id (`chat list` shows them)")))?;
            let view: QuietView = client
                .post("/v1/chat/quiet", &Quiet::Mute { space, on: !unmute })
                .await?;
            quiet_out(&view, json)?;
        }
        ChatCommand::Quiet { window, json } => {
            let view: QuietView = match window.as_deref() {
                None => client.get("/v1/chat/quiet").await?,
                Some("off") => client.post("/v1/chat/quiet", &Quiet::Hours(None)).await?,
                Some(w) => {
                    let hours = QuietHours::parse(w).ok_or_else(|| {
                        Usage(format!(
                            "`{w}` is not a window: write it as HH:MM-HH:MM, e.g. 22:00-07:00, or `off`"
                        ))
                    })?;
                    client.post("/v1/chat/quiet", &Quiet::Hours(Some(hours))).await?
                }
            };
            quiet_out(&view, json)?;
        }
        ChatCommand::Info { space, json } => {
            let room: RoomView = client.get(&format!("/v1/chats/{space}/room")).await?;
            if json {
                output::json(&room)?;
            } else {
                output::room(&room);
            }
        }
        ChatCommand::Log { space, limit, json } => {
            let msgs: Vec<MessageView> = client.get(&format!("/v1/chats/{space}/messages?limit={limit}")).await?;
            if json {
                output::json(&msgs)?;
            } else {
                msgs.iter().for_each(output::message);
            }
        }
        ChatCommand::Tail { space, json } => tail(client, &space, json).await?,
        ChatCommand::List { json } => {
            let spaces: Vec<SpaceSummary> = client.get("/v1/spaces").await?;
            if json {
                output::json(&spaces)?;
            } else {
                spaces.iter().for_each(output::space_line);
            }
        }
    }
    Ok(())
}

fn quiet_out(view: &QuietView, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(view);
    }
    let hours = view.quiet_hours.as_deref().unwrap_or("none");
    let now = if view.quiet_now { " (now)" } else { "" };
    println!("quiet hours: {hours}{now}");
    for space in &view.muted {
        println!("muted: {space}");
    }
    if view.held > 0 {
        println!("{} notification(s) held back", view.held);
    }
    Ok(())
}

fn in_room(space: String) -> RoomArg {
    RoomArg {
        space: Some(space),
        json: false,
    }
}

async fn op(client: &Client, room: RoomArg, op: ChatOp) -> anyhow::Result<()> {
    let request = ChatOpRequest { space: room.space, op };
    let done: ChatDone = client.post("/v1/chat/ops", &request).await?;
    if room.json {
        output::json(&done)?;
    } else if let Some(message) = &done.message {
        println!("{message}");
    }
    if done.deleted > 0 {
        eprintln!("retracted: the text is deleted here and on every node it reaches");
    }
    Ok(())
}

async fn tail(client: &Client, space: &str, json: bool) -> anyhow::Result<()> {
    // Subscribe first so nothing falls between the backlog and the stream.
    let mut events = Box::pin(client.stream::<ApiEvent>(&format!("/v1/events?space={space}")).await?);
    let mut seen = std::collections::HashSet::new();
    let mut print_new = |msgs: &[MessageView]| -> anyhow::Result<()> {
        for m in msgs.iter().filter(|m| seen.insert(m.id.clone())) {
            if json {
                output::json_line(m)?;
            } else {
                output::message(m);
            }
        }
        Ok(())
    };
    let log = async |limit: usize| {
        client
            .get::<Vec<MessageView>>(&format!("/v1/chats/{space}/messages?limit={limit}"))
            .await
    };
    print_new(&log(10).await?)?;
    while let Some(event) = events.next().await {
        match event? {
            ApiEvent::Message { message, .. } => print_new(&[message])?,
            // Events were dropped: whatever arrived meanwhile is in the log.
            ApiEvent::Lagged { missed } => print_new(&log(missed as usize + 10).await?)?,
            ApiEvent::Inbox { .. } | ApiEvent::Calendar { .. } | ApiEvent::ChatUpdated { .. } => {}
        }
    }
    anyhow::bail!("the daemon closed the event stream");
}

/// `2m`, `1h`, `1d`, `30s` or `0`, in seconds.
fn parse_window(text: &str) -> Result<i64, Usage> {
    let bad = || {
        Usage(format!(
            "`{text}` is not a duration: write e.g. `2m`, `1h`, `1d`, `30s`, or `0` for never"
        ))
    };
    let text = text.trim();
    if text == "0" {
        return Ok(0);
    }
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse() {
        assert_eq!(parse_window("2m").unwrap(), 120);
        assert_eq!(parse_window("1d").unwrap(), 86_400);
        assert_eq!(parse_window("0").unwrap(), 0);
        assert!(parse_window("2 weeks").is_err());
        assert!(parse_window("m").is_err());
    }
}
