//! Anchors: the relay and rendezvous half of the anchor role, and how every
//! node finds and uses anchors.
//!
//! A node started with `daemon --anchor` runs a circuit relay v2 server sized
//! for sync (libp2p's defaults end a circuit after 128 KiB or 2 minutes) and a
//! rendezvous server. Every other node recognises an anchor by the protocols it
//! announces (identify) once connected to it, then:
//!
//! 1. listens through it (`…/p2p/ANCHOR/p2p-circuit`), so peers that cannot
//!    dial it directly (NAT, a firewall, `--no-listen`) reach it relayed;
//! 2. registers its addresses, relayed ones included, under its org's
//!    namespace;
//! 3. discovers the others registered there and dials them (DCUtR then tries
//!    to turn a relayed link into a direct one).
//!
//! The anchor's storing and forwarding of ciphertext is not here: the org's
//! policy names it, and space owners name it a replicator (`core::org`).

use std::{
    collections::{BTreeSet, HashMap},
    num::NonZeroU32,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use libp2p::{
    Multiaddr, PeerId,
    core::transport::ListenerId,
    identify,
    multiaddr::Protocol,
    relay, rendezvous,
    swarm::dial_opts::{DialOpts, PeerCondition},
};
use tracing::{debug, info, warn};

use super::{DISCOVERED_DIAL_BUDGET, NetActor, device_of};
use crate::{ids::DeviceId, org::OrgId};

/// How long a registration lives at the anchor; renewed at half of it.
const REGISTRATION_TTL: rendezvous::Ttl = rendezvous::DEFAULT_TTL;
/// Registrations an anchor keeps: an org of 50,000 members with two devices
/// each, at a few hundred bytes per record.
const MAX_REGISTRATIONS: usize = 200_000;
/// How long before a registration sent without an answer is sent again, and
/// before listening through an anchor again after it refused or closed.
pub(super) const REGISTER_RETRY: Duration = Duration::from_secs(30);
/// Registrations asked for per discovery (a rendezvous message is at most
/// 1 MiB); the cookie pages through the rest at the next re-syncs.
pub(super) const DISCOVER_LIMIT: u64 = 1000;

/// The devices the org's policy admits, shared between the network actor and
/// the relay's limiters. `None` until a policy is known: then nobody is told
/// apart.
#[derive(Clone, Default)]
pub(super) struct Admitted(Arc<RwLock<Option<BTreeSet<DeviceId>>>>);

impl Admitted {
    pub(super) fn set(&self, admitted: Option<BTreeSet<DeviceId>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = admitted;
    }

    pub(super) fn admits(&self, peer: &PeerId) -> bool {
        let guard = self.0.read().unwrap_or_else(|e| e.into_inner());
        match (&*guard, device_of(peer)) {
            (None, _) => true,
            (Some(set), Some(device)) => set.contains(&device),
            (Some(_), None) => false,
        }
    }
}

/// The relay server's limits. Org devices get circuits that last (a day, no
/// byte cap: history sync and snapshots go through them) and may open them as
/// often as they need; others get libp2p's default rate limits. Only devices
/// the policy admits may reserve a slot, that is be reachable through the anchor.
pub(super) fn relay_config(admitted: &Admitted) -> relay::Config {
    let defaults = relay::Config::default();
    let circuit_src_rate_limiters = defaults
        .circuit_src_rate_limiters
        .into_iter()
        .map(|mut inner| {
            let admitted = admitted.clone();
            Box::new(move |peer: PeerId, addr: &Multiaddr, now| {
                admitted.admits(&peer) || inner.try_next(peer, addr, now)
            }) as Box<dyn relay::RateLimiter>
        })
        .collect();
    let reserve = admitted.clone();
    relay::Config {
        max_reservations: 16_384,
        max_reservations_per_peer: 4,
        reservation_duration: Duration::from_secs(3600),
        reservation_rate_limiters: vec![Box::new(move |peer: PeerId, _: &Multiaddr, _| reserve.admits(&peer))],
        max_circuits: 4096,
        max_circuits_per_peer: 64,
        max_circuit_duration: Duration::from_secs(24 * 3600),
        // 0: no byte cap.
        max_circuit_bytes: 0,
        circuit_src_rate_limiters,
    }
    .reservation_rate_per_ip(NonZeroU32::new(600).expect("non-zero"), Duration::from_secs(60))
}

pub(super) fn rendezvous_config() -> rendezvous::server::Config {
    rendezvous::server::Config::default()
        .with_max_registration_total(MAX_REGISTRATIONS)
        .with_max_registration_per_peer(4)
}

/// The rendezvous namespace of an org (or of nodes that follow none).
pub(super) fn namespace(org: Option<OrgId>) -> rendezvous::Namespace {
    let name = match org {
        Some(org) => format!("outpost/org/{org}"),
        None => "outpost".into(),
    };
    rendezvous::Namespace::new(name).expect("well under 255 bytes")
}

/// Whether a peer serves as an anchor: it announces the relay's hop protocol
/// and rendezvous.
pub(super) fn is_anchor(info: &identify::Info) -> bool {
    info.protocols.contains(&relay::HOP_PROTOCOL_NAME) && info.protocols.contains(&rendezvous::PROTOCOL_NAME)
}

/// One anchor this node uses.
pub(super) struct AnchorLink {
    /// The address this node dialled it at.
    pub(super) addr: Multiaddr,
    /// The listener through its relay.
    pub(super) listener: Option<ListenerId>,
    /// Not before: a reservation refused or a circuit listener closed.
    pub(super) listen_after: Instant,
    /// Registered under this namespace, renewed after this instant.
    pub(super) registered: Option<(rendezvous::Namespace, Instant)>,
    pub(super) cookie: Option<rendezvous::Cookie>,
    pub(super) next_discover: Instant,
}

// A node asks each anchor who else is registered at every re-sync (deltas, by
// cookie): discovery is anti-entropy like the rest.

impl AnchorLink {
    pub(super) fn new(addr: Multiaddr) -> Self {
        Self {
            addr,
            listener: None,
            listen_after: Instant::now(),
            registered: None,
            cookie: None,
            next_discover: Instant::now(),
        }
    }

    /// Where to dial this anchor, naming its peer id.
    pub(super) fn dialable(&self, anchor: PeerId) -> Multiaddr {
        let mut addr = self.addr.clone();
        if !addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
            addr.push(Protocol::P2p(anchor));
        }
        addr
    }

    /// The relayed address to listen on through this anchor.
    pub(super) fn circuit(&self, anchor: PeerId) -> Multiaddr {
        self.dialable(anchor).with(Protocol::P2pCircuit)
    }

    /// Whether the registration under `namespace` is missing or due for renewal.
    pub(super) fn must_register(&self, namespace: &rendezvous::Namespace, now: Instant) -> bool {
        match &self.registered {
            Some((ns, renew_at)) => ns != namespace || now >= *renew_at,
            None => true,
        }
    }

    pub(super) fn registered(&mut self, namespace: rendezvous::Namespace, ttl: rendezvous::Ttl, now: Instant) {
        self.registered = Some((namespace, now + Duration::from_secs(ttl / 2)));
    }
}

/// The TTL this node asks for.
pub(super) fn ttl() -> Option<rendezvous::Ttl> {
    Some(REGISTRATION_TTL)
}

/// The anchors in use, by peer.
pub(super) type Anchors = HashMap<PeerId, AnchorLink>;

/// How the network actor finds and uses anchors.
impl NetActor {
    /// Whether `peer` may serve this node as an anchor: one the org's policy
    /// names, or any without a policy.
    pub(super) fn is_org_anchor(&self, peer: &PeerId) -> bool {
        match (&self.policy_anchors, device_of(peer)) {
            (None, _) => true,
            (Some(named), Some(device)) => named.contains(&device),
            (Some(_), None) => false,
        }
    }

    /// A connected peer announced itself: if it serves as an anchor, note it
    /// and use it if the org's policy names it.
    pub(super) fn identified(&mut self, peer: PeerId, info: &identify::Info) {
        if !is_anchor(info) || self.serving_anchor {
            return;
        }
        // Only an address this node dialled is known to reach it.
        if !self.connected.get(&peer).is_some_and(|c| c.dialed) {
            debug!(%peer, "an anchor dialled in; it is used once this node dials it");
            return;
        }
        self.anchor_candidates.insert(peer);
        self.adopt_anchor(peer);
        self.use_anchors();
    }

    /// Uses a connected peer serving as an anchor, if allowed and not yet used.
    pub(super) fn adopt_anchor(&mut self, peer: PeerId) {
        if self.anchors.contains_key(&peer) {
            return;
        }
        if !self.is_org_anchor(&peer) {
            debug!(%peer, "a peer serves as an anchor, but the org's policy does not name it");
            return;
        }
        let Some(c) = self.connected.get(&peer) else {
            return;
        };
        info!(anchor = %c.device.fmt_short(), address = %c.address, "using an anchor for relay and rendezvous");
        self.anchors.insert(peer, AnchorLink::new(c.address.clone()));
    }

    /// For each anchor: listen through its relay, register this node's
    /// addresses, and discover the org's other nodes, each when due.
    pub(super) fn use_anchors(&mut self) {
        let now = Instant::now();
        let has_addresses = self.swarm.external_addresses().next().is_some();
        let peers: Vec<PeerId> = self.anchors.keys().copied().collect();
        for peer in peers {
            let Some(link) = self.anchors.get_mut(&peer) else {
                continue;
            };
            let circuit = link.circuit(peer);
            let listen = link.listener.is_none() && now >= link.listen_after;
            let register = has_addresses && link.must_register(&self.namespace, now);
            let discover = (now >= link.next_discover).then(|| link.cookie.clone());
            if register {
                // Until the answer comes: not again for a while.
                link.registered = Some((self.namespace.clone(), now + REGISTER_RETRY));
            }
            if discover.is_some() {
                link.next_discover = now + self.resync_interval;
            }
            if listen {
                match self.swarm.listen_on(circuit.clone()) {
                    Ok(id) => {
                        if let Some(link) = self.anchors.get_mut(&peer) {
                            link.listener = Some(id);
                        }
                    }
                    Err(error) => warn!(address = %circuit, %error, "cannot listen through the anchor"),
                }
            }
            let rendezvous = &mut self.swarm.behaviour_mut().rendezvous;
            if register && let Err(error) = rendezvous.register(self.namespace.clone(), peer, ttl()) {
                debug!(%peer, %error, "cannot register at the anchor yet");
            }
            if let Some(cookie) = discover {
                rendezvous.discover(Some(self.namespace.clone()), cookie, Some(DISCOVER_LIMIT), peer);
            }
        }
    }

    /// Dials the nodes an anchor knows, within the connection budget.
    pub(super) fn discovered(
        &mut self,
        anchor: PeerId,
        registrations: Vec<rendezvous::Registration>,
        cookie: rendezvous::Cookie,
    ) {
        // An anchor the policy stopped naming: what it knows is not dialled.
        if !self.anchors.contains_key(&anchor) {
            return;
        }
        if let Some(link) = self.anchors.get_mut(&anchor) {
            link.cookie = Some(cookie);
        }
        let me = *self.swarm.local_peer_id();
        let pending = self.swarm.network_info().connection_counters().num_pending_outgoing() as usize;
        let mut budget = DISCOVERED_DIAL_BUDGET.saturating_sub(self.connected.len() + pending);
        for r in registrations {
            let peer = r.record.peer_id();
            // Only devices the org admits (its policy's), never a revoked one.
            let revoked = device_of(&peer).is_none_or(|d| self.revoked.contains(&d));
            if peer == me || revoked || !self.admitted.admits(&peer) || self.connected.contains_key(&peer) {
                continue;
            }
            if budget == 0 {
                debug!("enough connections; not dialling more nodes found at the anchor");
                break;
            }
            budget -= 1;
            debug!(%peer, "dialling a node found at the anchor");
            let opts = DialOpts::peer_id(peer)
                .addresses(r.record.addresses().to_vec())
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            let _ = self.swarm.dial(opts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_of(device: &DeviceId) -> PeerId {
        let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(&device.0).unwrap();
        libp2p::identity::PublicKey::from(key).to_peer_id()
    }

    #[test]
    fn admitted_devices_pass_and_others_do_not_once_a_policy_is_known() {
        let member = crate::identity::DeviceKeys::generate().device_id();
        let stranger = crate::identity::DeviceKeys::generate().device_id();
        let admitted = Admitted::default();
        assert!(admitted.admits(&peer_of(&stranger)), "no policy: nobody is told apart");
        admitted.set(Some([member].into()));
        assert!(admitted.admits(&peer_of(&member)));
        assert!(!admitted.admits(&peer_of(&stranger)));
        assert!(!admitted.admits(&PeerId::random()), "not an ed25519 device key");
    }

    #[test]
    fn only_admitted_devices_reserve_and_they_open_circuits_without_a_rate_limit() {
        let member = peer_of(&crate::identity::DeviceKeys::generate().device_id());
        let stranger = peer_of(&crate::identity::DeviceKeys::generate().device_id());
        let admitted = Admitted::default();
        admitted.set(Some([device_of(&member).unwrap()].into()));
        let mut config = relay_config(&admitted);
        let addr: Multiaddr = "/ip4/10.0.0.1/tcp/1".parse().unwrap();
        let now = Instant::now();
        let reserve = |c: &mut relay::Config, p| {
            c.reservation_rate_limiters
                .iter_mut()
                .all(|l| l.try_next(p, &addr, now))
        };
        assert!(reserve(&mut config, member));
        assert!(!reserve(&mut config, stranger));
        let circuit = |c: &mut relay::Config, p| {
            c.circuit_src_rate_limiters
                .iter_mut()
                .all(|l| l.try_next(p, &addr, now))
        };
        for _ in 0..100 {
            assert!(circuit(&mut config, member));
        }
        // A stranger gets libp2p's default burst, then is held back.
        let allowed = (0..100).filter(|_| circuit(&mut config, stranger)).count();
        assert!(allowed < 100, "a stranger opened {allowed} circuits at once");
        assert_eq!(config.max_circuit_bytes, 0, "no byte cap on circuits");
    }

    #[test]
    fn namespaces_differ_per_org() {
        let a = OrgId([1; 16]);
        let b = OrgId([2; 16]);
        assert_ne!(namespace(Some(a)), namespace(Some(b)));
        assert_ne!(namespace(Some(a)), namespace(None));
    }
}
