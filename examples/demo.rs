//! A chat converging through a partition, on three real nodes.
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! Starts three Outpost nodes in this process (each with its own home, redb
//! store, libp2p swarm on loopback and local API socket, exactly what
//! `outpost daemon` runs), creates an end-to-end encrypted chat, cuts one node
//! off, keeps writing on both sides, brings it back, and prints the three chat
//! logs: identical, in the same order. Then a fourth node is invited and
//! receives the key and the whole history, and one node is removed: the key
//! changes and it reads nothing written after. Every step talks to the nodes through
//! their local API, as the `outpost` CLI does; the equivalent command is
//! printed beside each step.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use outpost_node::{
    api::{CreateChat, Created, IdResponse, Invite, SendMessage},
    client::Client,
    control::{History, Role},
    core::{Changed, Invited, MemberChange, MessageView, Sent},
    daemon,
    identity::DeviceKeys,
};
use tokio::{sync::oneshot, task::JoinHandle};

/// One node: its home, its port and, while it runs, its daemon task.
struct Node {
    name: &'static str,
    home: PathBuf,
    port: u16,
    peers: Vec<String>,
    running: Option<Running>,
}

/// A running daemon: the trigger that stops it and the task to wait on.
type Running = (oneshot::Sender<()>, JoinHandle<Result<(), daemon::Error>>);

impl Node {
    fn init(root: &Path, name: &'static str) -> anyhow::Result<Self> {
        let home = root.join(name);
        DeviceKeys::create(&home)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Ok(Self {
            name,
            home,
            port,
            peers: Vec::new(),
            running: None,
        })
    }

    fn addr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.port)
    }

    fn client(&self) -> Client {
        Client::for_home(&self.home)
    }

    /// `outpost daemon --no-mdns --listen ADDR --peer ...`
    async fn start(&mut self, peers: &[String]) -> anyhow::Result<()> {
        self.peers = peers.to_vec();
        let mut config = daemon::Config::new(self.home.clone());
        config.net.mdns = false;
        config.net.listen = vec![self.addr().parse()?];
        config.net.peers = peers.iter().map(|p| p.parse()).collect::<Result<_, _>>()?;
        config.net.resync_interval = Duration::from_secs(2);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(daemon::run(config, async move {
            let _ = stopped.await;
        }));
        self.running = Some((stop, task));
        let client = self.client();
        wait_for(&format!("{}'s API", self.name), || {
            let client = client.clone();
            async move { client.get::<IdResponse>("/v1/id").await.ok() }
        })
        .await?;
        Ok(())
    }

    /// Stops the daemon (as SIGTERM does): its link to the others is cut.
    async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.await??;
        }
        Ok(())
    }

    async fn card(&self) -> anyhow::Result<String> {
        Ok(self.client().get::<IdResponse>("/v1/id").await?.card)
    }

    /// `outpost chat send SPACE TEXT`: returns once durably stored.
    async fn send(&self, space: &str, text: &str) -> anyhow::Result<()> {
        let body = SendMessage {
            text: text.into(),
            reply_to: None,
            client_id: None,
        };
        let sent: Sent = self
            .client()
            .post(&format!("/v1/chats/{space}/messages"), &body)
            .await?;
        println!(
            "  {:<2} outpost chat send {} {text:?}  → {}",
            self.name,
            short(space),
            sent.id
        );
        Ok(())
    }

    /// `outpost chat log SPACE --json`
    async fn log(&self, space: &str) -> Option<Vec<MessageView>> {
        self.client()
            .get(&format!("/v1/chats/{space}/messages?limit=1000"))
            .await
            .ok()
    }
}

fn short(id: &str) -> &str {
    &id[..8]
}

/// Polls `check` until it yields a value, for at most 60 s.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every node shows the same log of `count` messages.
async fn converged(nodes: &[&Node], space: &str, count: usize) -> anyhow::Result<Vec<MessageView>> {
    wait_for(&format!("{count} messages on every node"), || async {
        let mut logs = Vec::new();
        for n in nodes {
            logs.push(n.log(space).await?);
        }
        let first = logs[0].clone();
        (first.len() == count && logs.iter().all(|l| *l == first)).then_some(first)
    })
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut a = Node::init(root.path(), "a")?;
    let mut b = Node::init(root.path(), "b")?;
    let mut c = Node::init(root.path(), "c")?;
    println!("Three nodes on loopback, homes under {}", root.path().display());
    a.start(&[b.addr(), c.addr()]).await?;
    b.start(&[a.addr(), c.addr()]).await?;
    c.start(&[a.addr(), b.addr()]).await?;

    let create = CreateChat {
        name: "branch-office".into(),
        kind: Default::default(),
        history: History::Shared,
        posting: Default::default(),
        department: None,
        members: vec![b.card().await?, c.card().await?],
        replicators: Vec::new(),
    };
    let created: Created = a.client().post("/v1/chats", &create).await?;
    let space = created.space.to_string();
    println!("\n1. a creates an encrypted chat for a, b and c");
    println!("  a  outpost chat create branch-office --member <b's card> --member <c's card>  → {space}");
    wait_for("b and c to receive the space", || async {
        (b.log(&space).await.is_some() && c.log(&space).await.is_some()).then_some(())
    })
    .await?;

    println!("\n2. Everyone talks");
    a.send(&space, "good morning from HQ").await?;
    b.send(&space, "morning! shipment left at 9").await?;
    c.send(&space, "branch c online").await?;
    converged(&[&a, &b, &c], &space, 3).await?;

    println!("\n3. A partition: c's link goes down; both sides keep writing");
    let (home_port, peers) = (c.port, c.peers.clone());
    c.stop().await?;
    // c runs on, unreachable: another port, no peers.
    c.port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    c.start(&[]).await?;
    a.send(&space, "c, are you there?").await?;
    b.send(&space, "their uplink is down again").await?;
    c.send(&space, "offline here, writing anyway").await?;
    converged(&[&a, &b], &space, 5).await?;
    let on_c = c.log(&space).await.map_or(0, |l| l.len());
    println!("  a and b hold 5 messages, c holds {on_c}: neither side sees the other's writes");

    println!("\n4. The link returns: c reconnects and everything converges");
    c.stop().await?;
    c.port = home_port;
    c.start(&peers).await?;
    let log = converged(&[&a, &b, &c], &space, 6).await?;

    println!(
        "\nThe chat log, identical on a, b and c (outpost chat log {}):",
        short(&space)
    );
    let names = [
        (a.client().get::<IdResponse>("/v1/id").await?.device_id, "a"),
        (b.client().get::<IdResponse>("/v1/id").await?.device_id, "b"),
        (c.client().get::<IdResponse>("/v1/id").await?.device_id, "c"),
    ];
    for m in &log {
        let who = names.iter().find(|(d, _)| *d == m.author).map_or("?", |(_, n)| *n);
        println!("  [{who}] {}", m.text);
    }

    println!("\n5. A new colleague's device d joins: a invites it; d gets the key and the history");
    let mut d = Node::init(root.path(), "d")?;
    d.start(&[a.addr()]).await?;
    let invite = Invite {
        member: d.card().await?,
        role: Role::Writer,
        replicator: false,
    };
    let invited: Invited = a.client().post(&format!("/v1/spaces/{space}/members"), &invite).await?;
    println!(
        "  a  outpost space invite {} <d's card> --role writer  → op {}",
        short(&space),
        short(&invited.op.to_string())
    );
    let on_d = wait_for("d to read the history", || async {
        d.log(&space).await.filter(|l| l.len() == log.len())
    })
    .await?;
    println!("  d reads all {} messages, same order: {}", on_d.len(), on_d == log);

    println!("\n6. c's laptop is lost: a removes c; the key changes and c reads nothing new");
    let c_id = c.client().get::<IdResponse>("/v1/id").await?.device_id;
    let removed: Changed = a
        .client()
        .post(
            &format!("/v1/spaces/{space}/changes"),
            &MemberChange::Remove(c_id.to_string()),
        )
        .await?;
    println!(
        "  a  outpost space remove {} {}  → key epoch {}",
        short(&space),
        short(&c_id.to_string()),
        short(&removed.epoch.to_string())
    );
    a.send(&space, "new door code is 4711").await?;
    converged(&[&a, &b, &d], &space, log.len() + 1).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let on_c = c.log(&space).await.unwrap_or_default();
    println!(
        "  a, b and d read the new message; c still holds {} messages, none of them new: {}",
        on_c.len(),
        on_c.iter().all(|m| m.text != "new door code is 4711")
    );

    for node in [&mut a, &mut b, &mut c, &mut d] {
        node.stop().await?;
    }
    Ok(())
}
