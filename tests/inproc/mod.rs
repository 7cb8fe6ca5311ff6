//! In-process nodes for tests that drive the real core (redb store, sealing,
//! validation) directly, without the network: a test plays the sync protocol
//! between cores by hand (offer, push, ingest frame by frame).
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use outpost_node::{
    core::{self, CoreHandle, Event, SpaceStatus},
    envelope::{Envelope, Kind},
    identity::{DeviceCert, DeviceKeys},
    ids::{DeviceId, SpaceId},
    sync::{self, Ack},
};

pub struct Node {
    pub keys: Arc<DeviceKeys>,
    pub dir: tempfile::TempDir,
    pub core: CoreHandle,
    pub thread: std::thread::JoinHandle<()>,
    pub options: core::Options,
}

impl Node {
    pub fn new() -> Self {
        Self::with(core::Options::default())
    }

    pub fn with(options: core::Options) -> Self {
        let keys = Arc::new(DeviceKeys::generate());
        let dir = tempfile::tempdir().unwrap();
        let (core, thread) = core::spawn_with(dir.path().to_path_buf(), keys.clone(), options.clone()).unwrap();
        Self {
            keys,
            dir,
            core,
            thread,
            options,
        }
    }

    pub fn device(&self) -> DeviceId {
        self.keys.device_id()
    }

    pub fn cert(&self) -> DeviceCert {
        self.keys.cert()
    }

    /// Stops the core (every handle dropped, thread joined) and starts it again on
    /// the same store.
    pub fn restart(self) -> Self {
        let Node {
            keys,
            dir,
            core,
            thread,
            options,
        } = self;
        drop(core);
        thread.join().unwrap();
        let (core, thread) = core::spawn_with(dir.path().to_path_buf(), keys.clone(), options.clone()).unwrap();
        Self {
            keys,
            dir,
            core,
            thread,
            options,
        }
    }

    pub async fn status(&self, space: SpaceId) -> SpaceStatus {
        let all = self.core.status().await.unwrap();
        all.into_iter().find(|s| s.space == space).unwrap()
    }
}

/// What `server` pushes to `client` when the client offers what it holds.
pub async fn served(server: &Node, client: &Node, space: SpaceId) -> Vec<Vec<u8>> {
    let offer = client.core.make_offer(server.device()).await.unwrap();
    let mut theirs = offer;
    if theirs.iter().all(|s| s.space != space) {
        theirs.push(sync::SpaceVv {
            space,
            vv: Default::default(),
        });
    }
    server.core.take_offer(client.device(), theirs).await.unwrap().push
}

/// Delivers envelopes frame by frame, as sync does; returns the summed ack.
/// Then, as the network does, `to` asks `from` for the chat bodies it still
/// lacks (those of messages that came in a snapshot); those are not counted.
pub async fn deliver(from: &Node, to: &Node, envelopes: Vec<Vec<u8>>) -> Ack {
    let mut total = Ack::default();
    for frame in sync::into_frames(envelopes) {
        let ack = to.core.ingest(from.device(), frame).await.unwrap();
        total.stored += ack.stored;
        total.duplicate += ack.duplicate;
        total.pending += ack.pending;
        total.rejected += ack.rejected;
    }
    pull_bodies(from, to).await;
    total
}

/// `to` asks `from` for the chat bodies it lacks until `from` has no more of them.
pub async fn pull_bodies(from: &Node, to: &Node) {
    loop {
        let mut progressed = false;
        for (space, ids) in to.core.wanted_for(from.device()).await.unwrap() {
            let (sides, more) = from.core.sides_for(to.device(), space, ids).await.unwrap();
            if sides.is_empty() {
                continue;
            }
            to.core.ingest(from.device(), sides).await.unwrap();
            if more {
                to.core.ask_again(space).await;
            }
            progressed = true;
        }
        if !progressed {
            return;
        }
    }
}

pub fn kinds(envelopes: &[Vec<u8>]) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for bytes in envelopes {
        match Envelope::decode(bytes.clone()).unwrap().header().kind {
            Kind::Control => counts.0 += 1,
            Kind::Content => counts.1 += 1,
            Kind::Snapshot => counts.2 += 1,
            // Chat bodies, tombstones and receipts are kept beside the log.
            Kind::Body | Kind::Tombstone | Kind::State => {}
        }
    }
    counts
}

pub fn stored(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        if let Event::Stored { envelopes, .. } = ev {
            out.extend(envelopes.iter().cloned());
        }
    }
    out
}

/// The space's control log as `envelopes` give it.
pub fn control_state(envelopes: &[Vec<u8>], space: SpaceId) -> outpost_node::control::SpaceState {
    let ops: Vec<Envelope> = envelopes
        .iter()
        .map(|b| Envelope::decode(b.clone()).unwrap())
        .filter(|e| e.header().space == space && e.header().kind == Kind::Control)
        .collect();
    let mut state = outpost_node::control::SpaceState::from_genesis(&ops[0]).unwrap();
    for op in &ops[1..] {
        state.apply(op);
    }
    state
}
