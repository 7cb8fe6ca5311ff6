//! A room's messages roll over into shard documents, on real cores: with a
//! shard size of 10, writers open the next shard as one fills; edits,
//! retractions and reactions of old messages go into those messages' shard, a
//! room's settings stay in its first document; two partitioned writers that
//! both roll over converge on one order; the latest messages are read from
//! the last shards only and agree with the full log; a restart keeps it all.

mod inproc;

use std::collections::BTreeSet;

use inproc::{Node, deliver, kinds, served, stored};
use outpost_node::{
    control::{History, Role},
    core::{ChatOp, Grant, MessageView, Options, Outgoing},
    envelope::{Envelope, Header, Kind},
    ids::{DocId, EnvelopeId, EpochId, SpaceId},
};

const SHARD: usize = 10;

fn node() -> Node {
    Node::with(Options { shard_messages: SHARD })
}

/// The documents `envelopes` write content into, by shard index.
fn shards_written(envelopes: &[Vec<u8>], space: SpaceId) -> BTreeSet<u32> {
    envelopes
        .iter()
        .map(|b| Envelope::decode(b.clone()).unwrap())
        .filter(|e| e.header().kind == Kind::Content && e.header().space == space)
        .map(|e| space.shard_of(&e.header().doc).expect("a shard of the room"))
        .collect()
}

fn doc_of(envelopes: &[Vec<u8>], kind: Kind) -> Vec<DocId> {
    envelopes
        .iter()
        .map(|b| Envelope::decode(b.clone()).unwrap())
        .filter(|e| e.header().kind == kind)
        .map(|e| e.header().doc)
        .collect()
}

async fn log(node: &Node, space: SpaceId) -> Vec<MessageView> {
    node.core.messages(space, 10_000).await.unwrap()
}

fn texts(log: &[MessageView]) -> Vec<String> {
    log.iter().map(|m| m.text.clone()).collect()
}

/// Both nodes hand each other what the other lacks.
async fn exchange(a: &Node, b: &Node, space: SpaceId) {
    for _ in 0..2 {
        let push = served(a, b, space).await;
        deliver(a, b, push).await;
        let push = served(b, a, space).await;
        deliver(b, a, push).await;
    }
}

/// A room Alice makes with Bob as a member, and the ids of `n` messages she
/// posts into it (m0, m1, …).
async fn room_of(alice: &Node, bob: &Node, n: usize) -> (SpaceId, Vec<String>) {
    let space = alice
        .core
        .create_chat("big room".into(), History::Shared, vec![bob.cert().to_card()], vec![])
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(alice.core.send(space, format!("m{i}"), None).await.unwrap().id);
    }
    (space, ids)
}

/// Writes one chat operation, which must succeed.
async fn write(node: &Node, space: Option<SpaceId>, op: ChatOp) {
    node.core.chat_write(space, op).await.unwrap();
}

fn edit(message: &str, text: &str) -> ChatOp {
    ChatOp::Edit {
        message: message.into(),
        text: text.into(),
    }
}

fn retract(message: &str) -> ChatOp {
    ChatOp::Retract {
        message: message.into(),
    }
}

fn thumbs_up(message: &str) -> ChatOp {
    ChatOp::React {
        message: message.into(),
        emoji: "👍".into(),
        on: true,
    }
}

#[test]
fn messages_roll_over_into_shards_and_every_node_agrees() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (alice, bob) = (node(), node());
        let mut alice_rx = alice.core.subscribe();
        let (space, ids) = room_of(&alice, &bob, 25).await;
        let written = stored(&mut alice_rx);
        assert_eq!(shards_written(&written, space), BTreeSet::from([0, 1, 2]));
        exchange(&alice, &bob, space).await;
        let want: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
        assert_eq!(texts(&log(&alice, space).await), want);
        assert_eq!(log(&bob, space).await, log(&alice, space).await);

        // The latest messages come from the last shards and match the full log.
        for limit in [1, 5, 10, 15, 25, 40] {
            let latest = bob.core.messages(space, limit).await.unwrap();
            let full = log(&bob, space).await;
            assert_eq!(latest, full[full.len().saturating_sub(limit)..], "limit {limit}");
        }

        // Old messages are edited, retracted and reacted to in their own shard.
        write(&alice, None, edit(&ids[0], "m0, edited")).await;
        write(&alice, None, retract(&ids[1])).await;
        write(&bob, None, thumbs_up(&ids[2])).await;
        let written = stored(&mut alice_rx);
        let first = space.chat_shard(0);
        assert_eq!(doc_of(&written, Kind::Content), vec![first, first]);
        assert_eq!(doc_of(&written, Kind::Tombstone), vec![first]);

        // Settings go to the room's first document; an announcement's message
        // to the current shard.
        alice
            .core
            .chat_write(Some(space), ChatOp::Topic { text: "launch".into() })
            .await
            .unwrap();
        alice
            .core
            .chat_write(
                Some(space),
                ChatOp::Announce {
                    text: "freeze on Friday".into(),
                },
            )
            .await
            .unwrap();
        let written = stored(&mut alice_rx);
        assert_eq!(
            doc_of(&written, Kind::Content),
            vec![space.chat_shard(0), space.chat_shard(2), space.chat_shard(0)]
        );
        exchange(&alice, &bob, space).await;
        for n in [&alice, &bob] {
            let log = log(n, space).await;
            assert_eq!(log[0].text, "m0, edited");
            assert!(log[1].retracted.is_some() && log[1].text.is_empty());
            assert_eq!(log[2].reactions.len(), 1);
            let room = n.core.room(space).await.unwrap();
            assert_eq!(room.topic.as_deref(), Some("launch"));
            assert_eq!(
                room.announcement.as_ref().map(|m| m.text.as_str()),
                Some("freeze on Friday")
            );
            assert_eq!(room.pinned.len(), 1);
        }
        let announcement = alice.core.room(space).await.unwrap().announcement.unwrap().id;
        alice
            .core
            .chat_write(
                None,
                ChatOp::Pin {
                    message: announcement,
                    on: false,
                },
            )
            .await
            .unwrap();
        exchange(&alice, &bob, space).await;
        assert!(bob.core.room(space).await.unwrap().pinned.is_empty());

        // A partition: both write past the shard's end on their own.
        for i in 0..12 {
            alice.core.send(space, format!("a{i}"), None).await.unwrap();
            bob.core.send(space, format!("b{i}"), None).await.unwrap();
        }
        let before = stored(&mut alice_rx);
        assert!(
            shards_written(&before, space).contains(&3),
            "alice rolled over on her own"
        );
        exchange(&alice, &bob, space).await;
        let (a, b) = (log(&alice, space).await, log(&bob, space).await);
        assert_eq!(a, b, "one order on both nodes");
        assert_eq!(a.len(), 25 + 1 + 24);
        for who in ["a", "b"] {
            let mine: Vec<String> = texts(&a).into_iter().filter(|t| t.starts_with(who)).collect();
            let sent: Vec<String> = (0..12).map(|i| format!("{who}{i}")).collect();
            assert_eq!(mine, sent, "each writer's messages in the order written");
        }
        for limit in [3, 12, 30] {
            assert_eq!(bob.core.messages(space, limit).await.unwrap(), b[b.len() - limit..]);
        }

        // A restart rebuilds the same room from the store.
        let bob = bob.restart();
        assert_eq!(log(&bob, space).await, a);
        assert_eq!(bob.core.room(space).await.unwrap().topic.as_deref(), Some("launch"));

        // A newcomer gets the first shard in a snapshot and the later shards as
        // envelopes, and shows the same room.
        let carol = node();
        for i in 0..40 {
            alice.core.send(space, format!("c{i}"), None).await.unwrap();
        }
        let a = log(&alice, space).await;
        alice
            .core
            .invite(space, carol.cert().to_card(), Grant::Member(Role::Writer))
            .await
            .unwrap();
        let push = served(&alice, &carol, space).await;
        assert_eq!(kinds(&push).2, 1, "one snapshot");
        deliver(&alice, &carol, push).await;
        exchange(&alice, &carol, space).await;
        assert_eq!(log(&carol, space).await, a);
        assert_eq!(carol.status(space).await.snapshots, 1);
    });
}

/// The unread count `chat list` shows for a room.
async fn unread(node: &Node, space: SpaceId) -> u64 {
    let all = node.core.spaces().await.unwrap();
    all.into_iter().find(|s| s.space == space).unwrap().unread.unwrap()
}

#[test]
fn closed_shards_are_set_aside_and_loaded_when_something_reaches_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (alice, bob) = (node(), node());
        let mut alice_rx = alice.core.subscribe();
        let (space, ids) = room_of(&alice, &bob, 60).await;
        // Shards 0–5: the first and the last two stay, 1–3 are set aside.
        let status = alice.status(space).await;
        assert_eq!((status.shards_loaded, status.shards_set_aside), (3, 3));
        let want: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();

        // The latest messages are read without loading anything.
        let latest = alice.core.messages(space, 15).await.unwrap();
        assert_eq!(texts(&latest), want[45..]);
        assert_eq!(alice.status(space).await.shards_set_aside, 3);
        // Reading further loads the shards it reaches, and sets aside again
        // all but the two used last.
        assert_eq!(texts(&log(&alice, space).await), want);
        assert_eq!(alice.status(space).await.shards_set_aside, 1);
        let latest = alice.core.messages(space, 40).await.unwrap();
        assert_eq!(texts(&latest), want[20..]);

        // Edits, retractions and reactions of messages in closed shards go
        // into those shards (loaded for it).
        let mut sent = stored(&mut alice_rx);
        write(&alice, None, edit(&ids[12], "m12, edited")).await;
        write(&alice, Some(space), retract(&ids[25])).await;
        write(&alice, Some(space), thumbs_up(&ids[35])).await;
        let written = stored(&mut alice_rx);
        sent.extend(written.iter().cloned());
        assert_eq!(
            doc_of(&written, Kind::Content),
            vec![space.chat_shard(1), space.chat_shard(2), space.chat_shard(3)]
        );
        let full = log(&alice, space).await;
        assert_eq!(full[12].text, "m12, edited");
        assert!(full[25].retracted.is_some() && full[25].text.is_empty());
        assert_eq!(full[35].reactions.len(), 1);

        // Another node gets it all and sets its own closed shards aside;
        // its unread count covers them, from their stored rows.
        exchange(&alice, &bob, space).await;
        assert_eq!(bob.status(space).await.shards_set_aside, 3);
        // 59 messages: the retracted one has nothing left to read.
        assert_eq!(unread(&bob, space).await, 59);
        assert_eq!(log(&bob, space).await, full);
        // Both keep the two closed shards they used last loaded.
        assert_eq!(bob.status(space).await.shards_set_aside, 1);
        assert_eq!(alice.status(space).await.shards_set_aside, 1);

        // A change for a closed shard set aside on the receiver loads it.
        write(&alice, None, edit(&ids[15], "m15, edited")).await;
        exchange(&alice, &bob, space).await;
        let full = log(&alice, space).await;
        assert_eq!(full[15].text, "m15, edited");
        assert_eq!(log(&bob, space).await, full);

        // A restart keeps closed shards aside (nothing of them is decrypted)
        // and shows the same room.
        let bob = bob.restart();
        assert_eq!(bob.status(space).await.shards_set_aside, 3);
        // What it holds, sent again, loads nothing.
        let ack = deliver(&alice, &bob, sent).await;
        assert!(ack.duplicate > 0 && ack.stored == 0 && ack.rejected == 0, "{ack:?}");
        assert_eq!(bob.status(space).await.shards_set_aside, 3);
        assert_eq!(bob.core.messages(space, 5).await.unwrap(), full[55..]);
        assert_eq!(unread(&bob, space).await, 59);
        bob.core.mark_read(space).await.unwrap();
        assert_eq!(unread(&bob, space).await, 0);
        assert_eq!(log(&bob, space).await.len(), 60);
        // Replying to an old message finds it in its closed shard.
        let outgoing = Outgoing {
            text: "re m13".into(),
            reply_to: Some(ids[13].clone()),
            ..Outgoing::default()
        };
        let reply = bob.core.send_message(space, outgoing).await.unwrap();
        let log_b = log(&bob, space).await;
        assert_eq!(log_b.last().unwrap().id, reply.id);
        assert!(log_b.last().unwrap().reply_to.is_some());
    });
}

#[test]
fn a_member_cannot_skip_shards_or_build_across_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (alice, mallory) = (node(), node());
        let mut alice_rx = alice.core.subscribe();
        let space = alice
            .core
            .create_chat("rules".into(), History::Shared, vec![mallory.cert().to_card()], vec![])
            .await
            .unwrap();
        alice.core.send(space, "hello".into(), None).await.unwrap();
        let written = stored(&mut alice_rx);
        let state = inproc::control_state(&written, space);
        let key = state.unwrap_key(&mallory.keys).expect("mallory is a member").unwrap();
        let first = written
            .iter()
            .map(|b| Envelope::decode(b.clone()).unwrap())
            .find(|e| e.header().kind == Kind::Content)
            .unwrap();
        let seal = |doc: DocId, incarnation: u64, parents: Vec<EnvelopeId>, body: &[u8]| {
            let header = Header {
                kind: Kind::Content,
                space,
                doc,
                epoch: state.epoch,
                author: mallory.device(),
                incarnation,
                seq: 1,
                parents,
                control_heads: state.heads(),
            };
            Envelope::seal_content(&mallory.keys, header, &key, body).into_bytes()
        };
        // Shard rules are checked in clear, before decryption: the body need
        // not be a change.
        let envelope = |doc: DocId, parents: Vec<EnvelopeId>| seal(doc, 7, parents, b"not a change");
        let ingest = |bytes: Vec<u8>| async { alice.core.ingest(mallory.device(), vec![bytes]).await.unwrap() };

        // Shard 0 holds everything so far: shard 3 waits for shards 1 and 2.
        let ack = ingest(envelope(space.chat_shard(3), Vec::new())).await;
        assert_eq!(
            (ack.stored, ack.pending, ack.rejected),
            (0, 1, 0),
            "a skipped shard waits"
        );
        // Past the last shard there can be: refused for good.
        let ack = ingest(envelope(space.chat_shard((1 << 20) + 1), Vec::new())).await;
        assert_eq!(
            (ack.stored, ack.pending, ack.rejected),
            (0, 0, 1),
            "a shard past the last"
        );
        // A message of shard 1 naming a change of shard 0 as its parent:
        // refused; the same message without it is taken.
        let message = |incarnation: u64| {
            let doc = space.chat_shard(1);
            let actor = outpost_crdt::writer::actor_id(&mallory.device().0, &doc, incarnation);
            let post = outpost_crdt::chat::NewMessage {
                id: format!("mallory{incarnation}"),
                body: EnvelopeId::of(b"its body").to_string(),
                reply_to: None,
                mentions: Vec::new(),
                all: false,
            };
            let author = outpost_crdt::Author {
                user: mallory.keys.user_id().to_string(),
                editor: true,
                admin: false,
            };
            outpost_crdt::chat::ChatDoc::new(doc)
                .post(actor, &author, &[post], 1)
                .unwrap()
        };
        let across = seal(space.chat_shard(1), 8, vec![first.id()], message(8).raw_bytes());
        let ack = ingest(across).await;
        assert_eq!(
            (ack.stored, ack.pending, ack.rejected),
            (0, 0, 1),
            "a parent in another shard"
        );
        let alone = seal(space.chat_shard(1), 9, Vec::new(), message(9).raw_bytes());
        let ack = ingest(alone).await;
        assert_eq!(
            (ack.stored, ack.pending, ack.rejected),
            (1, 0, 0),
            "the same message on its own"
        );
        assert_eq!(alice.status(space).await.rejected, 2);
        assert_eq!(log(&alice, space).await.len(), 2);
    });
}

#[test]
fn a_mention_in_a_closed_shard_goes_when_its_message_is_retracted() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (alice, bob) = (node(), node());
        let (space, _) = room_of(&alice, &bob, SHARD).await;
        let name = bob.keys.user_id().to_string()[..16].to_string();
        let mention = alice.core.send(space, format!("@{name} look"), None).await.unwrap().id;
        for i in 0..3 * SHARD {
            alice.core.send(space, format!("later {i}"), None).await.unwrap();
        }
        exchange(&alice, &bob, space).await;
        // The mention's shard (1) is closed and set aside on Bob's node.
        assert_eq!(bob.status(space).await.shards_set_aside, 2);
        let inbox = bob.core.inbox(10).await.unwrap();
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].context.as_deref(), Some(format!("@{name} look").as_str()));
        let before = unread(&bob, space).await;

        write(&alice, Some(space), retract(&mention)).await;
        exchange(&alice, &bob, space).await;
        assert!(bob.core.inbox(10).await.unwrap().is_empty());
        // The shard's stored row no longer counts it as unread, also once
        // the shard is set aside again and after a restart.
        assert_eq!(unread(&bob, space).await, before - 1);
        assert!(log(&bob, space).await[SHARD].retracted.is_some());
        let bob = bob.restart();
        assert_eq!(bob.status(space).await.shards_set_aside, 2);
        assert_eq!(unread(&bob, space).await, before - 1);
    });
}

/// The ids of the messages of `space` that `text` finds.
fn find(index: &outpost_node::search::SearchIndex, space: SpaceId, text: &str) -> Vec<String> {
    let query = outpost_node::search::SearchQuery {
        text: text.into(),
        ..Default::default()
    };
    let hits = index.search(&query, &std::collections::HashSet::from([space])).unwrap();
    hits.into_iter().filter_map(|h| h.id).collect()
}

/// Polls (the indexer commits once a second) until `text` finds `want`.
async fn found(index: &outpost_node::search::SearchIndex, space: SpaceId, text: &str, want: &[&String]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    for _ in 0..100 {
        if find(index, space, text) == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{text:?} finds {:?}, not {want:?}", find(index, space, text));
}

#[test]
fn search_follows_edits_and_retractions_of_messages_in_closed_shards() {
    use outpost_node::search::{indexer, sealed::IndexKey};

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (alice, bob) = (node(), node());
        let (space, ids) = room_of(&alice, &bob, 60).await;
        let dir = tempfile::tempdir().unwrap();
        let (index, indexer) =
            indexer::spawn(dir.path().to_path_buf(), IndexKey::new([7; 32]), alice.core.clone()).unwrap();
        found(&index, space, "m12", &[&ids[12]]).await;
        found(&index, space, "m25", &[&ids[25]]).await;

        // Shards 1 and 2 are loaded for the edit and the retraction; shard 3
        // stays set aside between them and the latest messages.
        write(&alice, None, edit(&ids[12], "walrus")).await;
        write(&alice, Some(space), retract(&ids[25])).await;
        assert!(alice.status(space).await.shards_set_aside >= 1);
        found(&index, space, "walrus", &[&ids[12]]).await;
        found(&index, space, "m12", &[]).await;
        found(&index, space, "m25", &[]).await;
        assert_eq!(
            find(&index, space, "m35"),
            vec![ids[35].clone()],
            "the other messages stay found"
        );
        indexer.abort();
    });
}

/// A message older than what the indexer reads back at start (here the
/// latest 15), retracted while it did not run, leaves the index: the core
/// names a room's retracted messages, closed shards' from their rows.
#[test]
fn search_drops_old_messages_retracted_while_it_was_not_running() {
    use outpost_node::search::{indexer, sealed::IndexKey};

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (alice, bob) = (node(), node());
        let (space, ids) = room_of(&alice, &bob, 60).await;
        let dir = tempfile::tempdir().unwrap();
        let key = || IndexKey::new([7; 32]);
        let (index, task) = indexer::spawn(dir.path().to_path_buf(), key(), alice.core.clone()).unwrap();
        found(&index, space, "m12", &[&ids[12]]).await;
        task.abort();
        let _ = task.await;
        drop(index);

        write(&alice, Some(space), retract(&ids[12])).await;
        // Its shard is set aside again: the answer comes from its row.
        let alice = alice.restart();
        assert_eq!(alice.status(space).await.shards_set_aside, 3);
        assert_eq!(alice.core.retracted(space).await.unwrap(), vec![ids[12].clone()]);

        let options = indexer::Options { deep_read: 15 };
        let (index, task) = indexer::spawn_with(dir.path().to_path_buf(), key(), alice.core.clone(), options).unwrap();
        found(&index, space, "m12", &[]).await;
        assert_eq!(
            find(&index, space, "m25"),
            vec![ids[25].clone()],
            "older messages keep their entries"
        );
        task.abort();
    });
}

/// Each epoch's run of shards `envelopes` write content into: (epoch, index).
fn epoch_shards_written(envelopes: &[Vec<u8>], space: SpaceId) -> BTreeSet<(EpochId, u32)> {
    envelopes
        .iter()
        .map(|b| Envelope::decode(b.clone()).unwrap())
        .filter(|e| e.header().kind == Kind::Content && e.header().space == space)
        .map(|e| {
            let h = e.header();
            (
                h.epoch,
                space
                    .epoch_shard_of(&h.epoch, &h.doc)
                    .expect("a shard of its epoch's run"),
            )
        })
        .collect()
}

/// A room whose history starts at each join keeps memory flat too: each
/// epoch's messages roll over into shards of their own (its first document
/// holds no messages), shards of an earlier epoch are closed and set aside,
/// and what points at an earlier epoch's message goes into the current
/// epoch's first document, where every node reads it, whatever it has loaded.
#[test]
fn a_room_whose_history_starts_at_each_join_shards_each_epoch() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (alice, bob, carol) = (node(), node(), node());
        let mut alice_rx = alice.core.subscribe();
        let space = alice
            .core
            .create_chat(
                "from join".into(),
                History::FromJoin,
                vec![bob.cert().to_card()],
                vec![],
            )
            .await
            .unwrap();
        let name = bob.keys.user_id().to_string()[..16].to_string();
        let mut ids = Vec::new();
        for i in 0..35 {
            let text = if i == 8 { format!("@{name} m8") } else { format!("m{i}") };
            ids.push(alice.core.send(space, text, None).await.unwrap().id);
        }
        let written = stored(&mut alice_rx);
        let first = epoch_shards_written(&written, space);
        let e1 = first.first().unwrap().0;
        assert_eq!(first, (1..=4).map(|k| (e1, k)).collect::<BTreeSet<_>>());
        // Shards 1 and 2 are closed: set aside.
        let status = alice.status(space).await;
        assert_eq!((status.shards_loaded, status.shards_set_aside), (2, 2));
        exchange(&alice, &bob, space).await;
        assert_eq!(bob.status(space).await.shards_set_aside, 2);
        assert_eq!(log(&bob, space).await, log(&alice, space).await);

        // Carol joins: a new epoch, whose messages start a run of their own.
        alice
            .core
            .invite(space, carol.cert().to_card(), Grant::Member(Role::Writer))
            .await
            .unwrap();
        for i in 0..12 {
            alice.core.send(space, format!("n{i}"), None).await.unwrap();
        }
        let written = epoch_shards_written(&stored(&mut alice_rx), space);
        let e2 = written.first().unwrap().0;
        assert_ne!(e1, e2);
        assert_eq!(written, BTreeSet::from([(e2, 1), (e2, 2)]));
        // Every shard of the earlier epoch is closed now: set aside, but for
        // the two the full log above read last.
        let status = alice.status(space).await;
        assert_eq!((status.shards_loaded, status.shards_set_aside), (4, 2));
        let mut want: Vec<String> = (0..35).map(|i| format!("m{i}")).collect();
        want[8] = format!("@{name} m8");
        want.extend((0..12).map(|i| format!("n{i}")));
        // The latest messages reach back into the earlier epoch's last shard.
        let latest = alice.core.messages(space, 15).await.unwrap();
        assert_eq!(texts(&latest), want[want.len() - 15..]);
        assert_eq!(texts(&log(&alice, space).await), want);

        // Edits, retractions and reactions of the earlier epoch's messages go
        // into the current epoch's first document.
        write(&alice, Some(space), edit(&ids[5], "m5, edited")).await;
        write(&alice, Some(space), retract(&ids[8])).await;
        write(&bob, Some(space), thumbs_up(&ids[7])).await;
        let written = stored(&mut alice_rx);
        let settings = space.epoch_shard(&e2, 0);
        assert_eq!(doc_of(&written, Kind::Content), vec![settings, settings]);
        assert_eq!(doc_of(&written, Kind::Tombstone), vec![settings]);
        let full = log(&alice, space).await;
        assert_eq!(full[5].text, "m5, edited");
        assert!(full[8].retracted.is_some() && full[8].text.is_empty());
        assert_eq!(alice.status(space).await.shards_set_aside, 2);

        // Bob gets them with m5..m8's shard set aside (a restart sets aside
        // what his reads had loaded): the change names it, so it is loaded,
        // its mention leaves the inbox and its unread count drops the
        // retracted message.
        assert_eq!(bob.core.inbox(10).await.unwrap().len(), 1);
        let bob = bob.restart();
        assert_eq!(bob.status(space).await.shards_set_aside, 2);
        let mut bob_rx = bob.core.subscribe();
        exchange(&alice, &bob, space).await;
        let updated: BTreeSet<DocId> = std::iter::from_fn(|| bob_rx.try_recv().ok())
            .filter_map(|e| match e {
                outpost_node::core::Event::ChatUpdated { docs, .. } => Some(docs),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(updated.contains(&space.epoch_shard(&e1, 1)), "{updated:?}");
        assert!(bob.core.inbox(10).await.unwrap().is_empty());
        assert_eq!(unread(&bob, space).await, 35 + 12 - 1);
        let full = log(&alice, space).await;
        assert_eq!(full[7].reactions.len(), 1, "Bob's reaction reached Alice");
        assert_eq!(log(&bob, space).await, full);
        let aside = bob.status(space).await.shards_set_aside;
        assert!(aside >= 2, "{aside} set aside");

        // A restart keeps it all, the earlier epoch's shards set aside.
        let bob = bob.restart();
        assert_eq!(bob.status(space).await.shards_set_aside, 4);
        assert_eq!(unread(&bob, space).await, 35 + 12 - 1);
        assert_eq!(bob.core.messages(space, 5).await.unwrap(), full[full.len() - 5..]);
        assert_eq!(log(&bob, space).await, full);

        // Carol reads from her join on only.
        exchange(&alice, &carol, space).await;
        assert_eq!(texts(&log(&carol, space).await), want[35..]);
    });
}

/// A from-join room's settings live in each epoch's first document: a join
/// (a new epoch) keeps showing the earlier ones, the inviter writes them into
/// the new epoch so the newcomer sees them, and a setting written in an epoch
/// without any carries the others over.
#[test]
fn a_from_join_room_keeps_its_settings_across_a_join() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (alice, bob, carol) = (node(), node(), node());
        let space = alice
            .core
            .create_chat("settings".into(), History::FromJoin, vec![bob.cert().to_card()], vec![])
            .await
            .unwrap();
        let topic = |text: &str| ChatOp::Topic { text: text.into() };
        write(&alice, Some(space), topic("launch")).await;
        write(&alice, Some(space), ChatOp::RetractWindow { seconds: 60 }).await;
        alice
            .core
            .invite(space, carol.cert().to_card(), Grant::Member(Role::Writer))
            .await
            .unwrap();
        let room = alice.core.room(space).await.unwrap();
        assert_eq!(room.topic.as_deref(), Some("launch"), "a join keeps the settings");
        assert_eq!(room.retract_window_s, 60);
        // The inviter wrote them into the new epoch: the newcomer reads them.
        exchange(&alice, &carol, space).await;
        let room = carol.core.room(space).await.unwrap();
        assert_eq!(room.topic.as_deref(), Some("launch"), "the newcomer sees the topic");
        assert_eq!(room.retract_window_s, 60);

        write(&alice, Some(space), ChatOp::Welcome { text: "hi all".into() }).await;
        exchange(&alice, &carol, space).await;
        exchange(&alice, &bob, space).await;
        for node in [&alice, &bob, &carol] {
            let room = node.core.room(space).await.unwrap();
            assert_eq!(room.topic.as_deref(), Some("launch"));
            assert_eq!(room.welcome.as_deref(), Some("hi all"));
            assert_eq!(room.retract_window_s, 60);
        }
        write(&alice, Some(space), topic("landing")).await;
        exchange(&alice, &carol, space).await;
        let room = carol.core.room(space).await.unwrap();
        assert_eq!(room.topic.as_deref(), Some("landing"));
        assert_eq!(room.welcome.as_deref(), Some("hi all"));
    });
}

/// A copy of an announcement written for a newcomer where the announcement's
/// retraction had not arrived yet: once the two meet, the owner, who reads
/// the original, retracts the copy too, and the newcomer no longer sees it.
#[test]
fn a_copy_made_while_its_original_was_being_retracted_is_retracted_too() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (alice, bob, carol) = (node(), node(), node());
        let space = alice
            .core
            .create_chat("crossed".into(), History::FromJoin, vec![], vec![])
            .await
            .unwrap();
        alice
            .core
            .invite(space, bob.cert().to_card(), Grant::Member(Role::Admin))
            .await
            .unwrap();
        let announce = ChatOp::Announce {
            text: "Freeze starts Friday".into(),
        };
        let note = alice
            .core
            .chat_write(Some(space), announce)
            .await
            .unwrap()
            .message
            .unwrap();
        exchange(&alice, &bob, space).await;

        // Apart: Alice retracts the announcement while Bob, an admin, adds
        // Carol, copying it for her.
        write(&alice, Some(space), retract(&note)).await;
        bob.core
            .invite(space, carol.cert().to_card(), Grant::Member(Role::Writer))
            .await
            .unwrap();
        exchange(&bob, &carol, space).await;
        let shown = carol.core.room(space).await.unwrap().announcement.map(|m| m.text);
        assert_eq!(shown.as_deref(), Some("Freeze starts Friday"), "the copy reached Carol");

        exchange(&alice, &bob, space).await;
        exchange(&bob, &carol, space).await;
        let room = carol.core.room(space).await.unwrap();
        assert!(
            room.announcement.is_none(),
            "the copy is deleted: {:?}",
            room.announcement
        );
        assert!(room.pinned.is_empty());
        let room = bob.core.room(space).await.unwrap();
        assert!(room.announcement.is_some_and(|m| m.retracted.is_some()));
    });
}
