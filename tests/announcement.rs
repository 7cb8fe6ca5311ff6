//! Announcement rooms: only owners and admins post. On real cores, a writer's
//! post made at control heads where the room is announcement-only is refused
//! by every node alike, while one made before the rule (at heads without it)
//! stays valid. Between daemons, the CLI refuses a writer's post with a clear
//! error and the room can be opened again.

mod common;
mod inproc;

use std::time::Duration;

use common::wait_until;
use inproc::{Node, control_state, deliver, served};
use outpost_crdt::{
    Author,
    chat::{ChatDoc, NewMessage},
    writer,
};
use outpost_node::{
    control::{History, Posting, SpaceState},
    envelope::{Envelope, Header, Kind},
    identity::DeviceKeys,
    ids::EnvelopeId,
};

/// A message from `author`, sealed under the key the space's log gives it, at
/// the control heads `heads` of `state`.
fn message(author: &DeviceKeys, state: &SpaceState, heads: Vec<EnvelopeId>, text: &str) -> Envelope {
    let space = state.space;
    let doc = space.chat_shard(0);
    let incarnation = rand::random();
    let actor = writer::actor_id(&author.device_id().0, &doc, incarnation);
    let by = Author {
        user: author.user_id().to_string(),
        editor: true,
        admin: false,
    };
    // Only the skeleton matters to the verdict; it names a body by its id.
    let post = NewMessage {
        id: format!("m{incarnation}"),
        body: EnvelopeId::of(text.as_bytes()).to_string(),
        reply_to: None,
        mentions: Vec::new(),
        all: false,
    };
    let change = ChatDoc::new(doc).post(actor, &by, &[post], 1).unwrap();
    let key = state.unwrap_key(author).expect("a member").unwrap();
    let header = Header {
        kind: Kind::Content,
        space,
        doc,
        epoch: state.epoch,
        author: author.device_id(),
        incarnation,
        seq: 1,
        parents: Vec::new(),
        control_heads: heads,
    };
    Envelope::seal_content(author, header, &key, change.raw_bytes())
}

#[test]
fn every_node_refuses_a_writers_post_in_an_announcement_room() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let [owner, writer_node, judge] = [(); 3].map(|_| Node::new());
        let cards = vec![writer_node.cert().to_card(), judge.cert().to_card()];
        let space = owner
            .core
            .create_chat("news".into(), History::Shared, cards, vec![])
            .await
            .unwrap();
        let before = control_state(&served(&owner, &writer_node, space).await, space);
        owner.core.set_posting(space, Posting::Admins).await.unwrap();
        let log = served(&owner, &writer_node, space).await;
        let after = control_state(&log, space);
        assert_eq!(after.current().posting, Posting::Admins);
        let ack = deliver(&owner, &judge, log).await;
        assert_eq!(ack.rejected, 0);

        // At heads where the room is announcement-only: refused by both.
        let late = message(&writer_node.keys, &after, after.heads(), "posted after the rule");
        for node in [&owner, &judge] {
            let ack = deliver(&writer_node, node, vec![late.as_bytes().to_vec()]).await;
            assert_eq!((ack.stored, ack.rejected), (0, 1), "{ack:?}");
        }
        // At heads before the rule: valid where it was made, on both.
        let early = message(&writer_node.keys, &after, before.heads(), "posted before the rule");
        for node in [&owner, &judge] {
            let ack = deliver(&writer_node, node, vec![early.as_bytes().to_vec()]).await;
            assert_eq!((ack.stored, ack.rejected), (1, 0), "{ack:?}");
        }
        // The owner still posts, and the judge takes it.
        owner.core.send(space, "from the owner".into(), None).await.unwrap();
        let ack = deliver(&owner, &judge, served(&owner, &judge, space).await).await;
        // The message's change and its body.
        assert_eq!((ack.stored, ack.rejected), (2, 0));
        // The writer's own core refuses to post.
        let mut log = served(&owner, &writer_node, space).await;
        log.retain(|b| Envelope::decode(b.clone()).unwrap().header().kind == Kind::Control);
        deliver(&owner, &writer_node, log).await;
        let refused = writer_node.core.send(space, "no".into(), None).await.unwrap_err();
        assert!(refused.to_string().contains("announcement room"), "{refused}");
    });
}

#[test]
fn the_cli_makes_and_opens_announcement_rooms() {
    let root = tempfile::tempdir().unwrap();
    let mut owner = common::Node::init(root.path(), "owner");
    let mut member = common::Node::init(root.path(), "member");
    owner.start(&[]);
    member.start(&[owner.addr()]);
    let card = member.card();
    let created = owner.json(&["chat", "create", "news", "--member", &card, "--announcement", "--json"]);
    let space = created["space"].as_str().unwrap().to_string();
    owner.send(&space, "welcome");
    wait_until(Duration::from_secs(60), "the member to read the announcement", || {
        (member.log_texts(&space) == ["welcome"]).then_some(())
    });
    let listed = member.json(&["chat", "list", "--json"]);
    assert_eq!(listed[0]["posting"], "admins");

    let refused = member.fails(&["chat", "send", &space, "may I?"], 4);
    assert!(refused.contains("announcement room"), "{refused}");
    member.fails(&["space", "posting", &space, "writers"], 4);

    let opened = owner.cli(&["space", "posting", &space, "writers"]);
    assert!(opened.status.success(), "{}", String::from_utf8_lossy(&opened.stderr));
    wait_until(
        Duration::from_secs(60),
        "the member to post once the room is open",
        || {
            member
                .cli(&["chat", "send", &space, "now I may"])
                .status
                .success()
                .then_some(())
        },
    );
    wait_until(Duration::from_secs(60), "the owner to read the member", || {
        owner.log_texts(&space).contains(&"now I may".to_string()).then_some(())
    });
}
