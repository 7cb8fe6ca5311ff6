//! Chat traffic for the benches that post messages (`bench`, `chat_bench`):
//! message texts, rooms on real daemons, sends and the event streams that show
//! them. Included with `#[path]` next to `support/daemon.rs`: not an example of
//! its own.

// Each bench uses part of it.
#![allow(dead_code)]

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use futures::StreamExt;
use outpost_node::{
    api::{CreateChat, Created, SendMessage},
    client::Client,
    control,
    ids::SpaceId,
};

use crate::daemon::{Daemon, wait_for};

/// Words for message texts: ordinary chat lines compress like prose, not like one
/// sentence repeated (Automerge's sync compresses what it sends).
const WORDS: [&str; 64] = [
    "the", "a", "to", "and", "of", "is", "in", "it", "you", "that", "for", "on", "we", "this", "with", "be", "are",
    "not", "have", "at", "can", "will", "just", "so", "but", "meeting", "tomorrow", "lunch", "build", "deploy",
    "review", "ticket", "branch", "merge", "test", "fixed", "broken", "coffee", "later", "today", "thanks", "sure",
    "maybe", "weekend", "train", "late", "office", "call", "doc", "draft", "ship", "release", "bug", "log", "server",
    "disk", "network", "again", "really", "great", "okay", "done", "wait", "soon",
];

/// A ~70-byte chat line starting with `tag` (which makes it unique and findable).
pub fn chat_text(tag: &str) -> String {
    let mut state = tag.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut text = tag.to_string();
    while text.len() < 70 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push(' ');
        text.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
    }
    text
}

/// Creates a chat on `owner` with `members` and waits (at most `timeout` for
/// each) until they can read it.
pub async fn create_room(
    bin: &Path,
    owner: &Daemon,
    members: &[&Daemon],
    name: &str,
    timeout: Duration,
) -> Result<SpaceId> {
    let cards = members.iter().map(|m| m.card(bin)).collect::<Result<Vec<_>>>()?;
    let created: Created = owner
        .client
        .post(
            "/v1/chats",
            &CreateChat {
                name: name.into(),
                kind: control::SpaceKind::Chat,
                history: control::History::Shared,
                posting: control::Posting::Writers,
                department: None,
                members: cards,
                replicators: vec![],
            },
        )
        .await?;
    let space = created.space;
    for m in members {
        wait_for(timeout, "a member to join the room", move || async move {
            let spaces: serde_json::Value = m.client.get("/v1/spaces").await.ok()?;
            let space = space.to_string();
            spaces
                .as_array()?
                .iter()
                .any(|s| s["space"].as_str() == Some(space.as_str()) && s["readable"] == true)
                .then_some(())
        })
        .await?;
    }
    Ok(space)
}

/// Posts one message to the chat at `path` (`/v1/chats/{space}/messages`).
pub async fn send(client: &Client, path: &str, text: String) -> Result<serde_json::Value> {
    Ok(client
        .post(
            path,
            &SendMessage {
                text,
                reply_to: None,
                client_id: None,
            },
        )
        .await?)
}

/// Follows `d`'s live event stream of `space` in a task of its own: each
/// message's text goes to `on_message` with the instant it arrived, until
/// `on_message` answers `false`; `lagged` counts the events the daemon dropped
/// for this stream.
pub async fn watch_messages(
    d: &Daemon,
    space: SpaceId,
    lagged: Arc<AtomicU64>,
    mut on_message: impl FnMut(&str, Instant) -> bool + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>> {
    let mut stream = Box::pin(
        d.client
            .stream::<serde_json::Value>(&format!("/v1/events?space={space}"))
            .await?,
    );
    Ok(tokio::spawn(async move {
        // Lines look like {"type":"message","space":…,"message":{"id":…,"text":…}}.
        while let Some(Ok(event)) = stream.next().await {
            let at = Instant::now();
            if event["type"] == "lagged" {
                // The daemon dropped events for this stream: {"type":"lagged","missed":N}.
                lagged.fetch_add(event["missed"].as_u64().unwrap_or(1), Ordering::Relaxed);
                continue;
            }
            if event["type"] != "message" {
                continue;
            }
            if !on_message(event["message"]["text"].as_str().unwrap_or_default(), at) {
                break;
            }
        }
    }))
}
