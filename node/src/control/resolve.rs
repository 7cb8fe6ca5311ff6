//! Resolution: the members, roles and epoch a control log defines at heads H.
//!
//! A pure function of the causal past P of H (each operation in P passed
//! [`SpaceState::check`] at its own causal point):
//!
//! 1. **Strong remove.** A *removal* is a `Remove`, or a `SetRole` that lowered
//!    its target's role. An operation whose author is the target of a removal
//!    concurrent with it (neither in the other's past) is *void*. Removals that
//!    void each other in a cycle (A removes B while B removes A, or longer) are
//!    exempt from each other: they all take effect. Among removals the voiding
//!    relation is decided over the strongly connected components of "r1 would
//!    void r2", sources first, so it is well founded.
//! 2. **Cascade.** Walking P in canonical topological order (depth, id), an
//!    operation takes effect iff it is not void and its author's standing at its
//!    causal point, counting only operations that took effect, allows it. So an
//!    add by a concurrently removed admin is void, and what the added device did
//!    loses its effect too. A removal that thereby loses its effect no longer
//!    voids anything; resolution repeats without it until nothing changes (at
//!    most once per removal).
//! 3. **Standing.** A device's standing is decided by the operations that took
//!    effect and name it, keeping those not followed by another (the frontier):
//!    any removal in the frontier wins over a concurrent add or role change; a
//!    replicator naming wins over a member add (it reads nothing); concurrent
//!    roles keep the lowest.
//! 4. **Epoch.** The rotations that took effect and are not followed by another:
//!    one gives the epoch; several give their merge. Who can derive an epoch's key
//!    is physical, not a matter of effect: every wrap in P counts, void or not,
//!    and a holder of a newer epoch holds what it links. The *tips* are the epochs
//!    no other links to; the next rotation links them all, so content sealed
//!    under a void rotation's epoch stays readable to every later member.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{ControlOp, Member, Posting, Role, state::Applied};
use crate::{
    crypto::EpochKey,
    ids::{DeviceId, EnvelopeId, EpochId, SpaceId, derive16},
};

const MERGED_ID_CONTEXT: &str = "outpost/epoch-merge-id/v1";

/// A device's place in a space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Member(Box<Member>),
    Replicator,
}

/// An epoch: one rotation's, or the merge of concurrent rotations (`parts`,
/// sorted, more than one), whose key derives from every part's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    pub id: EpochId,
    pub parts: Vec<EpochId>,
}

impl Epoch {
    fn of(space: &SpaceId, mut parts: Vec<EpochId>) -> Self {
        parts.sort();
        parts.dedup();
        let id = match parts.as_slice() {
            [one] => *one,
            _ => {
                let mut input = space.0.to_vec();
                for p in &parts {
                    input.extend_from_slice(&p.0);
                }
                EpochId(derive16(MERGED_ID_CONTEXT, &input))
            }
        };
        Self { id, parts }
    }

    pub fn is_merged(&self) -> bool {
        self.parts.len() > 1
    }
}

/// The state a control log defines at some heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub members: BTreeMap<DeviceId, Member>,
    pub replicators: BTreeSet<DeviceId>,
    pub epoch: Epoch,
    /// Devices that can derive the current epoch's key.
    pub holders: BTreeSet<DeviceId>,
    /// The epochs started in the causal past that no other epoch there links to
    /// (sorted). A rotation may link any of them; its author links every one it
    /// holds, so the newest key opens every epoch, including those of rotations
    /// that lost (void) or merged away.
    pub tips: Vec<EpochId>,
    /// The tips not in the causal past of the current epoch's rotations: no
    /// rotator has seen them yet (e.g. a void rotation concurrent with the
    /// current one). Once a rotation follows a tip, the tip is settled, linked or
    /// not (its author may not have been able to open it).
    pub open_tips: Vec<EpochId>,
    /// Operations in the causal past, the genesis included.
    pub(super) past_len: usize,
    /// Operations in the causal past by each author.
    pub(super) authored: BTreeMap<DeviceId, usize>,
    /// Operations in the causal past that have no effect here (strong remove).
    pub void: BTreeSet<EnvelopeId>,
    /// Every epoch started in the causal past.
    pub(super) epochs_seen: BTreeSet<EpochId>,
    /// Who may post: set by the genesis, then by the `SetPosting` operations
    /// that took effect and are not followed by another; concurrent ones that
    /// disagree give the stricter (`Admins`).
    pub posting: Posting,
}

impl Resolved {
    pub fn standing(&self, device: &DeviceId) -> Option<Standing> {
        match self.members.get(device) {
            Some(m) => Some(Standing::Member(Box::new(m.clone()))),
            None => self.replicators.contains(device).then_some(Standing::Replicator),
        }
    }

    /// Whether `device` may post content here: a writer or above, and an owner
    /// or admin in an announcement room.
    pub fn may_post(&self, device: &DeviceId) -> bool {
        let needed = match self.posting {
            Posting::Writers => Role::Writer,
            Posting::Admins => Role::Admin,
        };
        self.members.get(device).is_some_and(|m| m.role >= needed)
    }

    /// The state after `op`, whose parents are exactly the heads this state was
    /// resolved at (the common case: a log growing without concurrency). Such an
    /// operation is concurrent with nothing, so it voids nothing, nothing voids
    /// it, and it alone forms the frontier of every device it names: the same
    /// result as resolving again, in time proportional to the operation.
    pub(super) fn extended(&self, space: &SpaceId, author: &DeviceId, op: &ControlOp) -> Resolved {
        let mut next = self.clone();
        next.past_len += 1;
        *next.authored.entry(*author).or_default() += 1;
        for (device, entry) in entries(op) {
            match entry {
                Entry::Removed => {
                    next.members.remove(&device);
                    next.replicators.remove(&device);
                }
                Entry::Replicator => {
                    next.members.remove(&device);
                    next.replicators.insert(device);
                }
                Entry::Member(m) => {
                    next.replicators.remove(&device);
                    next.members.insert(device, m.clone());
                }
                Entry::Role(role) => {
                    if let Some(m) = next.members.get_mut(&device) {
                        m.role = role;
                    }
                }
            }
        }
        if let ControlOp::SetPosting(posting) = op {
            next.posting = *posting;
        }
        if let Some((commit, wraps, links)) = op.rotation() {
            let id = EpochKey::id_of(space, commit);
            next.epoch = Epoch { id, parts: vec![id] };
            next.holders = wraps.iter().map(|w| w.recipient).collect();
            if op.is_join() {
                // Every earlier epoch is in a join's causal past: none is a tip.
                next.tips.clear();
            }
            next.tips.retain(|t| !links.iter().any(|l| l.parent == *t));
            if let Err(at) = next.tips.binary_search(&id) {
                next.tips.insert(at, id);
            }
            next.open_tips = vec![id];
            next.epochs_seen.insert(id);
        } else {
            let current = next.epoch.id;
            next.holders.extend(
                op.key_wraps(space)
                    .into_iter()
                    .filter(|(epoch, _)| *epoch == current)
                    .map(|(_, w)| w.recipient),
            );
        }
        next
    }

    /// Whether exactly the member devices can derive the current epoch's key, and
    /// no tip is open besides the epoch's own parts. When not, a member rotates
    /// before anyone writes (see `core::members::make_epoch_clean`).
    pub fn is_clean(&self) -> bool {
        self.holders.len() == self.members.len()
            && self.members.keys().all(|d| self.holders.contains(d))
            && self.open_tips.iter().all(|t| self.epoch.parts.contains(t))
    }
}

/// Whether an author with `author` standing may make `op`; `member_of` gives
/// other devices' membership at the same causal point. Shared by validity and
/// resolution. A device acts for its user: it may add its user's other devices
/// (with at most its own role) and remove them (revocation).
pub(super) fn permits(
    author: Option<Standing>,
    author_id: &DeviceId,
    op: &ControlOp,
    member_of: impl Fn(&DeviceId) -> Option<Member>,
) -> bool {
    let (role, user) = match &author {
        Some(Standing::Member(m)) => (Some(m.role), Some(m.cert.user)),
        _ => (None, None),
    };
    let role_of = |d: &DeviceId| member_of(d).map(|m| m.role);
    let sibling = |d: &DeviceId| user.is_some() && member_of(d).map(|m| m.cert.user) == user;
    match op {
        ControlOp::Genesis(_) => false,
        ControlOp::Add(add) => match role {
            Some(Role::Owner) => true,
            Some(Role::Admin) if add.member.role <= Role::Admin => true,
            Some(own) => Some(add.member.cert.user) == user && add.member.role <= own,
            None => false,
        },
        ControlOp::AddReplicator(_) | ControlOp::SetPosting(_) => role >= Some(Role::Admin),
        // Anyone may leave, and remove their user's devices; owners remove
        // anyone; admins anyone but owners.
        ControlOp::Remove(remove) => remove.devices.iter().all(|d| {
            role == Some(Role::Owner)
                || (d == author_id && author.is_some())
                || (role == Some(Role::Admin) && role_of(d) < Some(Role::Owner))
                || sibling(d)
        }),
        ControlOp::SetRole(set) => {
            role == Some(Role::Owner)
                || (role == Some(Role::Admin) && set.role <= Role::Admin && role_of(&set.device) <= Some(Role::Admin))
        }
        // Key distribution is mechanical: any member may rotate.
        ControlOp::Rotate(_) => role.is_some(),
        // The org's authority, carried by any member, over a space an
        // offboarded member owns.
        ControlOp::Succession(s) => role.is_some() && s.leaving.iter().any(|d| role_of(d) == Some(Role::Owner)),
    }
}

/// What an operation says about one device.
#[derive(Clone, Copy)]
enum Entry<'a> {
    Member(&'a Member),
    Replicator,
    Removed,
    Role(Role),
}

/// The causal past of some heads, in canonical topological order, with ancestry.
struct Dag<'a> {
    ops: Vec<(EnvelopeId, &'a Applied)>,
    /// Row i holds bit j iff op j is in the causal past of op i.
    ancestors: Vec<u64>,
    words: usize,
    /// Op indices naming each device (ascending).
    by_target: HashMap<DeviceId, Vec<usize>>,
    /// Op indices by author (ascending).
    by_author: HashMap<DeviceId, Vec<usize>>,
}

impl<'a> Dag<'a> {
    fn new(log: &'a BTreeMap<EnvelopeId, Applied>, heads: &[EnvelopeId]) -> Option<Self> {
        let mut seen = HashSet::new();
        let mut stack = heads.to_vec();
        let mut ops = Vec::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let op = log.get(&id)?;
            stack.extend(op.parents.iter().copied());
            ops.push((id, op));
        }
        ops.sort_by_key(|(id, op)| (op.depth, *id));
        let index: HashMap<EnvelopeId, usize> = ops.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();
        let words = ops.len().div_ceil(64);
        let mut ancestors = vec![0u64; ops.len() * words];
        let mut by_target: HashMap<DeviceId, Vec<usize>> = HashMap::new();
        let mut by_author: HashMap<DeviceId, Vec<usize>> = HashMap::new();
        for (i, (_, op)) in ops.iter().enumerate() {
            // Parents are shallower, so their rows are complete.
            let (done, rest) = ancestors.split_at_mut(i * words);
            let row = &mut rest[..words];
            for p in &op.parents {
                let j = index[p];
                for (w, word) in row.iter_mut().enumerate() {
                    *word |= done[j * words + w];
                }
                row[j / 64] |= 1 << (j % 64);
            }
            for (device, _) in entries(&op.op) {
                by_target.entry(device).or_default().push(i);
            }
            by_author.entry(op.author).or_default().push(i);
        }
        Some(Self {
            ops,
            ancestors,
            words,
            by_target,
            by_author,
        })
    }

    /// Whether op `a` is in the causal past of op `b`.
    fn before(&self, a: usize, b: usize) -> bool {
        self.ancestors[b * self.words + a / 64] & (1 << (a % 64)) != 0
    }

    fn concurrent(&self, a: usize, b: usize) -> bool {
        a != b && !self.before(a, b) && !self.before(b, a)
    }

    fn op(&self, i: usize) -> &'a Applied {
        self.ops[i].1
    }

    /// `device`'s standing decided by the operations `counted` names.
    fn standing(&self, device: &DeviceId, counted: impl Fn(usize) -> bool) -> Option<Standing> {
        let set: Vec<usize> = self
            .by_target
            .get(device)?
            .iter()
            .copied()
            .filter(|&t| counted(t))
            .collect();
        let entry = |t: usize| {
            entries(&self.op(t).op)
                .find(|(d, _)| d == device)
                .map(|(_, e)| e)
                .expect("by_target indexes the operations naming the device")
        };
        // Followed by another of the set: not in the frontier. One pass over the
        // set's ancestor rows, so a device named by many operations stays cheap.
        let mut followed = vec![0u64; self.words];
        for &u in &set {
            let row = &self.ancestors[u * self.words..(u + 1) * self.words];
            for (w, word) in followed.iter_mut().zip(row) {
                *w |= word;
            }
        }
        let mut role: Option<Role> = None;
        let mut replicator = false;
        for &t in &set {
            if followed[t / 64] & (1 << (t % 64)) != 0 {
                continue;
            }
            match entry(t) {
                Entry::Removed => return None,
                Entry::Replicator => replicator = true,
                Entry::Member(m) => role = Some(role.map_or(m.role, |r| r.min(m.role))),
                Entry::Role(r) => role = Some(role.map_or(r, |held| held.min(r))),
            }
        }
        if replicator {
            return Some(Standing::Replicator);
        }
        let cert = set.iter().rev().find_map(|&t| match entry(t) {
            Entry::Member(m) => Some(m.cert),
            _ => None,
        })?;
        Some(Standing::Member(Box::new(Member { cert, role: role? })))
    }
}

/// What `op` says about each device it names.
fn entries(op: &ControlOp) -> Box<dyn Iterator<Item = (DeviceId, Entry<'_>)> + '_> {
    match op {
        ControlOp::Genesis(g) => Box::new(
            g.members
                .iter()
                .map(|m| (m.cert.device, Entry::Member(m)))
                .chain(g.replicators.iter().map(|d| (*d, Entry::Replicator))),
        ),
        ControlOp::Add(add) => Box::new(std::iter::once((add.member.cert.device, Entry::Member(&add.member)))),
        ControlOp::AddReplicator(d) => Box::new(std::iter::once((*d, Entry::Replicator))),
        ControlOp::Remove(r) => Box::new(r.devices.iter().map(|d| (*d, Entry::Removed))),
        ControlOp::SetRole(s) => Box::new(std::iter::once((s.device, Entry::Role(s.role)))),
        ControlOp::Rotate(_) | ControlOp::SetPosting(_) => Box::new(std::iter::empty()),
        ControlOp::Succession(s) => Box::new(
            s.leaving
                .iter()
                .map(|d| (*d, Entry::Removed))
                .chain(s.successors.iter().map(|m| (m.cert.device, Entry::Member(m)))),
        ),
    }
}

/// The devices a removal takes authority from.
fn removed_by(op: &ControlOp) -> &[DeviceId] {
    match op {
        ControlOp::Remove(r) => &r.devices,
        ControlOp::Succession(s) => &s.leaving,
        ControlOp::SetRole(s) => std::slice::from_ref(&s.device),
        _ => &[],
    }
}

/// The state the operations `log` of `space` define at `heads`; `None` when a
/// head is unknown.
pub(super) fn resolve(space: &SpaceId, log: &BTreeMap<EnvelopeId, Applied>, heads: &[EnvelopeId]) -> Option<Resolved> {
    let dag = Dag::new(log, heads)?;
    let n = dag.ops.len();
    let mut active: Vec<usize> = (0..n).filter(|&i| dag.op(i).op.is_removal(dag.op(i).demotes)).collect();
    let (void, effective) = loop {
        let void = voids(&dag, &active);
        let effective = walk(&dag, &void);
        let kept: Vec<usize> = active.iter().copied().filter(|&r| effective[r] || void[r]).collect();
        if kept.len() == active.len() {
            break (void, effective);
        }
        active = kept;
    };
    debug_assert!(void.iter().zip(&effective).all(|(v, e)| !(*v && *e)));

    let mut members = BTreeMap::new();
    let mut replicators = BTreeSet::new();
    for device in dag.by_target.keys() {
        match dag.standing(device, |t| effective[t]) {
            Some(Standing::Member(m)) => {
                members.insert(*device, *m);
            }
            Some(Standing::Replicator) => {
                replicators.insert(*device);
            }
            None => {}
        }
    }
    let epoch_of = |i: usize| {
        dag.op(i)
            .op
            .rotation()
            .map(|(commit, _, _)| EpochKey::id_of(space, commit))
    };
    let rotations: Vec<usize> = (0..n).filter(|&i| effective[i] && epoch_of(i).is_some()).collect();
    let latest: Vec<usize> = rotations
        .iter()
        .copied()
        .filter(|&r| !rotations.iter().any(|&s| dag.before(r, s)))
        .collect();
    let epoch = Epoch::of(space, latest.iter().filter_map(|&r| epoch_of(r)).collect());
    let holders = holders(&dag, space, &epoch);
    // Epoch → the earlier epochs its key opens directly (its links).
    let mut links_of: HashMap<EpochId, Vec<EpochId>> = HashMap::new();
    for (_, op) in &dag.ops {
        if let Some((commit, _, links)) = op.op.rotation() {
            links_of
                .entry(EpochKey::id_of(space, commit))
                .or_default()
                .extend(links.iter().map(|l| l.parent));
        }
    }
    let linked: BTreeSet<EpochId> = links_of.values().flatten().copied().collect();
    let epochs_seen: BTreeSet<EpochId> = (0..n).filter_map(epoch_of).collect();
    let before_join = before_joins(&dag, epoch_of);
    let tips: Vec<EpochId> = epochs_seen
        .difference(&linked)
        .copied()
        .filter(|t| !opens_any(&links_of, *t, &before_join))
        .collect();
    let settled = |tip: &EpochId| {
        (0..n)
            .filter(|&o| epoch_of(o) == Some(*tip))
            .all(|o| latest.iter().any(|&r| dag.before(o, r)))
    };
    let open_tips = tips.iter().copied().filter(|t| !settled(t)).collect();
    let postings: Vec<(usize, Posting)> = (0..n)
        .filter(|&i| effective[i])
        .filter_map(|i| match &dag.op(i).op {
            ControlOp::Genesis(g) => Some((i, g.posting)),
            ControlOp::SetPosting(p) => Some((i, *p)),
            _ => None,
        })
        .collect();
    let posting = postings
        .iter()
        .filter(|(r, _)| !postings.iter().any(|(s, _)| dag.before(*r, *s)))
        .map(|(_, p)| *p)
        .max()
        .unwrap_or_default();
    Some(Resolved {
        members,
        replicators,
        epoch,
        holders,
        void: (1..n).filter(|&i| !effective[i]).map(|i| dag.ops[i].0).collect(),
        tips,
        open_tips,
        past_len: n,
        authored: dag.by_author.iter().map(|(d, ops)| (*d, ops.len())).collect(),
        epochs_seen,
        posting,
    })
}

/// The epochs started before a from-join `Add` of a new user (in its causal
/// past), void or not: what a newcomer must never be able to open.
fn before_joins(dag: &Dag, epoch_of: impl Fn(usize) -> Option<EpochId>) -> HashSet<EpochId> {
    let joins: Vec<usize> = (0..dag.ops.len()).filter(|&j| dag.op(j).op.is_join()).collect();
    (0..dag.ops.len())
        .filter(|&r| joins.iter().any(|&j| dag.before(r, j)))
        .filter_map(epoch_of)
        .collect()
}

/// Whether the key of `epoch` opens (itself, or through links, transitively)
/// any epoch of `set`.
fn opens_any(links_of: &HashMap<EpochId, Vec<EpochId>>, epoch: EpochId, set: &HashSet<EpochId>) -> bool {
    if set.is_empty() {
        return false;
    }
    let mut seen = HashSet::new();
    let mut stack = vec![epoch];
    while let Some(e) = stack.pop() {
        if set.contains(&e) {
            return true;
        }
        if seen.insert(e) {
            stack.extend(links_of.get(&e).into_iter().flatten().copied());
        }
    }
    false
}

/// Which operations are void (rule 1), given the removals still `active`.
fn voids(dag: &Dag, active: &[usize]) -> Vec<bool> {
    let m = active.len();
    let targets = |k: usize| removed_by(&dag.op(active[k]).op);
    // Edge k → l: removal k takes authority from the author of removal l, concurrently.
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); m];
    let mut into: Vec<Vec<usize>> = vec![Vec::new(); m];
    for k in 0..m {
        for l in 0..m {
            if targets(k).contains(&dag.op(active[l]).author) && dag.concurrent(active[k], active[l]) {
                out[k].push(l);
                into[l].push(k);
            }
        }
    }
    let component = components(&out, &into);
    // Components are numbered sources first, so every edge from another
    // component comes from one already decided.
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by_key(|&k| component[k]);
    let mut void_removal = vec![false; m];
    for k in order {
        void_removal[k] = into[k]
            .iter()
            .any(|&from| component[from] != component[k] && !void_removal[from]);
    }
    let position: HashMap<usize, usize> = active.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let mut void = vec![false; dag.ops.len()];
    for k in 0..m {
        if void_removal[k] {
            void[active[k]] = true;
            continue;
        }
        for device in targets(k) {
            for &i in dag.by_author.get(device).into_iter().flatten() {
                let same_cycle = position.get(&i).is_some_and(|&l| component[l] == component[k]);
                if dag.concurrent(active[k], i) && !same_cycle {
                    void[i] = true;
                }
            }
        }
    }
    void
}

/// Strongly connected components (Kosaraju, iterative), numbered in topological
/// order of the component graph: sources first.
fn components(out: &[Vec<usize>], into: &[Vec<usize>]) -> Vec<usize> {
    let m = out.len();
    let mut visited = vec![false; m];
    let mut finished = Vec::with_capacity(m);
    for start in 0..m {
        if visited[start] {
            continue;
        }
        visited[start] = true;
        let mut stack = vec![(start, 0usize)];
        while let Some((v, next)) = stack.last_mut() {
            if let Some(&w) = out[*v].get(*next) {
                *next += 1;
                if !visited[w] {
                    visited[w] = true;
                    stack.push((w, 0));
                }
            } else {
                finished.push(*v);
                stack.pop();
            }
        }
    }
    let mut component = vec![usize::MAX; m];
    let mut count = 0;
    for &start in finished.iter().rev() {
        if component[start] != usize::MAX {
            continue;
        }
        component[start] = count;
        let mut stack = vec![start];
        while let Some(v) = stack.pop() {
            for &w in &into[v] {
                if component[w] == usize::MAX {
                    component[w] = count;
                    stack.push(w);
                }
            }
        }
        count += 1;
    }
    component
}

/// Which operations take effect (rule 2): not void, and allowed by the author's
/// standing at its causal point among operations that took effect.
fn walk(dag: &Dag, void: &[bool]) -> Vec<bool> {
    let n = dag.ops.len();
    let mut effective = vec![false; n];
    effective[0] = true; // the genesis: the only operation of depth 0
    for i in 1..n {
        if void[i] {
            continue;
        }
        let counted = |t: usize| t < i && effective[t] && dag.before(t, i);
        let op = dag.op(i);
        let author = dag.standing(&op.author, counted);
        effective[i] = permits(author, &op.author, &op.op, |d| match dag.standing(d, counted) {
            Some(Standing::Member(m)) => Some(*m),
            _ => None,
        });
    }
    effective
}

/// Devices that can derive `epoch`'s key from the wraps and links in the DAG.
fn holders(dag: &Dag, space: &SpaceId, epoch: &Epoch) -> BTreeSet<DeviceId> {
    let mut direct: HashMap<EpochId, BTreeSet<DeviceId>> = HashMap::new();
    // Parent epoch → the epochs linking to it.
    let mut linked_from: HashMap<EpochId, Vec<EpochId>> = HashMap::new();
    for (_, op) in &dag.ops {
        for (epoch, wrap) in op.op.key_wraps(space) {
            direct.entry(epoch).or_default().insert(wrap.recipient);
        }
        if let Some((commit, _, links)) = op.op.rotation() {
            let id = EpochKey::id_of(space, commit);
            for link in links {
                linked_from.entry(link.parent).or_default().push(id);
            }
        }
    }
    let of_part = |part: EpochId| {
        let mut holders = BTreeSet::new();
        let mut seen = HashSet::new();
        let mut stack = vec![part];
        while let Some(e) = stack.pop() {
            if seen.insert(e) {
                holders.extend(direct.get(&e).into_iter().flatten().copied());
                stack.extend(linked_from.get(&e).into_iter().flatten().copied());
            }
        }
        holders
    };
    let mut parts = epoch.parts.iter().map(|p| of_part(*p));
    let first = parts.next().unwrap_or_default();
    parts.fold(first, |acc, h| acc.intersection(&h).copied().collect())
}
