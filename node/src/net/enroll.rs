//! Enrollment over the network: a new device's request goes to the admin
//! device the ticket names, else to the ticket's anchors in turn; an anchor
//! hands the requests it holds (durably, in the core) to their admin device
//! when it connects.

use libp2p::PeerId;
use tokio::sync::oneshot;
use tracing::info;

use super::{Internal, NetActor, peer_in};
use crate::{
    ids::DeviceId,
    net::Multiaddr,
    org::enroll::{EnrollOutcome, EnrollRequest},
    sync::Request,
};

/// An enrollment under way from this device: who waits for the answer, and
/// the anchors still to try if this attempt cannot reach its peer.
pub(super) struct Enrolling {
    pub(super) reply: oneshot::Sender<EnrollOutcome>,
    pub(super) request: Box<EnrollRequest>,
    pub(super) fallbacks: Vec<Multiaddr>,
}

impl NetActor {
    pub(super) fn send_enroll(&mut self, peer: PeerId, enrolling: Enrolling) {
        let request = Request::Enroll(enrolling.request.clone());
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, Ok(request));
        self.enrolls.insert(id, enrolling);
    }

    /// An enrollment could not reach its peer: the next anchor the ticket
    /// names takes it, else the device hears why.
    pub(super) fn enroll_failed(&mut self, mut enrolling: Enrolling, error: String) {
        while let Some(addr) = enrolling.fallbacks.pop() {
            if let Some(anchor) = peer_in(&addr) {
                info!(%addr, "the admin's device is unreachable; asking the anchor to hold the request");
                self.swarm.add_peer_address(anchor, addr);
                self.send_enroll(anchor, enrolling);
                return;
            }
        }
        let _ = enrolling.reply.send(EnrollOutcome::Refused(format!(
            "could not reach the admin's device: {error}"
        )));
    }

    /// As an anchor: hands the requests held for `device` (an admin device
    /// that just connected) over to it; each stays held until it answers.
    pub(super) fn hand_over_enrolls(&mut self, peer: PeerId, device: DeviceId) {
        if !self.serving_anchor {
            return;
        }
        let core = self.core.clone();
        let out = self.internal_tx.clone();
        self.spawn(async move {
            for request in core.held_for(device).await.unwrap_or_default() {
                info!(admin = %device.fmt_short(), device = %request.cert.device.fmt_short(), "handing a held enrollment request to its admin device");
                let request = Request::EnrollRelayed(Box::new(request));
                let _ = out.send(Internal::Send { peer, request }).await;
            }
        });
    }
}
