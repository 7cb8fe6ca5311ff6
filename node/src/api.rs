//! The local API: HTTP/1.1 + JSON on a Unix socket (mode 0600) in the node's home.
//! The CLI, bots and a future UI are all clients of it.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/v1/id` | this device: ids, card, listen addresses |
//! | GET | `/v1/status` | peers and per-space sync state |
//! | GET | `/v1/spaces` | spaces this node keeps |
//! | POST | `/v1/chats` | create a chat space `{name, members, replicators}` |
//! | POST | `/v1/chats/{space}/messages` | send `{text, reply_to?, client_id?}`; returns after the durable commit |
//! | GET | `/v1/chats/{space}/messages?limit=N` | the latest N messages in display order, with edits, reactions, retraction |
//! | POST | `/v1/chat/ops` | `{space?, op}`: edit, retract, react, topic, welcome, announce, pin, retract window (without `space`, the room holding the op's message) |
//! | GET | `/v1/chats/{space}/room` | topic, welcome message, announcement, pinned messages |
//! | GET, POST | `/v1/chat/quiet` | do not disturb: muted rooms and quiet hours (POST a `Quiet` change) |
//! | POST | `/v1/chats/dm` | `{user}`: the direct-message room with that user (made when there is none) |
//! | POST | `/v1/chats/{space}/files?name=N[&text=T][&reply_to=M]` | send a file (the body, streamed; up to 64 GiB) with a message; returns after both are durable |
//! | POST | `/v1/files/{id}/get` | fetch a file from peers unless it is here (resumes after a restart) |
//! | GET | `/v1/files/{id}` | a file's name, size, whether it is here, download progress |
//! | GET | `/v1/files/{id}/content` | a file held here, decrypted as it streams |
//! | POST | `/v1/chats/{space}/read` | marks the room read by this user (a receipt every member sees) |
//! | POST | `/v1/spaces/{space}/members` | add a member `{member, role}` or a replicator `{member, replicator: true}` (owners and admins); returns after the durable commit |
//! | GET | `/v1/spaces/{space}/members` | the space's members with roles, and its replicators |
//! | GET | `/v1/events[?space=S]` | NDJSON stream of live events |
//! | GET | `/v1/org` | the org this node follows: version, admins, expiry, drafts |
//! | POST | `/v1/org` | an org command (`init`, `follow`, `propose`, `sign`, `publish`) |
//! | POST | `/v1/org/invite` | an invite ticket `{member}` (admins) |
//! | POST | `/v1/org/enroll` | enroll this device with `{ticket}`: asks the admin's device |
//! | GET | `/v1/search?q=Q[&space=S][&from=U][&after_ms=T][&before_ms=T][&limit=N]` | messages and documents this device can read, best first |
//! | GET | `/v1/dir/search?q=Q` | org members matching Q, as this device may see them |
//! | GET | `/v1/dir/dept?path=P` | the members of department P and those under it |
//!
//! Errors are `{code, message, hint}` with a matching HTTP status; `code` is stable.

mod files;
pub use self::files::Upload;

use std::sync::Arc;

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::{
    control::{Posting, Role},
    core::{
        self, Changed, CoreHandle, DeviceView, DirEntry, Invited, Joined, LinkState, Linked, MemberChange, Members,
        MessageView, OrgCommand, OrgView, Revoked, Sent, SpaceStatus, SpaceSummary,
    },
    identity::DeviceKeys,
    ids::{DeviceId, SpaceId, UserId},
    link::{JoinOutcome, Ticket},
    net::{NetHandle, NetStatus, PeerStatus},
    org::enroll::{EnrollOutcome, EnrollTicket},
    search::{Hit, SearchIndex, SearchQuery},
};

/// Default number of messages `chat log` returns.
pub const DEFAULT_LOG_LIMIT: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdResponse {
    pub device_id: DeviceId,
    /// The user this device belongs to.
    pub user_id: UserId,
    pub peer_id: String,
    /// The device card others pass to `--member`.
    pub card: String,
    pub listen: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    pub device_id: DeviceId,
    pub peer_id: String,
    pub listen: Vec<String>,
    pub peers: Vec<PeerStatus>,
    /// This node serves as an anchor (relay and rendezvous; `daemon --anchor`).
    #[serde(default)]
    pub anchor: bool,
    /// The anchors this node uses for relay and rendezvous, connected now.
    #[serde(default)]
    pub anchors: Vec<DeviceId>,
    pub spaces: Vec<SpaceStatus>,
    /// The org this node follows, if any (version, expiry, degraded mode).
    #[serde(default)]
    pub org: Option<OrgView>,
}

pub use crate::core::NewSpace as CreateChat;

/// A shared document or calendar to create (empty; write its text with
/// `DocEdit`, its events with `CalEdit`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateDoc {
    pub name: String,
    /// Device cards or ids.
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub replicators: Vec<String>,
}

/// A write to a calendar: `space` names it (needed to add and import; event
/// references are found in every calendar otherwise).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalWrite {
    #[serde(default)]
    pub space: Option<SpaceId>,
    pub edit: core::CalEdit,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Created {
    pub space: SpaceId,
}

/// A change to a room other than a new message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatOpRequest {
    /// The room (an id); without it, the room holding the op's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    pub op: core::ChatOp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendMessage {
    pub text: String,
    /// The message this one answers: its id or a unique prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Chosen by the client; a retried request with the same id is not duplicated.
    #[serde(default)]
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invite {
    /// The device's card, or its id if this node has met it.
    pub member: String,
    /// The member's role (default writer).
    #[serde(default = "default_role")]
    pub role: Role,
    /// Name it a replicate-only node instead: it never gets the key (`role` is ignored).
    #[serde(default)]
    pub replicator: bool,
}

fn default_role() -> Role {
    Role::Writer
}

/// One line of the event stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ApiEvent {
    Message {
        space: SpaceId,
        message: MessageView,
    },
    /// This stream fell behind and `missed` events were dropped: re-read what
    /// you follow (e.g. the chat log) to catch up.
    Lagged {
        missed: u64,
    },
    /// A notification for this device's user (a mention), as `GET /v1/inbox` lists it.
    Inbox {
        entry: core::InboxEntry,
    },
    /// A calendar changed (here or on a peer): re-read the agenda.
    Calendar {
        space: SpaceId,
    },
    /// Messages of a room were edited, reacted to or retracted, or its
    /// settings changed: re-read what you show.
    ChatUpdated {
        space: SpaceId,
    },
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Clone)]
struct AppState {
    core: CoreHandle,
    net: NetHandle,
    keys: Arc<DeviceKeys>,
    /// Turns true when the daemon shuts down: open event streams end, so the
    /// server's graceful shutdown does not wait on `chat tail` forever.
    stopping: watch::Receiver<bool>,
    /// The local search index (none when it could not be opened).
    search: Option<Arc<SearchIndex>>,
}

/// The router serving the local API.
pub fn router(
    core: CoreHandle,
    net: NetHandle,
    keys: Arc<DeviceKeys>,
    stopping: watch::Receiver<bool>,
    search: Option<Arc<SearchIndex>>,
) -> Router {
    Router::new()
        .route("/v1/id", get(id))
        .route("/v1/status", get(status))
        .route("/v1/spaces", get(spaces))
        .route("/v1/spaces/{space}/members", post(invite).get(members))
        .route("/v1/spaces/{space}/changes", post(change_members))
        .route("/v1/spaces/{space}/posting", post(set_posting))
        .route("/v1/devices", get(devices))
        .route("/v1/devices/link", post(link))
        .route("/v1/devices/link/{id}", get(link_state))
        .route("/v1/devices/link/{id}/confirm", post(confirm_link))
        .route("/v1/devices/join", post(join))
        .route("/v1/devices/{device}/revoke", post(revoke))
        .route("/v1/chats", post(create_chat))
        .route(
            "/v1/org",
            get(org_show)
                .post(org_command)
                // An imported chart of 50,000 members is about 10 MB of JSON.
                .layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .route("/v1/org/invite", post(org_invite))
        .route("/v1/org/enroll", post(org_enroll))
        .route("/v1/dir/search", get(dir_search))
        .route("/v1/dir/dept", get(dir_dept))
        .route("/v1/chats/{space}/messages", post(send).get(log))
        .route("/v1/chat/ops", post(chat_op))
        .route("/v1/chats/{space}/room", get(room))
        .route("/v1/chats/{space}/read", post(mark_read))
        .route("/v1/chats/dm", post(direct))
        .route("/v1/chat/quiet", get(quiet_show).post(quiet_set))
        .route("/v1/chats/{space}/files", post(files::upload))
        .route("/v1/files/{id}", get(files::show))
        .route("/v1/files/{id}/get", post(files::get))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/docs", post(create_doc))
        .route("/v1/docs/{space}", post(write_doc))
        .route("/v1/docs/{space}/read", post(read_doc))
        .route("/v1/calendars", post(create_calendar))
        .route("/v1/cal", post(write_calendar))
        .route("/v1/cal/read", post(read_calendar))
        .route("/v1/events", get(events))
        .route("/v1/inbox", get(inbox))
        .route("/v1/search", get(search_handler))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such API endpoint".into(), None) })
        .with_state(AppState {
            core,
            net,
            keys,
            stopping,
            search,
        })
}

/// A failed request: an HTTP status and the `{code, message, hint}` body.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    body: ApiError,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn error(status: StatusCode, code: &str, message: String, hint: Option<&str>) -> Failure {
    Failure {
        status,
        body: ApiError {
            code: code.into(),
            message,
            hint: hint.map(Into::into),
        },
    }
}

impl From<core::Error> for Failure {
    fn from(e: core::Error) -> Self {
        use core::Error as E;
        let msg = e.to_string();
        match &e {
            E::UnknownSpace(_) => error(
                StatusCode::NOT_FOUND,
                "unknown_space",
                msg,
                Some("list spaces with `outpost chat list`"),
            ),
            E::NotWritable(_) => error(StatusCode::FORBIDDEN, "forbidden", msg, None),
            E::NotAllowed(_) => error(
                StatusCode::FORBIDDEN,
                "forbidden",
                msg,
                Some("`outpost space members SPACE` shows who may"),
            ),
            E::KeyMissing { .. } => error(
                StatusCode::CONFLICT,
                "key_missing",
                msg,
                Some("`outpost status` shows why; it resolves when a key holder connects"),
            ),
            E::UnknownDevice(_) => error(StatusCode::BAD_REQUEST, "unknown_device", msg, None),
            E::Invalid(_) => error(StatusCode::BAD_REQUEST, "invalid", msg, None),
            E::Store(source) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store",
                format!("{msg}: {source}"),
                Some("check disk space and the daemon log"),
            ),
            E::Stopped => error(StatusCode::SERVICE_UNAVAILABLE, "stopped", msg, None),
            E::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", msg, None),
            E::NotAdmin(_) => error(
                StatusCode::FORBIDDEN,
                "forbidden",
                msg,
                Some("`outpost org show` lists the admin keys and this device's"),
            ),
        }
    }
}

fn parse_space(text: &str) -> Result<SpaceId, Failure> {
    text.parse().map_err(|e: crate::ids::ParseIdError| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid",
            e.to_string(),
            Some("space ids are printed by `outpost chat create` and `outpost chat list`"),
        )
    })
}

async fn net_status(net: &NetHandle) -> NetStatus {
    net.status().await.unwrap_or_default()
}

async fn id(State(s): State<AppState>) -> Json<IdResponse> {
    let net = net_status(&s.net).await;
    let cert = s.keys.cert();
    Json(IdResponse {
        device_id: cert.device,
        user_id: cert.user,
        peer_id: net.peer_id,
        card: cert.to_card(),
        listen: net.listen,
    })
}

async fn status(State(s): State<AppState>) -> Result<Json<StatusResponse>, Failure> {
    let spaces = s.core.status().await?;
    let org = match s.core.org_show().await {
        Ok(view) => Some(view),
        Err(core::Error::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let net = net_status(&s.net).await;
    Ok(Json(StatusResponse {
        device_id: s.keys.device_id(),
        peer_id: net.peer_id,
        listen: net.listen,
        peers: net.peers,
        anchor: net.anchor,
        anchors: net.anchors,
        spaces,
        org,
    }))
}

async fn spaces(State(s): State<AppState>) -> Result<Json<Vec<SpaceSummary>>, Failure> {
    Ok(Json(s.core.spaces().await?))
}

async fn invite(
    State(s): State<AppState>,
    Path(space): Path<String>,
    Json(req): Json<Invite>,
) -> Result<Json<Invited>, Failure> {
    let space = parse_space(&space)?;
    let grant = if req.replicator {
        core::Grant::Replicator
    } else {
        core::Grant::Member(req.role)
    };
    Ok(Json(s.core.invite(space, req.member, grant).await?))
}

/// Body: a [`MemberChange`] as JSON, e.g. `{"remove": "<device>"}`,
/// `{"set_role": ["<device>", "admin"]}`, `"leave"` or `"rotate"`.
async fn change_members(
    State(s): State<AppState>,
    Path(space): Path<String>,
    Json(change): Json<MemberChange>,
) -> Result<Json<Changed>, Failure> {
    let space = parse_space(&space)?;
    Ok(Json(s.core.change_members(space, change).await?))
}

/// Body of `POST /v1/spaces/{space}/posting`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetPosting {
    pub posting: Posting,
}

async fn set_posting(
    State(s): State<AppState>,
    Path(space): Path<String>,
    Json(req): Json<SetPosting>,
) -> Result<Json<Changed>, Failure> {
    let space = parse_space(&space)?;
    Ok(Json(s.core.set_posting(space, req.posting).await?))
}

async fn devices(State(s): State<AppState>) -> Result<Json<Vec<DeviceView>>, Failure> {
    Ok(Json(s.core.devices().await?))
}

/// A link ticket made by `POST /v1/devices/link`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkTicket {
    /// Give this to `outpost device join` on the new device.
    pub ticket: String,
    /// Poll `GET /v1/devices/link/{id}` for a join request.
    pub id: String,
    pub expires_ms: u64,
}

async fn link(State(s): State<AppState>) -> Result<Json<LinkTicket>, Failure> {
    let net = net_status(&s.net).await;
    let ticket = s.core.link_ticket(net.listen).await?;
    Ok(Json(LinkTicket {
        ticket: ticket.to_text(),
        id: data_encoding::HEXLOWER.encode(&ticket.id()),
        expires_ms: ticket.expires_ms,
    }))
}

fn parse_link_id(text: &str) -> Result<[u8; 16], Failure> {
    data_encoding::HEXLOWER
        .decode(text.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "invalid",
                "a link id is 32 hex characters".into(),
                None,
            )
        })
}

async fn link_state(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<LinkState>, Failure> {
    Ok(Json(s.core.link_state(parse_link_id(&id)?).await?))
}

async fn confirm_link(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Linked>, Failure> {
    Ok(Json(s.core.confirm_link(parse_link_id(&id)?).await?))
}

/// Body of `POST /v1/devices/join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Join {
    pub ticket: String,
}

/// Joins the user of the device that made the ticket: asks it (it confirms),
/// then stores the link. Returns once this device belongs to that user.
async fn join(State(s): State<AppState>, Json(req): Json<Join>) -> Result<Json<Joined>, Failure> {
    let ticket = Ticket::from_text(&req.ticket, crate::clock::now_ms())
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid", e.to_string(), None))?;
    if ticket.device == s.keys.device_id() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "this ticket was made by this device; run `outpost device join` on the new device".into(),
            None,
        ));
    }
    let request = core::join_request(&s.keys, &ticket);
    match s.net.join(ticket.clone(), request).await {
        JoinOutcome::Accepted(response) => Ok(Json(s.core.joined(ticket.user, response).await?)),
        JoinOutcome::Refused(why) => Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the other device refused: {why}"),
            Some("make a fresh ticket with `outpost device link` and confirm the code there within a minute"),
        )),
    }
}

async fn revoke(State(s): State<AppState>, Path(device): Path<String>) -> Result<Json<Revoked>, Failure> {
    Ok(Json(s.core.revoke(device).await?))
}

async fn members(State(s): State<AppState>, Path(space): Path<String>) -> Result<Json<Members>, Failure> {
    let space = parse_space(&space)?;
    Ok(Json(s.core.members(space).await?))
}

/// Body of `POST /v1/org/invite`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgInvite {
    pub member: String,
}

/// An invite ticket, as `org invite` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgTicket {
    pub ticket: String,
    pub member: String,
    pub expires_ms: u64,
}

async fn org_invite(State(s): State<AppState>, Json(req): Json<OrgInvite>) -> Result<Json<OrgTicket>, Failure> {
    let net = net_status(&s.net).await;
    let ticket = s.core.org_invite(req.member, net.listen, net.anchor_addrs).await?;
    Ok(Json(OrgTicket {
        ticket: ticket.to_text(),
        member: ticket.member,
        expires_ms: ticket.expires_ms,
    }))
}

/// Enrolls this device with an invite ticket: follows the ticket's org, asks
/// the admin's device, and returns its answer.
async fn org_enroll(State(s): State<AppState>, Json(req): Json<Join>) -> Result<Json<EnrollOutcome>, Failure> {
    let ticket = EnrollTicket::from_text(&req.ticket, crate::clock::now_ms())
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid", e.to_string(), None))?;
    if ticket.admin == s.keys.device_id() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "this ticket was made by this device; run `outpost org enroll` on the new device".into(),
            None,
        ));
    }
    s.core.org(OrgCommand::Follow { org: ticket.org }).await?;
    match s.net.enroll(&ticket, ticket.request(s.keys.cert())).await {
        EnrollOutcome::Refused(why) => Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the admin's device refused: {why}"),
            Some("ask an admin for a fresh ticket (`outpost org invite MEMBER`)"),
        )),
        accepted => Ok(Json(accepted)),
    }
}

#[derive(Debug, Deserialize)]
struct DirParams {
    q: Option<String>,
    path: Option<String>,
}

async fn dir_search(State(s): State<AppState>, Query(p): Query<DirParams>) -> Result<Json<Vec<DirEntry>>, Failure> {
    let query = p.q.unwrap_or_default();
    Ok(Json(s.core.directory(core::DirQuery::Search(query)).await?))
}

async fn dir_dept(State(s): State<AppState>, Query(p): Query<DirParams>) -> Result<Json<Vec<DirEntry>>, Failure> {
    let path = p.path.unwrap_or_default();
    Ok(Json(s.core.directory(core::DirQuery::Department(path)).await?))
}

async fn org_show(State(s): State<AppState>) -> Result<Json<OrgView>, Failure> {
    Ok(Json(s.core.org_show().await?))
}

async fn org_command(State(s): State<AppState>, Json(cmd): Json<OrgCommand>) -> Result<Json<OrgView>, Failure> {
    Ok(Json(s.core.org(cmd).await?))
}

async fn create_chat(State(s): State<AppState>, Json(req): Json<CreateChat>) -> Result<Json<Created>, Failure> {
    let space = s.core.create(req).await?;
    Ok(Json(Created { space }))
}

async fn create_doc(State(s): State<AppState>, Json(req): Json<CreateDoc>) -> Result<Json<Created>, Failure> {
    create_shared(s, req, crate::control::SpaceKind::Doc).await
}

async fn create_calendar(State(s): State<AppState>, Json(req): Json<CreateDoc>) -> Result<Json<Created>, Failure> {
    create_shared(s, req, crate::control::SpaceKind::Calendar).await
}

async fn write_calendar(
    State(s): State<AppState>,
    Json(req): Json<CalWrite>,
) -> Result<Json<core::CalWritten>, Failure> {
    Ok(Json(s.core.write_calendar(req.space, req.edit).await?))
}

async fn read_calendar(
    State(s): State<AppState>,
    Json(query): Json<core::CalQuery>,
) -> Result<Json<core::CalAnswer>, Failure> {
    Ok(Json(s.core.read_calendar(query).await?))
}

/// Creates a space whose history every member shares (a document, a calendar).
async fn create_shared(s: AppState, req: CreateDoc, kind: crate::control::SpaceKind) -> Result<Json<Created>, Failure> {
    let space = s
        .core
        .create(core::NewSpace {
            name: req.name,
            kind,
            history: crate::control::History::Shared,
            posting: crate::control::Posting::Writers,
            department: None,
            members: req.members,
            replicators: req.replicators,
        })
        .await?;
    Ok(Json(Created { space }))
}

async fn write_doc(
    State(s): State<AppState>,
    Path(space): Path<String>,
    Json(edit): Json<core::DocEdit>,
) -> Result<Json<core::Written>, Failure> {
    let space = parse_space(&space)?;
    Ok(Json(s.core.write_doc(space, edit).await?))
}

async fn read_doc(
    State(s): State<AppState>,
    Path(space): Path<String>,
    Json(query): Json<core::DocQuery>,
) -> Result<Json<core::DocAnswer>, Failure> {
    let space = parse_space(&space)?;
    Ok(Json(s.core.read_doc(space, query).await?))
}

async fn send(
    State(s): State<AppState>,
    Path(space): Path<String>,
    Json(req): Json<SendMessage>,
) -> Result<Json<Sent>, Failure> {
    let space = parse_space(&space)?;
    let outgoing = core::Outgoing {
        text: req.text,
        reply_to: req.reply_to,
        client_id: req.client_id,
        file: None,
    };
    Ok(Json(s.core.send_message(space, outgoing).await?))
}

async fn chat_op(State(s): State<AppState>, Json(req): Json<ChatOpRequest>) -> Result<Json<core::ChatDone>, Failure> {
    let space = req.space.as_deref().map(parse_space).transpose()?;
    Ok(Json(s.core.chat_write(space, req.op).await?))
}

/// Whom to write to directly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Direct {
    /// A device card, or a device or user id this node has met.
    pub user: String,
}

async fn direct(State(s): State<AppState>, Json(req): Json<Direct>) -> Result<Json<core::DirectRoom>, Failure> {
    Ok(Json(s.core.direct(req.user).await?))
}

async fn quiet_show(State(s): State<AppState>) -> Result<Json<core::QuietView>, Failure> {
    Ok(Json(s.core.quiet().await?))
}

async fn quiet_set(
    State(s): State<AppState>,
    Json(change): Json<core::Quiet>,
) -> Result<Json<core::QuietView>, Failure> {
    Ok(Json(s.core.set_quiet(change).await?))
}

async fn mark_read(State(s): State<AppState>, Path(space): Path<String>) -> Result<Json<core::MarkedRead>, Failure> {
    let space = parse_space(&space)?;
    Ok(Json(s.core.mark_read(space).await?))
}

async fn room(State(s): State<AppState>, Path(space): Path<String>) -> Result<Json<core::RoomView>, Failure> {
    let space = parse_space(&space)?;
    Ok(Json(s.core.room(space).await?))
}

#[derive(Deserialize)]
struct LogQuery {
    limit: Option<usize>,
}

async fn log(
    State(s): State<AppState>,
    Path(space): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Vec<MessageView>>, Failure> {
    let space = parse_space(&space)?;
    Ok(Json(
        s.core.messages(space, q.limit.unwrap_or(DEFAULT_LOG_LIMIT)).await?,
    ))
}

async fn inbox(State(s): State<AppState>, Query(q): Query<LogQuery>) -> Result<Json<Vec<core::InboxEntry>>, Failure> {
    Ok(Json(s.core.inbox(q.limit.unwrap_or(DEFAULT_LOG_LIMIT)).await?))
}

#[derive(Deserialize)]
struct EventsQuery {
    space: Option<String>,
}

async fn events(State(s): State<AppState>, Query(q): Query<EventsQuery>) -> Result<Response, Failure> {
    let filter = q.space.as_deref().map(parse_space).transpose()?;
    let rx = s.core.subscribe();
    let stream = futures::stream::unfold((rx, s.stopping), move |(mut rx, mut stopping)| async move {
        loop {
            let event = tokio::select! {
                event = rx.recv() => event,
                _ = stopping.wait_for(|stop| *stop) => return None,
            };
            match event {
                Ok(core::Event::Message { space, message }) if filter.is_none_or(|f| f == space) => {
                    let mut line = serde_json::to_vec(&ApiEvent::Message { space, message }).expect("events serialize");
                    line.push(b'\n');
                    return Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), (rx, stopping)));
                }
                Ok(core::Event::Calendar { space }) if filter.is_none_or(|f| f == space) => {
                    let mut line = serde_json::to_vec(&ApiEvent::Calendar { space }).expect("events serialize");
                    line.push(b'\n');
                    return Some((Ok(Bytes::from(line)), (rx, stopping)));
                }
                Ok(core::Event::ChatUpdated { space, .. }) if filter.is_none_or(|f| f == space) => {
                    let mut line = serde_json::to_vec(&ApiEvent::ChatUpdated { space }).expect("events serialize");
                    line.push(b'\n');
                    return Some((Ok(Bytes::from(line)), (rx, stopping)));
                }
                Ok(core::Event::Inbox { entry }) if filter.is_none_or(|f| f == entry.space) => {
                    let mut line = serde_json::to_vec(&ApiEvent::Inbox { entry }).expect("events serialize");
                    line.push(b'\n');
                    return Some((Ok(Bytes::from(line)), (rx, stopping)));
                }
                // Too many messages at once to announce each: the follower re-reads.
                Ok(core::Event::Reload { space, messages }) if filter.is_none_or(|f| f == space) => {
                    let mut line =
                        serde_json::to_vec(&ApiEvent::Lagged { missed: messages }).expect("events serialize");
                    line.push(b'\n');
                    return Some((Ok(Bytes::from(line)), (rx, stopping)));
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let mut line = serde_json::to_vec(&ApiEvent::Lagged { missed }).expect("events serialize");
                    line.push(b'\n');
                    return Some((Ok(Bytes::from(line)), (rx, stopping)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .expect("static headers are valid"))
}

/// `GET /v1/search`: the query runs over the entries of spaces this device
/// can read now (a space it left is skipped even before its entries go).
async fn search_handler(State(s): State<AppState>, Query(q): Query<SearchRequest>) -> Result<Json<Vec<Hit>>, Failure> {
    let Some(index) = s.search.clone() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "search_unavailable",
            "the search index could not be opened".into(),
            Some("see the daemon log; removing the `search` directory in the home rebuilds it"),
        ));
    };
    let from = match q.from {
        Some(name) => Some(author_of(&s.core, name).await?),
        None => None,
    };
    let query = SearchQuery {
        text: q.q,
        space: q.space.as_deref().map(parse_space).transpose()?,
        from,
        after_ms: q.after_ms,
        before_ms: q.before_ms,
        limit: q.limit,
    };
    let spaces = s.core.spaces().await?;
    if let Some(asked) = query.space
        && !spaces.iter().any(|s| s.space == asked)
    {
        return Err(core::Error::UnknownSpace(asked).into());
    }
    let readable = spaces.iter().filter(|s| s.readable).map(|s| s.space).collect();
    let mut hits = tokio::task::spawn_blocking(move || index.search(&query, &readable))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "search", e.to_string(), None))?
        .map_err(|e| match e {
            crate::search::Error::Query(msg) => error(StatusCode::BAD_REQUEST, "invalid", msg, None),
            other => error(StatusCode::SERVICE_UNAVAILABLE, "search", other.to_string(), None),
        })?;
    for hit in &mut hits {
        hit.space_name = spaces
            .iter()
            .find(|s| s.space == hit.space)
            .and_then(|s| s.name.clone());
    }
    Ok(Json(hits))
}

/// `--from`: a person as a mention names them (their user id), else a
/// device or user id prefix as typed.
async fn author_of(core: &CoreHandle, name: String) -> Result<String, Failure> {
    if let Some(user) = core.who_is(name.clone()).await? {
        return Ok(user.to_string());
    }
    if name.len() >= 8 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(name);
    }
    Err(error(
        StatusCode::BAD_REQUEST,
        "invalid",
        format!("--from {name:?} names no one member of your spaces"),
        Some("give their org name, e-mail name, or 8+ hex characters of their user or device id"),
    ))
}

#[derive(Debug, Deserialize)]
struct SearchRequest {
    q: String,
    space: Option<String>,
    from: Option<String>,
    after_ms: Option<i64>,
    before_ms: Option<i64>,
    limit: Option<usize>,
}
