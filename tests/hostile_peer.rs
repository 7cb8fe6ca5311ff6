//! A hostile peer against a real daemon. Mallory is a member of the space, so
//! she gets past connection and membership checks, holds the epoch key and can
//! sign; she speaks `/outpost/sync/1` from this test process with a raw codec
//! that lets her write any bytes. Every attack must be refused with a warning
//! naming her, counted in the ack she gets back, and change nothing: the daemon
//! keeps serving its honest peer, and a flood of envelopes that can never apply
//! leaves its memory bounded.

mod common;

use std::{io, time::Duration};

use common::{Node, wait_until};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, noise,
    request_response::{self, OutboundRequestId, ProtocolSupport},
    swarm::SwarmEvent,
    tcp, yamux,
};
use outpost_crdt::{
    Author, ChangeHash,
    chat::{ChatDoc, NewMessage},
    writer,
};
use outpost_node::{
    control::SpaceState,
    crypto::EpochKey,
    envelope::{Envelope, Header, Kind, MAX_ENVELOPE_BYTES},
    identity::DeviceKeys,
    ids::{EnvelopeId, SpaceId},
    sync::{self, Ack, MAX_FRAME_BYTES, Request, Response},
};

/// A frame as written on the wire: the length prefix may lie.
struct RawFrame {
    declared_len: u32,
    body: Vec<u8>,
}

impl RawFrame {
    fn of(request: &Request) -> Self {
        let body = sync::encode(request);
        Self {
            declared_len: body.len() as u32,
            body,
        }
    }

    fn envelopes(envelopes: Vec<Vec<u8>>) -> Self {
        Self::of(&Request::Envelopes { envelopes })
    }
}

#[derive(Clone, Default)]
struct RawCodec;

/// What the test reads back from the daemon; a generous cap, this is a test.
const READ_CAP: usize = 64 << 20;

async fn read_body<T: futures::AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > READ_CAP {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too large"));
    }
    let mut body = vec![0; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = RawFrame;
    type Response = Vec<u8>;

    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<RawFrame> {
        let body = read_body(io).await?;
        Ok(RawFrame {
            declared_len: body.len() as u32,
            body,
        })
    }

    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_body(io).await
    }

    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        frame: RawFrame,
    ) -> io::Result<()> {
        io.write_all(&frame.declared_len.to_be_bytes()).await?;
        io.write_all(&frame.body).await?;
        io.close().await
    }

    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        body: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&(body.len() as u32).to_be_bytes()).await?;
        io.write_all(&body).await?;
        io.close().await
    }
}

/// Mallory's end of the connection.
struct Hostile {
    swarm: Swarm<request_response::Behaviour<RawCodec>>,
    peer: libp2p::PeerId,
    /// Envelopes the daemon pushed to her.
    received: Vec<Vec<u8>>,
}

impl Hostile {
    async fn connect(keys: &DeviceKeys, addr: &str) -> Self {
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keys.libp2p_keypair())
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(|_| {
                request_response::Behaviour::with_codec(
                    RawCodec,
                    [(StreamProtocol::new(sync::PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default().with_request_timeout(Duration::from_secs(60)),
                )
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        swarm.dial(addr.parse::<Multiaddr>().unwrap()).unwrap();
        let peer = loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => break peer_id,
                SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
                _ => {}
            }
        };
        Self {
            swarm,
            peer,
            received: Vec::new(),
        }
    }

    /// Sends a frame and drives the connection until its answer (or failure),
    /// answering whatever the daemon asks meanwhile.
    async fn request(&mut self, frame: RawFrame) -> Result<Response, String> {
        let id = self.swarm.behaviour_mut().send_request(&self.peer, frame);
        tokio::time::timeout(Duration::from_secs(60), self.drive_until(id))
            .await
            .map_err(|_| "no answer within 60 s".to_string())?
    }

    async fn drive_until(&mut self, id: OutboundRequestId) -> Result<Response, String> {
        use request_response::{Event, Message};
        loop {
            let event = self.swarm.select_next_some().await;
            let SwarmEvent::Behaviour(event) = event else {
                if let SwarmEvent::ConnectionClosed { .. } = event {
                    return Err("connection closed".into());
                }
                continue;
            };
            match event {
                Event::Message {
                    message: Message::Response { request_id, response },
                    ..
                } if request_id == id => {
                    return sync::decode_response(&response).map_err(|e| e.to_string());
                }
                Event::OutboundFailure { request_id, error, .. } if request_id == id => {
                    return Err(error.to_string());
                }
                Event::Message {
                    message: Message::Request { request, channel, .. },
                    ..
                } => {
                    let answer = match sync::decode_request(&request.body).expect("the daemon sends valid frames") {
                        Request::Envelopes { envelopes } => {
                            self.received.extend(envelopes);
                            Response::Ack(Ack::default())
                        }
                        Request::Packed { groups } => {
                            self.received
                                .extend(sync::unpack(groups).expect("the daemon packs valid frames"));
                            Response::Ack(Ack::default())
                        }
                        Request::Offer { .. } => Response::Offer { spaces: Vec::new() },
                        Request::Join(_) => Response::Joined(Box::new(outpost_node::link::JoinOutcome::Refused(
                            "mallory links no one".into(),
                        ))),
                        Request::Policy(_) => Response::Policy(None),
                        Request::Claims(_) => Response::Ack(Ack::default()),
                        Request::Bodies { space, .. } => Response::Sides {
                            space,
                            envelopes: Vec::new(),
                            more: false,
                        },
                        Request::Enroll(_) | Request::EnrollRelayed(_) => Response::Enrolled(Box::new(
                            outpost_node::org::enroll::EnrollOutcome::Refused("mallory enrolls no one".into()),
                        )),
                    };
                    let _ = self.swarm.behaviour_mut().send_response(channel, sync::encode(&answer));
                }
                _ => {}
            }
        }
    }

    /// Sends one frame of envelopes and returns the daemon's ack.
    async fn push(&mut self, envelopes: Vec<Vec<u8>>) -> Ack {
        match self.request(RawFrame::envelopes(envelopes)).await {
            Ok(Response::Ack(ack)) => ack,
            other => panic!("expected an ack, got {other:?}"),
        }
    }
}

/// What Mallory learns as a member: the epoch key, the genesis, and A's
/// messages with the changes they carry.
struct Insider {
    space: SpaceId,
    state: SpaceState,
    key: EpochKey,
    /// A's message envelopes, oldest first, with the hash of their change.
    messages: Vec<(Envelope, ChangeHash)>,
    /// The room as Mallory sees it (genesis + A's messages).
    room: ChatDoc,
}

/// Chat rules judge the role; any writer's user does here.
fn writer_author() -> Author {
    Author {
        user: "ab".repeat(32),
        editor: true,
        admin: false,
    }
}

/// A change posting one message as `actor` into a fresh room (its body is
/// named by an id; only the skeleton matters to what is tested).
fn post(doc: outpost_crdt::DocId, actor: outpost_crdt::ActorId, id: &str, text: &str) -> outpost_crdt::Change {
    let msg = NewMessage {
        id: id.into(),
        body: EnvelopeId::of(text.as_bytes()).to_string(),
        reply_to: None,
        mentions: Vec::new(),
        all: false,
    };
    ChatDoc::new(doc).post(actor, &writer_author(), &[msg], 1).unwrap()
}

impl Insider {
    fn learn(keys: &DeviceKeys, received: &[Vec<u8>], space: SpaceId) -> Self {
        let envs: Vec<Envelope> = received
            .iter()
            .map(|b| Envelope::decode(b.clone()).unwrap())
            .filter(|e| e.header().space == space)
            .collect();
        let genesis = envs.iter().find(|e| e.header().kind == Kind::Control).unwrap();
        let state = SpaceState::from_genesis(genesis).unwrap();
        let key = state.unwrap_key(keys).expect("mallory is a member").unwrap();
        let mut room = ChatDoc::new(space.chat_shard(0));
        let mut messages = Vec::new();
        for env in envs.iter().filter(|e| e.header().kind == Kind::Content) {
            let change = outpost_crdt::Change::from_bytes(env.open_content(&key).unwrap()).unwrap();
            messages.push((env.clone(), change.hash()));
            room.apply(vec![change], &writer_author()).unwrap();
        }
        Self {
            space,
            state,
            key,
            messages,
            room,
        }
    }

    fn header(&self, author: &DeviceKeys, incarnation: u64, seq: u64, parents: Vec<EnvelopeId>) -> Header {
        Header {
            kind: Kind::Content,
            space: self.space,
            doc: self.space.chat_shard(0),
            epoch: self.state.epoch,
            author: author.device_id(),
            incarnation,
            seq,
            parents,
            control_heads: self.state.heads(),
        }
    }

    /// A well-formed message from `author` as writer (`incarnation`, seq 1),
    /// concurrent with everything (its only dependency is the genesis).
    fn message(&self, author: &DeviceKeys, incarnation: u64, text: &str) -> Envelope {
        let doc = self.space.chat_shard(0);
        let actor = writer::actor_id(&author.device_id().0, &doc, incarnation);
        let change = post(doc, actor, &format!("m{incarnation}"), text);
        Envelope::seal_content(
            author,
            self.header(author, incarnation, 1, Vec::new()),
            &self.key,
            change.raw_bytes(),
        )
    }
}

fn rejected(ack: &Ack) -> (u32, u32, u32, u32) {
    (ack.stored, ack.duplicate, ack.pending, ack.rejected)
}

#[test]
fn hostile_peer_is_refused_and_the_node_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init(root.path(), "a");
    let mut b = Node::init(root.path(), "b");
    a.start(&[]);
    b.start(&[a.addr()]);
    let mallory = DeviceKeys::generate();
    let outsider = DeviceKeys::generate();
    let created = a.json(&[
        "chat",
        "create",
        "ops",
        "--json",
        "--member",
        &b.card(),
        "--member",
        &mallory.cert().to_card(),
    ]);
    let space: SpaceId = created["space"].as_str().unwrap().parse().unwrap();
    let space_text = space.to_string();
    a.send(&space_text, "first");
    a.send(&space_text, "second");
    let m = mallory.device_id().fmt_short();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut h = Hostile::connect(&mallory, &a.addr()).await;
        // Mallory pulls the space like any member.
        let offer = Request::Offer {
            cert: Box::new(mallory.cert()),
            spaces: Vec::new(),
        };
        assert!(matches!(
            h.request(RawFrame::of(&offer)).await,
            Ok(Response::Offer { .. })
        ));
        while h.received.len() < 3 {
            // Keep driving the connection until A's push (genesis + 2 messages) is in.
            let _ = h.request(RawFrame::of(&offer)).await;
        }
        let insider = Insider::learn(&mallory, &h.received, space);
        assert_eq!(insider.messages.len(), 2);

        // Control: a well-formed message from Mallory is stored.
        let honest = insider.message(&mallory, 1, "hello from mallory");
        assert_eq!(rejected(&h.push(vec![honest.as_bytes().to_vec()]).await), (1, 0, 0, 0));

        // Garbage where an envelope should be.
        assert_eq!(rejected(&h.push(vec![vec![0xab; 300]]).await), (0, 0, 0, 1));

        // A wrong signature (last byte flipped).
        let mut forged = insider.message(&mallory, 2, "forged").into_bytes();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(rejected(&h.push(vec![forged]).await), (0, 0, 0, 1));

        // An envelope over the size cap.
        assert_eq!(
            rejected(&h.push(vec![vec![1; MAX_ENVELOPE_BYTES + 1]]).await),
            (0, 0, 0, 1)
        );

        // A replay of A's message is a duplicate: stored once, applied once.
        let replay = insider.messages[0].0.as_bytes().to_vec();
        assert_eq!(rejected(&h.push(vec![replay.clone(), replay]).await), (0, 2, 0, 0));

        // Equivocation: another envelope for (Mallory's writer 1, seq 1). The
        // writer is frozen before seq 1: its first message goes too, on A and,
        // once A hands it the two twins, on B.
        let twin = insider.message(&mallory, 1, "a different first message");
        assert_eq!(rejected(&h.push(vec![twin.clone().into_bytes()]).await), (0, 0, 0, 1));
        // Either twin again, and anything else from that writer, is refused quietly.
        assert_eq!(
            rejected(&h.push(vec![twin.into_bytes()]).await).1,
            1,
            "a known twin is a duplicate"
        );
        let later = Envelope::seal_content(&mallory, insider.header(&mallory, 1, 2, Vec::new()), &insider.key, b"-");
        assert_eq!(rejected(&h.push(vec![later.into_bytes()]).await), (0, 0, 0, 1));

        // Author/actor mismatch: signed by Mallory, but the change is written as
        // one of B's writers.
        let doc = space.chat_shard(0);
        let b_device: outpost_node::ids::DeviceId = b.device_id().parse().unwrap();
        let stolen_actor = writer::actor_id(&b_device.0, &doc, 3);
        let change = post(doc, stolen_actor, "asb", "I am B");
        let mismatch = Envelope::seal_content(
            &mallory,
            insider.header(&mallory, 3, 1, Vec::new()),
            &insider.key,
            change.raw_bytes(),
        );
        assert_eq!(rejected(&h.push(vec![mismatch.into_bytes()]).await), (0, 0, 0, 1));

        // A device that is not a member signs (Mallory hands it the key).
        let intruder = insider.message(&outsider, 1, "not a member");
        assert_eq!(rejected(&h.push(vec![intruder.into_bytes()]).await), (0, 0, 0, 1));

        // A valid, signed change that breaks the chat rules: it replaces the
        // room's message map, which would hide every message.
        let heads: Vec<EnvelopeId> = vec![insider.messages[1].0.id()];
        let mut fork = insider
            .room
            .automerge()
            .fork()
            .with_actor(writer::actor_id(&mallory.device_id().0, &doc, 4));
        let mut tx = fork.transaction();
        automerge::transaction::Transactable::put_object(&mut tx, automerge::ROOT, "messages", automerge::ObjType::Map)
            .unwrap();
        let (hash, _) = tx.commit_with(automerge::transaction::CommitOptions::default().with_time(1));
        let wipe_change = automerge::ReadDoc::get_change_by_hash(&fork, &hash.unwrap()).unwrap();
        assert_eq!(wipe_change.deps(), &[insider.messages[1].1]);
        let wipe = Envelope::seal_content(
            &mallory,
            insider.header(&mallory, 4, 1, heads),
            &insider.key,
            wipe_change.raw_bytes(),
        );
        assert_eq!(rejected(&h.push(vec![wipe.into_bytes()]).await), (0, 0, 0, 1));

        // Frames that break the protocol: a length over the cap, and bytes that
        // are not a frame. The stream fails; the connection and node go on.
        let oversized = RawFrame {
            declared_len: (MAX_FRAME_BYTES + 1) as u32,
            body: vec![0; 64],
        };
        assert!(h.request(oversized).await.is_err());
        let garbage = RawFrame {
            declared_len: 16,
            body: vec![0xff; 16],
        };
        assert!(h.request(garbage).await.is_err());

        // A flood of signed envelopes whose parents never come: 75k × 2 KiB,
        // far beyond the waiting caps (10,000 envelopes / 16 MiB per space).
        let rss_before = a.rss_kib().unwrap();
        let missing_parent = EnvelopeId([7; 32]);
        let padding = vec![0u8; 2048];
        let (mut waiting, mut refused) = (0u32, 0u32);
        for frame in 0..150u64 {
            let envelopes: Vec<Vec<u8>> = (0..500u64)
                .map(|i| {
                    let header = insider.header(&mallory, 5, 2 + frame * 500 + i, vec![missing_parent]);
                    Envelope::seal_content(&mallory, header, &insider.key, &padding).into_bytes()
                })
                .collect();
            let ack = h.push(envelopes).await;
            assert_eq!(ack.stored + ack.duplicate, 0);
            waiting += ack.pending;
            refused += ack.rejected;
        }
        assert_eq!(waiting + refused, 75_000);
        assert!(waiting <= 10_000, "{waiting} envelopes admitted to wait");
        let rss_after = a.rss_kib().unwrap();
        eprintln!("daemon RSS {rss_before} KiB before the flood, {rss_after} KiB after ({waiting} waiting)");
        assert!(
            rss_after < rss_before + 112 * 1024,
            "memory grew from {rss_before} KiB to {rss_after} KiB while refusing a flood"
        );
    });

    // The node kept serving: its honest peer and it still exchange messages,
    // and both show the same log: A's and B's messages only. Mallory's frozen
    // writer is gone from both, although B only ever received its first message.
    a.send(&space_text, "after the attack");
    b.send(&space_text, "b is fine");
    let log = wait_until(Duration::from_secs(60), "a and b to converge after the attack", || {
        let (la, lb) = (a.log_texts(&space_text), b.log_texts(&space_text));
        (la.len() == 4 && la == lb).then_some(la)
    });
    for text in ["first", "second", "after the attack", "b is fine"] {
        assert!(log.iter().any(|t| t == text), "{text} missing from {log:?}");
    }
    let b_status = b.space_status(&space_text).unwrap();
    assert_eq!(
        b_status["equivocating"],
        serde_json::json!([mallory.device_id().to_string()]),
        "B learnt the freeze from A's evidence: {b_status}"
    );
    let s = a.space_status(&space_text).unwrap();
    assert!(s["pending"].as_u64().unwrap() <= 10_000);
    assert_eq!(s["sync"], "stuck", "envelopes wait for parents that never come: {s}");
    assert_eq!(
        s["equivocating"],
        serde_json::json!([mallory.device_id().to_string()]),
        "Mallory signed two envelopes for one position: {s}"
    );
    assert!(s["pending_bytes"].as_u64().unwrap() <= 16 << 20);
    // Equivocation, actor mismatch, non-member author and the chat-rule breach
    // are counted against the space (malformed bytes cannot be attributed to one).
    assert!(s["rejected"].as_u64().unwrap() >= 4, "{s}");

    // Every refusal was logged as a warning naming Mallory.
    let logs = a.logs();
    let warned = |needle: &str| {
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains(&m) && l.contains(needle))
    };
    for needle in [
        "bad signature",
        "exceeds the",
        "equivocation",
        "Automerge actor is not the one bound",
        "author may not write",
        "chat rules: touches the schema",
        "refused a sync frame from peer",
        "waiting sets are full",
        "rejected a malformed envelope",
    ] {
        assert!(warned(needle), "no warning naming {m} with {needle:?} in:\n{logs}");
    }
}
