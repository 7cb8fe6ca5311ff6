//! The network actor: owns the libp2p `Swarm` (TCP + QUIC, Noise, Yamux, mDNS,
//! identify, ping, circuit relay v2 with DCUtR, rendezvous, and the sync
//! protocol) and moves sync frames between peers and the core. Decisions about
//! what to send live in the core and [`crate::sync`]; finding and using anchors
//! in [`anchor`].

mod anchor;
mod blobs;
mod codec;
mod enroll;

pub use libp2p::Multiaddr;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    PeerId, StreamProtocol, Swarm, connection_limits, dcutr, identify, mdns,
    multiaddr::Protocol,
    noise, ping, relay, rendezvous,
    request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel},
    swarm::{ConnectionId, NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle, dial_opts::DialOpts},
    tcp, yamux,
};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{broadcast, mpsc, oneshot},
    task::JoinSet,
};
use tracing::{debug, info, warn};

use self::{
    anchor::{Admitted, Anchors},
    codec::SyncCodec,
    enroll::Enrolling,
};
use crate::{
    core::{self, CoreHandle, OrgNet},
    envelope::Envelope,
    identity::DeviceKeys,
    ids::DeviceId,
    link::{JoinOutcome, JoinRequest, Ticket},
    org::enroll::{EnrollOutcome, EnrollRequest, EnrollTicket},
    sync::{self, Ack, Backoff, Request, Response},
};

/// Most sync tasks in flight; inbound requests beyond it are dropped (the peer
/// retries on its next offer) so a flood cannot grow memory.
const MAX_TASKS: usize = 256;
/// Capacity of the actor's internal and command channels.
const CHANNEL_CAP: usize = 1024;
/// Connections in total and per peer (both sides may dial at once).
const MAX_CONNECTIONS: u32 = 256;
const MAX_CONNECTIONS_PER_PEER: u32 = 2;
const MAX_PENDING_INCOMING: u32 = 64;
/// How long a sync request may take: a full frame over a slow link.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent sync streams per connection: with [`sync::MAX_FRAME_BYTES`], bounds
/// what one connection can make us buffer (16 × 4 MiB).
const MAX_STREAMS: usize = 16;
/// How often due redials are checked.
const TICK: Duration = Duration::from_millis(200);
/// Frames of envelopes in flight to one peer: well below the peer's
/// [`MAX_STREAMS`], so pushes queue here (and coalesce into bigger frames)
/// instead of being dropped by the peer for want of streams.
const MAX_PUSHES_IN_FLIGHT: usize = 4;
/// Bytes of envelopes queued for one peer. Beyond it the queue is dropped: the
/// peer pulls what it lacks at its next offer.
const OUTBOX_BYTES_CAP: usize = 32 << 20;
/// Connections past which nodes found at an anchor are not dialled (each
/// idle connection costs tens of KiB; design-rationale G4).
const DISCOVERED_DIAL_BUDGET: usize = 64;

/// Network configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<Multiaddr>,
    /// Peers to keep connected to, redialled with backoff.
    pub peers: Vec<Multiaddr>,
    pub mdns: bool,
    /// Full re-offer to every connected peer this often (anti-entropy).
    pub resync_interval: Duration,
    /// Serve as an anchor: circuit relay and rendezvous for the org's nodes.
    pub anchor: bool,
    /// Most bytes per second of attachments served to peers (`None`: no limit).
    pub upload_rate: Option<u64>,
}

/// A connected peer as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub device: DeviceId,
    pub peer_id: String,
    /// "lan" (found by mDNS), "direct" or "relayed".
    pub link: String,
    pub address: String,
    pub connected_since_ms: u64,
}

/// The network's part of `status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetStatus {
    pub peer_id: String,
    pub listen: Vec<String>,
    pub peers: Vec<PeerStatus>,
    /// This node serves as an anchor (relay and rendezvous).
    #[serde(default)]
    pub anchor: bool,
    /// The anchors this node uses (relay, rendezvous), connected now.
    #[serde(default)]
    pub anchors: Vec<DeviceId>,
    /// Where those anchors are dialled (`…/p2p/PEER`): invite tickets name them.
    #[serde(default)]
    pub anchor_addrs: Vec<String>,
}

enum ToNet {
    Status {
        reply: oneshot::Sender<NetStatus>,
    },
    Join {
        ticket: Box<Ticket>,
        request: Box<JoinRequest>,
        reply: oneshot::Sender<JoinOutcome>,
    },
    Enroll {
        admin: DeviceId,
        addrs: Vec<String>,
        /// Tried in turn when the admin's device cannot be reached.
        anchors: Vec<String>,
        request: Box<EnrollRequest>,
        reply: oneshot::Sender<EnrollOutcome>,
    },
}

/// A cheap handle to the network actor.
#[derive(Clone)]
pub struct NetHandle {
    tx: mpsc::Sender<ToNet>,
}

impl NetHandle {
    pub async fn status(&self) -> Option<NetStatus> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(ToNet::Status { reply }).await.ok()?;
        rx.await.ok()
    }

    /// Dials the admin device an org invite names and asks it to enroll this
    /// device; resolves with its answer, or a refusal when it cannot be reached.
    pub async fn enroll(&self, ticket: &EnrollTicket, request: EnrollRequest) -> EnrollOutcome {
        let (reply, rx) = oneshot::channel();
        let cmd = ToNet::Enroll {
            admin: ticket.admin,
            addrs: ticket.addrs.clone(),
            anchors: ticket.anchors.clone(),
            request: Box::new(request),
            reply,
        };
        if self.tx.send(cmd).await.is_err() {
            return EnrollOutcome::Refused("the node is shutting down".into());
        }
        rx.await
            .unwrap_or_else(|_| EnrollOutcome::Refused("the admin's device did not answer (unreachable?)".into()))
    }

    /// Dials the device a link ticket names and asks to join its user; resolves
    /// with its answer (after the person there confirms), or a refusal when it
    /// cannot be reached in time.
    pub async fn join(&self, ticket: Ticket, request: JoinRequest) -> JoinOutcome {
        let (reply, rx) = oneshot::channel();
        let cmd = ToNet::Join {
            ticket: Box::new(ticket),
            request: Box::new(request),
            reply,
        };
        if self.tx.send(cmd).await.is_err() {
            return JoinOutcome::Refused("the node is shutting down".into());
        }
        rx.await.unwrap_or_else(|_| {
            JoinOutcome::Refused(
                "the other device did not answer (unreachable, or not confirmed within a minute)".into(),
            )
        })
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    sync: request_response::Behaviour<SyncCodec>,
    blob: request_response::Behaviour<blobs::BlobCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    relay_client: relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
    rendezvous: rendezvous::client::Behaviour,
    /// The anchor role.
    relay: Toggle<relay::Behaviour>,
    rendezvous_server: Toggle<rendezvous::server::Behaviour>,
}

/// Work finished by a sync task, for the actor to carry out on the swarm.
enum Internal {
    Send {
        peer: PeerId,
        request: Request,
    },
    /// Envelopes the peer lacks, to queue in its outbox; `more` when the core
    /// stopped at its catch-up budget and has more to send once these are acked.
    Push {
        peer: PeerId,
        envelopes: Vec<Vec<u8>>,
        more: bool,
    },
    Respond {
        channel: ResponseChannel<Response>,
        response: Response,
    },
    /// What the org's policy now says (revoked and admitted devices).
    Policy(OrgNet),
    /// Attachment transfer work done off the actor.
    Blob(blobs::BlobWork),
}

struct StaticPeer {
    addr: Multiaddr,
    peer: Option<PeerId>,
    backoff: Backoff,
    next_dial: Instant,
    dialing: Option<ConnectionId>,
}

/// Envelopes waiting to be pushed to one peer, and the frames in flight.
#[derive(Default)]
struct Outbox {
    queue: std::collections::VecDeque<Vec<u8>>,
    bytes: usize,
    in_flight: usize,
    /// A catch-up stopped at the core's budget: ask for the next part once
    /// everything queued has been acknowledged.
    more: bool,
}

impl Outbox {
    /// Queues envelopes; false (and the queue emptied) when the cap would break.
    fn enqueue(&mut self, envelopes: impl IntoIterator<Item = Vec<u8>>) -> bool {
        for env in envelopes {
            self.bytes += env.len();
            self.queue.push_back(env);
        }
        if self.bytes > OUTBOX_BYTES_CAP {
            // Start over from what the peer acknowledges: once the frames in
            // flight are answered, the core serves the next part from there.
            self.queue.clear();
            self.bytes = 0;
            self.more = true;
            return false;
        }
        true
    }

    /// Whether the catch-up should continue now: everything pushed is
    /// acknowledged and the core said more follows. Clears the flag.
    fn take_resume(&mut self) -> bool {
        let resume = self.more && self.queue.is_empty() && self.in_flight == 0;
        if resume {
            self.more = false;
        }
        resume
    }

    /// The next frame to send, if a push may start now.
    fn next_frame(&mut self) -> Option<Vec<Vec<u8>>> {
        if self.in_flight >= MAX_PUSHES_IN_FLIGHT || self.queue.is_empty() {
            return None;
        }
        let mut frame = Vec::new();
        let mut size = 0;
        while let Some(env) = self.queue.front() {
            if !sync::fits_in_frame(frame.len(), size, env.len()) {
                break;
            }
            let env = self.queue.pop_front().expect("front exists");
            size += env.len();
            self.bytes -= env.len();
            frame.push(env);
        }
        self.in_flight += 1;
        Some(frame)
    }
}

struct Connected {
    device: DeviceId,
    address: Multiaddr,
    /// This node dialled it (so `address` is where it listens).
    dialed: bool,
    /// Through a relay's circuit.
    relayed: bool,
    since_ms: u64,
}

impl Connected {
    fn new(device: DeviceId, endpoint: &libp2p::core::ConnectedPoint) -> Self {
        let relayed = endpoint.is_relayed();
        // Relayed inbound, the remote address names no relay: the circuit
        // listened on does.
        let address = match endpoint {
            libp2p::core::ConnectedPoint::Listener { local_addr, .. } if relayed => local_addr.clone(),
            _ => endpoint.get_remote_address().clone(),
        };
        Self {
            device,
            address,
            dialed: endpoint.is_dialer(),
            relayed,
            since_ms: crate::clock::now_ms(),
        }
    }
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set up the transport")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: Multiaddr,
        #[source]
        source: libp2p::TransportError<std::io::Error>,
    },
}

/// Starts the network actor on the current tokio runtime.
pub fn spawn(
    config: Config,
    keys: Arc<DeviceKeys>,
    core: CoreHandle,
) -> Result<(NetHandle, tokio::task::JoinHandle<()>), Error> {
    let admitted = Admitted::default();
    let swarm = build_swarm(&keys, config.mdns, config.anchor.then_some(&admitted))?;
    let mut actor = NetActor::new(swarm, core, keys, &config, admitted);
    for addr in &config.listen {
        actor.swarm.listen_on(addr.clone()).map_err(|source| Error::Listen {
            addr: addr.clone(),
            source,
        })?;
    }
    let (tx, rx) = mpsc::channel(CHANNEL_CAP);
    let task = tokio::spawn(actor.run(rx));
    Ok((NetHandle { tx }, task))
}

/// The swarm; `anchor` when this node serves as one, with who the org admits.
fn build_swarm(keys: &DeviceKeys, mdns_on: bool, anchor: Option<&Admitted>) -> Result<Swarm<Behaviour>, Error> {
    let transport_err = |e: Box<dyn std::error::Error + Send + Sync>| Error::Transport(e);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keys.libp2p_keypair())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| transport_err(e.into()))?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| transport_err(e.into()))?
        .with_behaviour(|key, relay_client| {
            let me = key.public().to_peer_id();
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(mdns::Config::default(), me)?)
            } else {
                None
            };
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_established(Some(MAX_CONNECTIONS))
                        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
                        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING)),
                ),
                sync: request_response::Behaviour::with_codec(
                    SyncCodec,
                    [(StreamProtocol::new(sync::PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(MAX_STREAMS),
                ),
                // Each stream may hold a 1 MiB range: the cap bounds what one
                // connection makes us buffer.
                blob: request_response::Behaviour::with_codec(
                    blobs::BlobCodec,
                    [(StreamProtocol::new(blobs::PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(MAX_STREAMS),
                ),
                identify: identify::Behaviour::new(identify::Config::new("/outpost/1".into(), key.public())),
                ping: ping::Behaviour::default(),
                mdns: Toggle::from(mdns),
                relay_client,
                dcutr: dcutr::Behaviour::new(me),
                rendezvous: rendezvous::client::Behaviour::new(key.clone()),
                relay: Toggle::from(anchor.map(|a| relay::Behaviour::new(me, anchor::relay_config(a)))),
                rendezvous_server: Toggle::from(
                    anchor.map(|_| rendezvous::server::Behaviour::new(anchor::rendezvous_config())),
                ),
            })
        })
        .map_err(|e| transport_err(e.into()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}

/// The device behind a peer id: every Outpost peer id is an ed25519 key.
pub fn device_of(peer: &PeerId) -> Option<DeviceId> {
    let multihash = peer.as_ref();
    if multihash.code() != 0 {
        return None;
    }
    let key = libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    Some(DeviceId(key.try_into_ed25519().ok()?.to_bytes()))
}

struct NetActor {
    swarm: Swarm<Behaviour>,
    core: CoreHandle,
    /// This device (its certificate changes when it joins another user).
    keys: Arc<DeviceKeys>,
    me: DeviceId,
    events: broadcast::Receiver<core::Event>,
    internal_tx: mpsc::Sender<Internal>,
    internal_rx: mpsc::Receiver<Internal>,
    static_peers: Vec<StaticPeer>,
    connected: HashMap<PeerId, Connected>,
    outboxes: HashMap<PeerId, Outbox>,
    /// Push requests in flight, to credit the peer's outbox when they end.
    pushes: HashMap<OutboundRequestId, PeerId>,
    /// Join requests in flight, with who waits for the answer.
    joins: HashMap<OutboundRequestId, oneshot::Sender<JoinOutcome>>,
    enrolls: HashMap<OutboundRequestId, Enrolling>,
    /// As an anchor: held enrollment requests handed to their admin device,
    /// by request, with the requesting device and its proof (released once
    /// answered).
    relayed: HashMap<OutboundRequestId, (DeviceId, [u8; 32])>,
    /// The anchors the org's policy names (`None` without a policy: then any
    /// peer serving as one is used).
    policy_anchors: Option<BTreeSet<DeviceId>>,
    /// The highest policy version each peer said it holds (its answers): a
    /// peer that does not advance is not sent the same versions again.
    policy_seen: HashMap<PeerId, u64>,
    /// Devices the org's policy revokes: no session with them.
    revoked: BTreeSet<DeviceId>,
    /// Devices the org's policy admits (the relay's limiters read it).
    admitted: Admitted,
    /// This node serves as an anchor.
    serving_anchor: bool,
    /// Anchors this node uses, while connected to them.
    anchors: Anchors,
    /// Connected peers this node dialled that serve as anchors, used or not
    /// (the policy may name them later).
    anchor_candidates: HashSet<PeerId>,
    /// The rendezvous namespace of the org this node follows.
    namespace: rendezvous::Namespace,
    mdns_peers: HashSet<PeerId>,
    listen: Vec<Multiaddr>,
    tasks: JoinSet<()>,
    resync_interval: Duration,
    last_resync: Instant,
    downloads: blobs::Downloads,
}

impl NetActor {
    fn new(
        swarm: Swarm<Behaviour>,
        core: CoreHandle,
        keys: Arc<DeviceKeys>,
        config: &Config,
        admitted: Admitted,
    ) -> Self {
        let (internal_tx, internal_rx) = mpsc::channel(CHANNEL_CAP);
        let now = Instant::now();
        Self {
            swarm,
            events: core.subscribe(),
            core,
            me: keys.device_id(),
            keys,
            internal_tx,
            internal_rx,
            static_peers: config
                .peers
                .iter()
                .map(|addr| StaticPeer {
                    addr: addr.clone(),
                    peer: peer_in(addr),
                    backoff: Backoff::new(),
                    next_dial: now,
                    dialing: None,
                })
                .collect(),
            connected: HashMap::new(),
            outboxes: HashMap::new(),
            pushes: HashMap::new(),
            joins: HashMap::new(),
            enrolls: HashMap::new(),
            relayed: HashMap::new(),
            policy_anchors: None,
            policy_seen: HashMap::new(),
            revoked: BTreeSet::new(),
            admitted,
            serving_anchor: config.anchor,
            anchors: Anchors::new(),
            anchor_candidates: HashSet::new(),
            namespace: anchor::namespace(None),
            mdns_peers: HashSet::new(),
            listen: Vec::new(),
            tasks: JoinSet::new(),
            resync_interval: config.resync_interval,
            last_resync: now,
            downloads: blobs::Downloads::new(config.upload_rate),
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<ToNet>) {
        // Before any connection is handled: which devices get no session.
        if let Ok(org) = self.core.org_net().await {
            self.apply_policy(org);
        }
        // Downloads an earlier run left unfinished go on.
        for want in self.core.file_wants().await.unwrap_or_default() {
            self.want_blob(want);
        }
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.handle_command(cmd),
                    None => break,
                },
                Some(work) = self.internal_rx.recv() => self.handle_internal(work),
                event = self.events.recv() => self.handle_core_event(event),
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                _ = tick.tick() => self.handle_tick(),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
        }
        debug!("network stopped");
    }

    fn handle_command(&mut self, cmd: ToNet) {
        match cmd {
            ToNet::Status { reply } => {
                let peers = self
                    .connected
                    .iter()
                    .map(|(peer, c)| PeerStatus {
                        device: c.device,
                        peer_id: peer.to_string(),
                        link: link_kind(c.relayed, self.mdns_peers.contains(peer)).into(),
                        address: c.address.to_string(),
                        connected_since_ms: c.since_ms,
                    })
                    .collect();
                let _ = reply.send(NetStatus {
                    peer_id: self.swarm.local_peer_id().to_string(),
                    listen: self.listen.iter().map(|a| a.to_string()).collect(),
                    peers,
                    anchor: self.serving_anchor,
                    anchors: self.anchors.keys().filter_map(device_of).collect(),
                    anchor_addrs: self.anchors.iter().map(|(p, l)| l.dialable(*p).to_string()).collect(),
                });
            }
            ToNet::Join { ticket, request, reply } => {
                let Some(peer) = self.reach(&ticket.device, &ticket.addrs) else {
                    let _ = reply.send(JoinOutcome::Refused("the ticket names no valid device".into()));
                    return;
                };
                // Dials if needed; Noise proves the peer is the ticket's device.
                let id = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&peer, Ok(Request::Join(request)));
                self.joins.insert(id, reply);
            }
            ToNet::Enroll {
                admin,
                addrs,
                anchors,
                request,
                reply,
            } => {
                let Some(peer) = self.reach(&admin, &addrs) else {
                    let _ = reply.send(EnrollOutcome::Refused("the ticket names no valid device".into()));
                    return;
                };
                let fallbacks = anchors.iter().rev().filter_map(|a| a.parse().ok()).collect();
                self.send_enroll(
                    peer,
                    Enrolling {
                        reply,
                        request,
                        fallbacks,
                    },
                );
            }
        }
    }

    /// The peer id of `device`, with `addrs` noted for dialling it.
    fn reach(&mut self, device: &DeviceId, addrs: &[String]) -> Option<PeerId> {
        let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(&device.0).ok()?;
        let peer = libp2p::identity::PublicKey::from(key).to_peer_id();
        for addr in addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
            self.swarm.add_peer_address(peer, addr);
        }
        Some(peer)
    }

    fn handle_internal(&mut self, work: Internal) {
        match work {
            Internal::Send { peer, request } => {
                if self.connected.contains_key(&peer) {
                    let relayed = match &request {
                        Request::EnrollRelayed(r) => Some((r.cert.device, r.proof)),
                        _ => None,
                    };
                    let id = self.swarm.behaviour_mut().sync.send_request(&peer, Ok(request));
                    if let Some(held) = relayed {
                        self.relayed.insert(id, held);
                    }
                }
            }
            Internal::Push { peer, envelopes, more } => {
                // A partial catch-up is under way for this peer: it goes on from what
                // the peer acknowledges, so a second one (from a new offer) would
                // only send the same envelopes twice.
                if more && self.outboxes.get(&peer).is_some_and(|o| o.more) {
                    debug!(%peer, "a catch-up is under way; not starting another");
                    return;
                }
                self.push(peer, envelopes);
                if more && let Some(outbox) = self.outboxes.get_mut(&peer) {
                    outbox.more = true;
                }
            }
            Internal::Respond { channel, response } => {
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, response);
            }
            Internal::Policy(org) => self.apply_policy(org),
            Internal::Blob(work) => self.handle_blob_work(work),
        }
    }

    /// Takes what the org's policy now says: sessions with revoked devices
    /// close, the relay admits the org's devices, and registrations at anchors
    /// move to the org's namespace.
    fn apply_policy(&mut self, org: OrgNet) {
        let cut: Vec<PeerId> = self
            .connected
            .iter()
            .filter(|(_, c)| org.revoked.contains(&c.device))
            .map(|(p, _)| *p)
            .collect();
        for peer in cut {
            warn!(%peer, "closing the session with a device the org revoked");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        self.policy_anchors = org.admitted.as_ref().map(|_| org.anchors.clone());
        let dropped: Vec<PeerId> = self
            .anchors
            .keys()
            .filter(|p| !self.is_org_anchor(p))
            .copied()
            .collect();
        for peer in dropped {
            info!(%peer, "no longer using a peer the org's policy does not name as an anchor");
            if let Some(listener) = self.anchors.remove(&peer).and_then(|l| l.listener) {
                self.swarm.remove_listener(listener);
            }
        }
        self.revoked = org.revoked;
        self.admitted.set(org.admitted);
        self.namespace = anchor::namespace(org.org);
        let candidates: Vec<PeerId> = self.anchor_candidates.iter().copied().collect();
        for peer in candidates {
            self.adopt_anchor(peer);
        }
        self.use_anchors();
    }

    fn handle_core_event(&mut self, event: Result<core::Event, broadcast::error::RecvError>) {
        match event {
            Ok(core::Event::Stored {
                envelopes,
                entitled,
                from,
                ..
            }) => {
                let targets: Vec<PeerId> = self
                    .connected
                    .iter()
                    .filter(|(_, c)| entitled.contains(&c.device) && Some(c.device) != from && c.device != self.me)
                    .map(|(p, _)| *p)
                    .collect();
                for peer in targets {
                    self.push(peer, envelopes.as_ref().clone());
                }
            }
            Ok(core::Event::Claims { to, claims }) => {
                let peers: Vec<PeerId> = self
                    .connected
                    .iter()
                    .filter(|(_, c)| to.contains(&c.device))
                    .map(|(p, _)| *p)
                    .collect();
                for peer in peers {
                    self.swarm
                        .behaviour_mut()
                        .sync
                        .send_request(&peer, Ok(Request::Claims(claims.clone())));
                }
            }
            Ok(core::Event::Policy) => {
                let peers: Vec<PeerId> = self.connected.keys().copied().collect();
                let core = self.core.clone();
                let out = self.internal_tx.clone();
                self.spawn(async move {
                    if let Ok(org) = core.org_net().await {
                        let _ = out.send(Internal::Policy(org)).await;
                    }
                    let Ok(Some(frame)) = core.policy_frame().await else {
                        return;
                    };
                    for peer in peers {
                        let request = Request::Policy(Box::new(frame.clone()));
                        let _ = out.send(Internal::Send { peer, request }).await;
                    }
                });
            }
            Ok(core::Event::FileWanted(want)) => self.want_blob(want),
            Ok(core::Event::FileDropped(id)) => self.drop_blob(&id),
            Ok(
                core::Event::Message { .. }
                | core::Event::Reload { .. }
                | core::Event::Document { .. }
                | core::Event::Calendar { .. }
                | core::Event::ChatUpdated { .. }
                | core::Event::Inbox { .. },
            ) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(missed = n, "fell behind the core's events; re-syncing every peer");
                self.resync_all();
                // A missed FileWanted or FileDropped: the recorded downloads are the truth.
                self.reload_blob_wants();
            }
            Err(broadcast::error::RecvError::Closed) => {}
        }
    }

    /// Queues envelopes for a connected peer and starts what pushes may start.
    fn push(&mut self, peer: PeerId, envelopes: Vec<Vec<u8>>) {
        if !self.connected.contains_key(&peer) {
            return;
        }
        let outbox = self.outboxes.entry(peer).or_default();
        if !outbox.enqueue(envelopes) {
            warn!(%peer, "too much queued for the peer; it is served again from what it acknowledges");
            if outbox.take_resume() {
                self.resume_catch_up(peer);
            }
        }
        self.flush(peer);
    }

    /// Asks the core for the next part of what `peer` lacks and queues it.
    fn resume_catch_up(&mut self, peer: PeerId) {
        let Some(device) = self.connected.get(&peer).map(|c| c.device) else {
            return;
        };
        let core = self.core.clone();
        let out = self.internal_tx.clone();
        self.spawn(async move {
            if let Ok(outcome) = core.catch_up(device).await {
                push_frames(&out, peer, outcome.push, outcome.more).await;
            }
        });
    }

    fn flush(&mut self, peer: PeerId) {
        let Some(outbox) = self.outboxes.get_mut(&peer) else {
            return;
        };
        while let Some(frame) = outbox.next_frame() {
            let id = self.swarm.behaviour_mut().sync.send_request(&peer, Ok(packed(frame)));
            self.pushes.insert(id, peer);
        }
    }

    /// A push ended (acknowledged or failed): its slot frees up. True when it was
    /// the last of a partial catch-up, whose next part should be asked for.
    fn push_done(&mut self, id: OutboundRequestId) -> bool {
        let Some(peer) = self.pushes.remove(&id) else {
            return false;
        };
        let mut resume = false;
        if let Some(outbox) = self.outboxes.get_mut(&peer) {
            outbox.in_flight = outbox.in_flight.saturating_sub(1);
            resume = outbox.take_resume();
        }
        self.flush(peer);
        resume
    }

    fn handle_tick(&mut self) {
        let now = Instant::now();
        for i in 0..self.static_peers.len() {
            let sp = &self.static_peers[i];
            let connected = sp.peer.is_some_and(|p| self.connected.contains_key(&p));
            if connected || sp.dialing.is_some() || now < sp.next_dial {
                continue;
            }
            let opts = match sp.peer {
                Some(peer) => DialOpts::peer_id(peer).addresses(vec![sp.addr.clone()]).build(),
                None => DialOpts::unknown_peer_id().address(sp.addr.clone()).build(),
            };
            let id = opts.connection_id();
            let sp = &mut self.static_peers[i];
            sp.dialing = Some(id);
            let delay = sp.backoff.next_delay(rand::random());
            sp.next_dial = now + delay;
            if let Err(error) = self.swarm.dial(opts) {
                debug!(addr = %self.static_peers[i].addr, %error, "dial failed at once");
                self.static_peers[i].dialing = None;
            }
        }
        self.pump_blobs();
        if now.duration_since(self.last_resync) >= self.resync_interval {
            self.last_resync = now;
            self.resync_all();
        }
        self.use_anchors();
    }

    fn resync_all(&mut self) {
        let peers: Vec<(PeerId, DeviceId)> = self.connected.iter().map(|(p, c)| (*p, c.device)).collect();
        for (peer, device) in peers {
            self.start_sync(peer, device);
        }
    }

    /// Sends our policy, then our offer, to a peer (from a task: the core
    /// answers asynchronously). The policy goes first: it decides what the rest
    /// may do.
    fn start_sync(&mut self, peer: PeerId, device: DeviceId) {
        let core = self.core.clone();
        let cert = Box::new(self.keys.cert());
        let out = self.internal_tx.clone();
        self.spawn(async move {
            if let Ok(Some(frame)) = core.policy_frame().await {
                let _ = out
                    .send(Internal::Send {
                        peer,
                        request: Request::Policy(Box::new(frame)),
                    })
                    .await;
            }
            if let Ok(spaces) = core.make_offer(device).await {
                let _ = out
                    .send(Internal::Send {
                        peer,
                        request: Request::Offer { cert, spaces },
                    })
                    .await;
            }
            pull_bodies(&core, &out, peer, device).await;
            // A device of this user: the reminders fired lately, so it does
            // not fire them again.
            if let Ok(claims) = core.claims_for(device).await
                && !claims.is_empty()
            {
                let request = Request::Claims(claims);
                let _ = out.send(Internal::Send { peer, request }).await;
            }
        });
    }

    fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        if self.tasks.len() >= MAX_TASKS {
            warn!("sync task limit reached; dropping work (the next offer repairs it)");
            return false;
        }
        self.tasks.spawn(task);
        true
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                // What anchors register for this node: its direct addresses (the
                // relay client confirms relayed ones itself).
                if is_direct(&address) {
                    self.swarm.add_external_address(address.clone());
                }
                self.listen.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.swarm.remove_external_address(&address);
                self.listen.retain(|a| a != &address);
            }
            SwarmEvent::ListenerClosed { listener_id, .. } => {
                // Listened again through the anchor later, while connected (a
                // refused reservation closes the listener: no retry storm).
                for link in self.anchors.values_mut().filter(|l| l.listener == Some(listener_id)) {
                    link.listener = None;
                    link.listen_after = Instant::now() + anchor::REGISTER_RETRY;
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } => {
                for sp in &mut self.static_peers {
                    if sp.dialing == Some(connection_id) {
                        sp.dialing = None;
                        sp.peer = Some(peer_id);
                        sp.backoff.reset();
                    }
                }
                let Some(device) = device_of(&peer_id) else {
                    warn!(peer = %peer_id, "peer identity is not an ed25519 device key; disconnecting");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                };
                if self.revoked.contains(&device) {
                    warn!(peer = %device.fmt_short(), "refused a session with a device the org revoked");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let link = Connected::new(device, &endpoint);
                if let Some(c) = self.connected.get_mut(&peer_id) {
                    // A direct link beside a relayed one (hole punching worked):
                    // the session is reported as direct.
                    if c.relayed && !link.relayed {
                        info!(peer = %device.fmt_short(), address = %link.address, "a direct link replaces the relayed one");
                        *c = Connected {
                            since_ms: c.since_ms,
                            ..link
                        };
                    }
                } else {
                    info!(peer = %device.fmt_short(), address = %link.address, relayed = link.relayed, "connected");
                    self.connected.insert(peer_id, link);
                    self.start_sync(peer_id, device);
                    self.hand_over_enrolls(peer_id, device);
                    self.pump_blobs();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if let Some(c) = self.connected.remove(&peer_id) {
                    info!(peer = %c.device.fmt_short(), "disconnected");
                }
                self.anchor_candidates.remove(&peer_id);
                if let Some(listener) = self.anchors.remove(&peer_id).and_then(|l| l.listener) {
                    self.swarm.remove_listener(listener);
                }
                self.policy_seen.remove(&peer_id);
                // Unsent envelopes are pulled again after the reconnect.
                self.outboxes.remove(&peer_id);
                self.pushes.retain(|_, p| *p != peer_id);
                let now = Instant::now();
                for sp in &mut self.static_peers {
                    if sp.peer == Some(peer_id) {
                        sp.next_dial = now + sp.backoff.next_delay(rand::random());
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id, error, ..
            } => {
                for sp in &mut self.static_peers {
                    if sp.dialing == Some(connection_id) {
                        debug!(addr = %sp.addr, %error, "dial failed; will retry");
                        sp.dialing = None;
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.mdns_peers.insert(peer);
                    if !self.connected.contains_key(&peer) && peer != *self.swarm.local_peer_id() {
                        let _ = self.swarm.dial(DialOpts::peer_id(peer).addresses(vec![addr]).build());
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.handle_sync_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Blob(event)) => self.handle_blob_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                self.identified(peer_id, &info)
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal: false,
                ..
            })) => {
                info!(anchor = %relay_peer_id, "reachable through the anchor's relay");
                // A new (relayed) address: register it.
                if let Some(link) = self.anchors.get_mut(&relay_peer_id) {
                    link.registered = None;
                }
                self.use_anchors();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rendezvous(event)) => match event {
                rendezvous::client::Event::Registered {
                    rendezvous_node,
                    ttl,
                    namespace,
                } => {
                    debug!(anchor = %rendezvous_node, %namespace, "registered at the anchor");
                    if let Some(link) = self.anchors.get_mut(&rendezvous_node) {
                        link.registered(namespace, ttl, Instant::now());
                    }
                }
                rendezvous::client::Event::RegisterFailed {
                    rendezvous_node, error, ..
                } => warn!(anchor = %rendezvous_node, ?error, "the anchor refused this node's registration"),
                rendezvous::client::Event::Discovered {
                    rendezvous_node,
                    registrations,
                    cookie,
                } => self.discovered(rendezvous_node, registrations, cookie),
                rendezvous::client::Event::DiscoverFailed {
                    rendezvous_node, error, ..
                } => debug!(anchor = %rendezvous_node, ?error, "discovery at the anchor failed"),
                rendezvous::client::Event::Expired { .. } => {}
            },
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(event)) => {
                debug!(peer = %event.remote_peer_id, result = ?event.result.map(|_| ()), "hole punching");
            }
            _ => {}
        }
    }

    fn handle_sync_event(&mut self, event: request_response::Event<codec::Inbound, Response>) {
        use request_response::{Event, Message};
        match event {
            Event::Message { peer, message, .. } => {
                let resume = match &message {
                    Message::Response { request_id, .. } => self.push_done(*request_id),
                    Message::Request { .. } => false,
                };
                let Some(device) = self.connected.get(&peer).map(|c| c.device) else {
                    return;
                };
                let core = self.core.clone();
                let out = self.internal_tx.clone();
                let cert = Box::new(self.keys.cert());
                match message {
                    Message::Request {
                        request: Err(error), ..
                    } => {
                        // Dropping the channel closes the stream without an answer.
                        warn!(%peer, device = %device.fmt_short(), %error, "refused a sync frame from peer");
                    }
                    Message::Request {
                        request:
                            Ok(Request::Offer {
                                cert: their_cert,
                                spaces,
                            }),
                        channel,
                        ..
                    } => {
                        self.spawn(async move {
                            if their_cert.device == device {
                                core.learn_cert(*their_cert).await;
                            }
                            let Ok(outcome) = core.take_offer(device, spaces).await else {
                                return;
                            };
                            let _ = out
                                .send(Internal::Respond {
                                    channel,
                                    response: Response::Offer {
                                        spaces: outcome.response,
                                    },
                                })
                                .await;
                            push_frames(&out, peer, outcome.push, outcome.more).await;
                        });
                    }
                    Message::Request {
                        request: Ok(Request::Bodies { space, ids }),
                        channel,
                        ..
                    } => {
                        self.spawn(async move {
                            let (envelopes, more) = core.sides_for(device, space, ids).await.unwrap_or_default();
                            let _ = out
                                .send(Internal::Respond {
                                    channel,
                                    response: Response::Sides { space, envelopes, more },
                                })
                                .await;
                        });
                    }
                    Message::Response {
                        response: Response::Sides { space, envelopes, more },
                        ..
                    } => {
                        // An empty answer: the peer has none of them; they are
                        // asked for again later (maybe of another peer).
                        if !envelopes.is_empty() {
                            self.spawn(async move {
                                if core.ingest(device, envelopes).await.is_ok() {
                                    if more {
                                        core.ask_again(space).await;
                                    }
                                    pull_bodies(&core, &out, peer, device).await;
                                }
                            });
                        }
                    }
                    // The codec rebuilds packed frames into `Envelopes`.
                    Message::Request {
                        request: Ok(Request::Packed { .. }),
                        ..
                    } => {}
                    Message::Request {
                        request: Ok(Request::Claims(claims)),
                        channel,
                        ..
                    } => {
                        self.spawn(async move {
                            core.take_claims(device, claims).await;
                            let _ = out
                                .send(Internal::Respond {
                                    channel,
                                    response: Response::Ack(Ack::default()),
                                })
                                .await;
                        });
                    }
                    Message::Request {
                        request: Ok(Request::Join(request)),
                        channel,
                        ..
                    } => {
                        self.spawn(async move {
                            let outcome = core.join_request(device, *request).await;
                            let _ = out
                                .send(Internal::Respond {
                                    channel,
                                    response: Response::Joined(Box::new(outcome)),
                                })
                                .await;
                        });
                    }
                    Message::Request {
                        request: Ok(Request::Policy(frame)),
                        channel,
                        ..
                    } => {
                        self.spawn(async move {
                            let answer = core.take_policy(device, *frame).await.ok().flatten();
                            let _ = out
                                .send(Internal::Respond {
                                    channel,
                                    response: Response::Policy(answer.map(Box::new)),
                                })
                                .await;
                        });
                    }
                    Message::Response {
                        response: Response::Policy(Some(frame)),
                        ..
                    } => {
                        // Send what the peer still lacks, unless it did not advance
                        // since the last answer (it refuses what we have: a fork).
                        let advanced = self
                            .policy_seen
                            .insert(peer, frame.have)
                            .is_none_or(|before| before < frame.have);
                        self.spawn(async move {
                            let Ok(Some(answer)) = core.take_policy(device, *frame).await else {
                                return;
                            };
                            if advanced && !answer.versions.is_empty() {
                                let request = Request::Policy(Box::new(answer));
                                let _ = out.send(Internal::Send { peer, request }).await;
                            }
                        });
                    }
                    Message::Response {
                        response: Response::Policy(None),
                        ..
                    } => {}
                    Message::Request {
                        request: Ok(Request::Enroll(request)),
                        channel,
                        ..
                    } if self.serving_anchor && request.admin != self.me => {
                        let admin = self
                            .connected
                            .iter()
                            .find(|(_, c)| c.device == request.admin)
                            .map(|(p, _)| *p);
                        self.spawn(async move {
                            let outcome = core
                                .hold_enroll(device, (*request).clone())
                                .await
                                .unwrap_or_else(|e| EnrollOutcome::Refused(e.to_string()));
                            let held = matches!(outcome, EnrollOutcome::Queued { .. });
                            let response = Response::Enrolled(Box::new(outcome));
                            let _ = out.send(Internal::Respond { channel, response }).await;
                            // The admin device is here after all: hand this one over now.
                            if let (true, Some(peer)) = (held, admin) {
                                let request = Request::EnrollRelayed(request);
                                let _ = out.send(Internal::Send { peer, request }).await;
                            }
                        });
                    }
                    Message::Request {
                        request: Ok(request @ (Request::Enroll(_) | Request::EnrollRelayed(_))),
                        channel,
                        ..
                    } => {
                        // A relayed request speaks for the device its certificate
                        // names (the proof binds the ticket's secret to that
                        // device); a direct one must come from that device.
                        let (device, request) = match request {
                            Request::EnrollRelayed(r) => (r.cert.device, r),
                            Request::Enroll(r) => (device, r),
                            _ => unreachable!("matched above"),
                        };
                        self.spawn(async move {
                            // A passing failure here (storage, shutting down) goes
                            // unanswered: the device (or the anchor holding its
                            // request) asks again, rather than hear a refusal.
                            let Ok(outcome) = core.take_enroll(device, *request).await else {
                                return;
                            };
                            let _ = out
                                .send(Internal::Respond {
                                    channel,
                                    response: Response::Enrolled(Box::new(outcome)),
                                })
                                .await;
                        });
                    }
                    Message::Response {
                        request_id,
                        response: Response::Enrolled(outcome),
                    } => match self.enrolls.remove(&request_id) {
                        Some(enrolling) => {
                            let _ = enrolling.reply.send(*outcome);
                        }
                        None => {
                            if let Some((requester, proof)) = self.relayed.remove(&request_id) {
                                info!(admin = %device.fmt_short(), device = %requester.fmt_short(), ?outcome, "an admin device answered a held enrollment request");
                                self.spawn(async move { core.release_held(requester, proof).await });
                            }
                        }
                    },
                    Message::Response {
                        request_id,
                        response: Response::Joined(outcome),
                    } => {
                        if let Some(reply) = self.joins.remove(&request_id) {
                            let _ = reply.send(*outcome);
                        }
                    }
                    Message::Request {
                        request: Ok(Request::Envelopes { envelopes }),
                        channel,
                        ..
                    } => {
                        self.spawn(async move {
                            let Ok(ack) = core.ingest(device, envelopes).await else {
                                return;
                            };
                            let needs_resync = ack.pending > 0;
                            let stored = ack.stored > 0;
                            let _ = out
                                .send(Internal::Respond {
                                    channel,
                                    response: Response::Ack(ack),
                                })
                                .await;
                            // Messages whose bodies did not come with them (a snapshot).
                            if stored {
                                pull_bodies(&core, &out, peer, device).await;
                            }
                            if needs_resync {
                                // Parents are missing: ask for everything we lack.
                                if let Ok(spaces) = core.make_offer(device).await {
                                    let _ = out
                                        .send(Internal::Send {
                                            peer,
                                            request: Request::Offer { cert, spaces },
                                        })
                                        .await;
                                }
                            }
                        });
                    }
                    Message::Response {
                        response: Response::Offer { spaces },
                        ..
                    } => {
                        // The peer pulls what it lacks with its own offer; its answer
                        // to ours only tells what it holds.
                        self.spawn(async move { core.note_peer_holds(device, spaces).await });
                    }
                    Message::Response {
                        response: Response::Ack(ack),
                        ..
                    } => {
                        if ack.rejected > 0 {
                            warn!(peer = %device.fmt_short(), rejected = ack.rejected, "peer rejected envelopes we sent");
                        }
                        self.spawn(async move {
                            core.note_peer_holds(device, ack.vv).await;
                            // The peer has everything of the last part: send the next.
                            if resume && let Ok(outcome) = core.catch_up(device).await {
                                push_frames(&out, peer, outcome.push, outcome.more).await;
                            }
                        });
                    }
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                let device = device_of(&peer).map(|d| d.fmt_short()).unwrap_or_default();
                debug!(%peer, %device, %error, "inbound sync request failed");
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.joins.remove(&request_id) {
                    let _ = reply.send(JoinOutcome::Refused(format!(
                        "could not reach the other device: {error}"
                    )));
                    return;
                }
                if let Some(enrolling) = self.enrolls.remove(&request_id) {
                    self.enroll_failed(enrolling, error.to_string());
                    return;
                }
                // A held request stays held: handed over again at the next connection.
                if self.relayed.remove(&request_id).is_some() {
                    return;
                }
                // A failed part of a catch-up is served again from what the peer
                // acknowledged, once nothing else is in flight.
                if self.push_done(request_id) {
                    self.resume_catch_up(peer);
                }
                let device = device_of(&peer).map(|d| d.fmt_short()).unwrap_or_default();
                debug!(%peer, %device, %error, "sync request failed (the next offer repairs it)");
            }
            Event::ResponseSent { .. } => {}
        }
    }
}

/// Asks `peer` for the chat bodies this node lacks in spaces it may serve.
async fn pull_bodies(core: &CoreHandle, out: &mpsc::Sender<Internal>, peer: PeerId, device: DeviceId) {
    if let Ok(wanted) = core.wanted_for(device).await {
        for (space, ids) in wanted {
            let request = Request::Bodies { space, ids };
            let _ = out.send(Internal::Send { peer, request }).await;
        }
    }
}

async fn push_frames(out: &mpsc::Sender<Internal>, peer: PeerId, envelopes: Vec<Vec<u8>>, more: bool) {
    if !envelopes.is_empty() {
        let _ = out.send(Internal::Push { peer, envelopes, more }).await;
    }
}

/// A frame of envelopes with their shared header fields factored out. The bytes
/// are this node's own store's (verified when stored), so parsing cannot fail;
/// if it somehow did, the frame goes out unpacked.
fn packed(frame: Vec<Vec<u8>>) -> Request {
    let parsed: Result<Vec<Envelope>, _> = frame.iter().cloned().map(Envelope::decode_stored).collect();
    match parsed {
        Ok(envelopes) => Request::Packed {
            groups: sync::pack(&envelopes),
        },
        Err(_) => Request::Envelopes { envelopes: frame },
    }
}

/// The peer id named by a multiaddr's `/p2p/…` suffix.
fn peer_in(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// An address others can dial straight: not relayed, not a wildcard.
fn is_direct(addr: &Multiaddr) -> bool {
    addr.iter().all(|p| match p {
        Protocol::P2pCircuit => false,
        Protocol::Ip4(ip) => !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_unspecified(),
        _ => true,
    })
}

fn link_kind(relayed: bool, lan: bool) -> &'static str {
    if relayed {
        "relayed"
    } else if lan {
        "lan"
    } else {
        "direct"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_coalesces_and_limits_pushes_in_flight() {
        let mut outbox = Outbox::default();
        assert!(outbox.enqueue((0..10).map(|_| vec![0u8; 100])));
        // Everything queued so far fits one frame.
        assert_eq!(outbox.next_frame().map(|f| f.len()), Some(10));
        assert_eq!(outbox.next_frame(), None, "nothing left to send");
        for _ in 0..MAX_PUSHES_IN_FLIGHT + 2 {
            assert!(outbox.enqueue([vec![1u8; sync::TARGET_FRAME_BYTES]]));
        }
        let mut sent = 1;
        while outbox.next_frame().is_some() {
            sent += 1;
        }
        assert_eq!(sent, MAX_PUSHES_IN_FLIGHT, "no more than the in-flight cap at once");
        outbox.in_flight -= 1;
        assert!(outbox.next_frame().is_some(), "a finished push frees a slot");
    }

    #[test]
    fn a_partial_catch_up_resumes_once_everything_is_acknowledged() {
        let mut outbox = Outbox::default();
        assert!(outbox.enqueue([vec![0u8; 100], vec![1u8; 100]]));
        outbox.more = true;
        let frame = outbox.next_frame().unwrap();
        assert_eq!(frame.len(), 2);
        assert!(!outbox.take_resume(), "a frame is still in flight");
        outbox.in_flight -= 1;
        assert!(outbox.take_resume());
        assert!(!outbox.take_resume(), "once only");
    }

    #[test]
    fn outbox_gives_up_past_its_cap() {
        let mut outbox = Outbox::default();
        let big = vec![0u8; 1 << 20];
        for _ in 0..OUTBOX_BYTES_CAP >> 20 {
            assert!(outbox.enqueue([big.clone()]));
        }
        assert!(!outbox.enqueue([big]));
        assert_eq!((outbox.queue.len(), outbox.bytes), (0, 0));
        assert!(outbox.take_resume(), "nothing in flight: the catch-up restarts at once");
    }
}
