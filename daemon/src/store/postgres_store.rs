//! The shared store: one PostgreSQL database for every daemon of a shop or a chain.
//!
//! The rules of the port hold by the database's own means:
//! - a [`Commit`] is one SQL transaction; acknowledged means committed with
//!   `synchronous_commit = on` (set for every connection);
//! - a receipt's reservation is a primary key, so of two daemons reserving it at once
//!   exactly one commits;
//! - event ids come from one counter row updated inside each transaction that appends
//!   events: its row lock orders the transactions, so ids increase by one in commit order
//!   across daemons (`Last-Event-ID` needs no gaps);
//! - a payment is written only over an older version (`version < new`), so a change
//!   made from a stale read is refused as [`StoreError::Conflict`];
//! - every daemon follows every other's events through `LISTEN/NOTIFY`.
//!
//! When the database cannot be reached, every operation answers
//! [`StoreError::Unavailable`] at once (no provider call runs without its write-ahead);
//! the pool reconnects by itself when the database is back.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::watch;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{AsyncMessage, NoTls, Socket};

use super::index::{self, PaymentIndex, RefundIndex};
use super::retention::{Cutoffs, Totals};
use super::{postgres_schema, Backend, Commit, Event, IdempotencyRecord, StoreError, Window};
use crate::config::SharedStore;
use crate::payments::model::{now_ms, Payment, PaymentId, Refund, RefundId};

/// The channel every daemon's commits announce their newest event id on.
const CHANNEL: &str = "posbridge_events";
/// Connections per daemon: a till's requests, the jobs, the event streams' reads.
const POOL_SIZE: usize = 16;
/// How long an operation waits for a connection, or to open one, before answering
/// `store_unavailable`: a POS should hear quickly that the store is down.
const CONNECT_WAIT: Duration = Duration::from_secs(3);
/// Numbers per block taken from the `posbridge_ids` sequence (its increment).
const ID_BLOCK: u64 = 1000;
/// How often the event listener checks its quiet connection.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Removals per retention batch.
const SWEEP_BATCH: i64 = 500;

/// The open database: a pool of connections and the listener that follows the journal.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// This daemon's name in logs (`[store] node`).
    node: String,
    /// Who holds this daemon's leases: the node name and this process's own mark, so two
    /// daemons given the same name (or one restarted) never share a lease.
    owner: String,
    /// The newest event id known committed, by this daemon or another.
    last_event: watch::Sender<u64>,
    /// The block of unique numbers being handed out: next, end (exclusive).
    ids: Mutex<(u64, u64)>,
}

/// Maps a database error to the store's: a lost or refused connection is
/// `Unavailable` (try again later), anything the server answered is `Database`.
pub(super) fn classify(error: tokio_postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db) if is_connection_state(db.code().code()) => StoreError::Unavailable(db.message().to_string()),
        Some(db) => StoreError::Database(format!("{} ({})", db.message(), db.code().code())),
        None => StoreError::Unavailable(error.to_string()),
    }
}

/// SQLSTATE classes meaning the server is not (or no longer) serving this connection:
/// connection exceptions, an administrator's shutdown, a server starting or stopping.
fn is_connection_state(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P") || code == "53300"
}

fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => classify(error),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Where a URL points, for logs and messages (never its password): `host:port/database`.
pub fn place(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{}:{port}/{}", hosts.join(","), config.get_dbname().unwrap_or_default())
}

/// Whether every host of a URL is this machine (or a Unix socket): only then may the
/// connection go without TLS.
fn is_local(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => name == "localhost" || name.parse::<IpAddr>().is_ok_and(|address| address.is_loopback()),
    })
}

/// The certificates of a `ca_file` (PEM): at least one, or why not.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certificates = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{} is not PEM certificates: {error}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certificates)
}

/// The TLS a connection to `config` needs: none on loopback; rustls with the public
/// roots (and the `ca_file`'s) elsewhere, required.
fn tls_for(
    config: &mut tokio_postgres::Config,
    ca_file: Option<&std::path::Path>,
) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, StoreError> {
    if is_local(config) {
        return Ok(None);
    }
    if config.get_ssl_mode() == SslMode::Disable {
        return Err(StoreError::Schema(
            "the store URL names another machine with sslmode=disable: posbridge talks to a remote database over TLS only".into(),
        ));
    }
    config.ssl_mode(SslMode::Require);
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(file) = ca_file {
        for certificate in read_ca_file(file).map_err(StoreError::Schema)? {
            roots.add(certificate).map_err(|error| StoreError::Schema(format!("{}: {error}", file.display())))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| StoreError::Unavailable(format!("TLS setup: {error}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls)))
}

/// Parses a store URL (`postgres://user:password@host:5432/db`, or key=value pairs),
/// with every session committing synchronously.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, String> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|error: tokio_postgres::Error| error.to_string())?;
    config.options("-c synchronous_commit=on");
    config.application_name("posbridge");
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_WAIT);
    }
    // A database gone silent (a cable pulled, a host down) is noticed within seconds,
    // not after the system's two-hour keepalive: requests answer `store_unavailable` and
    // the event listener reconnects.
    config.keepalives(true).keepalives_idle(Duration::from_secs(5)).keepalives_interval(Duration::from_secs(2)).keepalives_retries(3);
    config.tcp_user_timeout(Duration::from_secs(10));
    Ok(config)
}

fn build_pool<T>(config: tokio_postgres::Config, tls: T) -> Result<Pool, StoreError>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let manager = Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_WAIT))
        .create_timeout(Some(CONNECT_WAIT))
        .recycle_timeout(Some(CONNECT_WAIT))
        .build()
        .map_err(|error| StoreError::Unavailable(error.to_string()))
}

impl PostgresStore {
    /// Connects to the database at `url` as daemon `node`: checks the schema, reads the
    /// newest event and starts following the others' events.
    pub async fn connect(shared: &SharedStore) -> Result<PostgresStore, StoreError> {
        let node = shared.node.as_str();
        let mut config =
            parse_url(shared.url.expose()).map_err(|error| StoreError::Schema(format!("the store URL is not valid: {error}")))?;
        let tls = tls_for(&mut config, shared.ca_file.as_deref())?;
        let pool = match &tls {
            None => build_pool(config.clone(), NoTls)?,
            Some(tls) => build_pool(config.clone(), tls.clone())?,
        };
        let store = PostgresStore {
            inner: Arc::new(Inner {
                pool,
                node: node.to_string(),
                owner: format!("{node}/{}-{:x}", std::process::id(), now_ms()),
                last_event: watch::channel(0).0,
                ids: Mutex::new((0, 0)),
            }),
        };
        {
            let client = store.client().await?;
            postgres_schema::check(postgres_schema::version(&**client).await?)?;
        }
        store.catch_up().await?;
        let weak = Arc::downgrade(&store.inner);
        match tls {
            None => tokio::spawn(follow(config, NoTls, weak)),
            Some(tls) => tokio::spawn(follow(config, tls, weak)),
        };
        Ok(store)
    }

    /// Applies the schema's missing migrations to the database at `url`.
    pub async fn migrate(shared: &SharedStore) -> Result<Vec<i32>, StoreError> {
        let mut config =
            parse_url(shared.url.expose()).map_err(|error| StoreError::Schema(format!("the store URL is not valid: {error}")))?;
        let pool = match tls_for(&mut config, shared.ca_file.as_deref())? {
            None => build_pool(config, NoTls)?,
            Some(tls) => build_pool(config, tls)?,
        };
        let mut client = pool.get().await.map_err(pool_error)?;
        postgres_schema::migrate(&mut client).await
    }

    /// This daemon's name in leases.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.inner.pool.get().await.map_err(pool_error)
    }

    /// Reads the newest committed event id (after a start or a reconnection, when
    /// notifications may have been missed).
    async fn catch_up(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let row = client.query_one("SELECT next_event - 1 FROM posbridge_meta", &[]).await.map_err(classify)?;
        self.inner.announce(row.get::<_, i64>(0) as u64);
        Ok(())
    }

    /// Takes or renews the lease on `work` for `ttl` (database time): `true` when this
    /// daemon holds it now. A lease held by another daemon and not expired is refused.
    pub async fn try_lease(&self, work: &str, ttl: Duration) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO posbridge_leases AS lease (work, owner, expires_at) \
                 VALUES ($1, $2, now() + $3 * interval '1 millisecond') \
                 ON CONFLICT (work) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at \
                 WHERE lease.owner = EXCLUDED.owner OR lease.expires_at < now() \
                 RETURNING owner",
            )
            .await
            .map_err(classify)?;
        let ttl_ms = ttl.as_millis() as f64;
        let rows = client.query(&statement, &[&work, &self.inner.owner, &ttl_ms]).await.map_err(classify)?;
        Ok(!rows.is_empty())
    }

    /// Extends this daemon's lease on `work` by `ttl`: `false` when it no longer holds it
    /// (it expired, and another daemon may have taken it meanwhile, even given it back).
    pub async fn renew_lease(&self, work: &str, ttl: Duration) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE posbridge_leases SET expires_at = now() + $3 * interval '1 millisecond' \
                 WHERE work = $1 AND owner = $2 AND expires_at > now()",
            )
            .await
            .map_err(classify)?;
        let ttl_ms = ttl.as_millis() as f64;
        Ok(client.execute(&statement, &[&work, &self.inner.owner, &ttl_ms]).await.map_err(classify)? == 1)
    }

    /// Gives up this daemon's lease on `work`.
    pub async fn release_lease(&self, work: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM posbridge_leases WHERE work = $1 AND owner = $2", &[&work, &self.inner.owner])
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Writes `commit` in one transaction; answers its events once committed.
    async fn write(&self, commit: &Commit) -> Result<Vec<Event>, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(classify)?;
        // Every statement of the change is sent at once: the connection pipelines them
        // and the server runs them in this order (one round trip, not one each). The
        // event counter comes last, so its lock is held only to the commit.
        let tx = &transaction;
        let mut steps: Vec<Step<'_>> = Vec::new();
        if let Some(work) = &commit.lease {
            steps.push(Box::pin(self.hold(tx, work)));
        }
        steps.extend(commit.reserve.iter().map(|(receipt, payment)| Box::pin(reserve(tx, receipt, payment)) as Step<'_>));
        steps.extend(commit.release.iter().map(|receipt| Box::pin(release(tx, receipt)) as Step<'_>));
        steps.extend(
            commit.payments.iter().map(|payment| Box::pin(write_payment(tx, payment, commit.read_version(&payment.id))) as Step<'_>),
        );
        steps.extend(commit.refunds.iter().map(|refund| Box::pin(write_refund(tx, commit, refund)) as Step<'_>));
        steps.extend(commit.idempotency.iter().map(|(key, record)| Box::pin(write_idempotency(tx, key, record.as_ref())) as Step<'_>));
        let (_, events) =
            futures_util::future::try_join(futures_util::future::try_join_all(steps), append_events(tx, &commit.events)).await?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("store-before-flush", |_| Err(StoreError::Corrupt {
            key: "failpoint".into(),
            reason: "injected before the commit".into()
        }));
        transaction.commit().await.map_err(classify)?;
        if let Some(last) = events.last() {
            self.inner.announce(last.id);
        }
        Ok(events)
    }

    /// Inserts copied records unless present (one transaction); answers how many of
    /// them the database holds after (a receipt counts only with the same payment).
    pub(super) async fn insert_missing(&self, rows: Rows) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(classify)?;
        let (insert, count, keys, holders): (String, &str, Vec<String>, Vec<String>) = match &rows {
            Rows::Payments(payments) => {
                (INSERT_PAYMENT.to_string(), "posbridge_payments WHERE id = ANY($1)", payments.iter().map(|p| p.id.to_string()).collect(), vec![])
            }
            Rows::Refunds(refunds) => (
                format!("{INSERT_REFUND} ON CONFLICT (id) DO NOTHING"),
                "posbridge_refunds WHERE id = ANY($1)",
                refunds.iter().map(|r| r.id.to_string()).collect(),
                vec![],
            ),
            Rows::Receipts(receipts) => (
                "INSERT INTO posbridge_receipts (receipt, payment) VALUES ($1, $2) ON CONFLICT (receipt) DO NOTHING".into(),
                "posbridge_receipts r JOIN unnest($1::text[], $2::text[]) AS c(receipt, payment) ON r.receipt = c.receipt AND r.payment = c.payment",
                receipts.iter().map(|(receipt, _)| receipt.clone()).collect(),
                receipts.iter().map(|(_, payment)| payment.clone()).collect(),
            ),
            Rows::Idempotency(records) => (
                "INSERT INTO posbridge_idempotency (key, created_at, record) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING".into(),
                "posbridge_idempotency WHERE key = ANY($1)",
                records.iter().map(|(key, _)| key.clone()).collect(),
                vec![],
            ),
            Rows::Events(_) => return Err(StoreError::Database("a journal is copied whole, by copy_journal".into())),
        };
        insert_all(&transaction, &insert, &rows).await?;
        let counted = match holders.is_empty() {
            true => transaction.query_one(&format!("SELECT count(*) FROM {count}"), &[&keys]).await,
            false => transaction.query_one(&format!("SELECT count(*) FROM {count}"), &[&keys, &holders]).await,
        };
        let present = counted.map_err(classify)?.get::<_, i64>(0) as usize;
        transaction.commit().await.map_err(classify)?;
        Ok(present)
    }

    /// Copies a store's journal (`events`, and its counter `next_event`) in one
    /// transaction holding the counter row, so no daemon appends meanwhile; only into a
    /// journal that is empty or already holds this very history (a copy run again).
    /// Answers how many of `events` the database holds after, or `None` when it keeps
    /// a history of its own.
    pub(super) async fn copy_journal(&self, events: Vec<Event>, next_event: u64) -> Result<Option<usize>, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(classify)?;
        let counter: i64 = transaction.query_one("SELECT next_event FROM posbridge_meta FOR UPDATE", &[]).await.map_err(classify)?.get(0);
        let fresh =
            counter == 1 && transaction.query_opt("SELECT 1 FROM posbridge_journal LIMIT 1", &[]).await.map_err(classify)?.is_none();
        let ours = match events.first() {
            Some(first) => transaction
                .query_opt(
                    "SELECT 1 FROM posbridge_journal WHERE id = $1 AND kind = $2 AND at = $3",
                    &[&(first.id as i64), &first.kind, &first.at],
                )
                .await
                .map_err(classify)?
                .is_some(),
            None => false,
        };
        if !fresh && !ours {
            return Ok(None);
        }
        let ids: Vec<String> = events.iter().map(|event| event.id.to_string()).collect();
        let newest = events.last().map_or(0, |event| event.id);
        let insert = "INSERT INTO posbridge_journal (id, kind, at, data) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING";
        insert_all(&transaction, insert, &Rows::Events(events)).await?;
        let present: i64 = transaction
            .query_one("SELECT count(*) FROM posbridge_journal WHERE id::text = ANY($1)", &[&ids])
            .await
            .map_err(classify)?
            .get(0);
        let next = i64::try_from(next_event.max(newest + 1)).unwrap_or(i64::MAX);
        transaction.execute("UPDATE posbridge_meta SET next_event = GREATEST(next_event, $1)", &[&next]).await.map_err(classify)?;
        transaction.commit().await.map_err(classify)?;
        drop(client);
        self.catch_up().await?;
        Ok(Some(present as usize))
    }

    /// Refuses the transaction unless this daemon holds the lease on `work`; locks the
    /// lease row to the commit, so no other daemon takes the work over meanwhile.
    async fn hold(&self, transaction: &Transaction<'_>, work: &str) -> Result<(), StoreError> {
        let statement = transaction
            .prepare_cached("SELECT 1 FROM posbridge_leases WHERE work = $1 AND owner = $2 AND expires_at > now() FOR UPDATE")
            .await
            .map_err(classify)?;
        match transaction.query_opt(&statement, &[&work, &self.inner.owner]).await.map_err(classify)? {
            Some(_) => Ok(()),
            None => Err(StoreError::LeaseLost(work.to_string())),
        }
    }

    /// Deletes in batches with `sql` (which answers the number of rows it removed when
    /// given a cutoff and a batch size) until a batch comes back short.
    /// One batch of the payments sweep, in one transaction: candidates are locked first
    /// (skipping rows another transaction holds), then checked again and removed by a
    /// second statement, whose snapshot sees every change committed before the locks (a
    /// refund made meanwhile keeps its payment). Answers how many went, and whether to go
    /// on (a full batch that removed something).
    async fn sweep_payments(&self, before: &str) -> Result<(usize, bool), StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(classify)?;
        let chosen: Vec<String> = transaction
            .query(
                "SELECT id FROM posbridge_payments p WHERE p.id < $1 AND NOT p.open AND p.split_reserved_amount = 0 \
                   AND NOT EXISTS (SELECT 1 FROM posbridge_refunds r WHERE r.payment = p.id AND r.status = 'pending') \
                 ORDER BY p.id LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&before, &SWEEP_BATCH],
            )
            .await
            .map_err(classify)?
            .into_iter()
            .map(|row| row.get(0))
            .collect();
        if chosen.is_empty() {
            return Ok((0, false));
        }
        let removed = transaction
            .query_one(
                "WITH gone AS (DELETE FROM posbridge_payments p WHERE p.id = ANY($1) AND NOT p.open AND p.split_reserved_amount = 0 \
                   AND NOT EXISTS (SELECT 1 FROM posbridge_refunds r WHERE r.payment = p.id AND r.status = 'pending') RETURNING id), \
                 refunds AS (DELETE FROM posbridge_refunds WHERE payment IN (SELECT id FROM gone)), \
                 receipts AS (DELETE FROM posbridge_receipts WHERE payment IN (SELECT id FROM gone)) \
                 SELECT count(*) FROM gone",
                &[&chosen],
            )
            .await
            .map_err(classify)?
            .get::<_, i64>(0) as usize;
        transaction.commit().await.map_err(classify)?;
        Ok((removed, chosen.len() as i64 == SWEEP_BATCH && removed > 0))
    }

    async fn drain(&self, sql: &str, cutoff: &(dyn ToSql + Sync)) -> Result<usize, StoreError> {
        let mut removed = 0;
        loop {
            let client = self.client().await?;
            let row = client.query_one(sql, &[cutoff, &SWEEP_BATCH]).await.map_err(classify)?;
            let batch = row.get::<_, i64>(0);
            removed += batch as usize;
            if batch < SWEEP_BATCH {
                return Ok(removed);
            }
        }
    }
}

impl Inner {
    fn announce(&self, id: u64) {
        self.last_event.send_if_modified(|newest| {
            let newer = id > *newest;
            *newest = (*newest).max(id);
            newer
        });
    }
}

/// Follows every daemon's commits: `LISTEN` on a connection of its own, reconnecting
/// (and reading the counter, for what was missed) whenever it drops, for as long as the
/// store is open.
async fn follow<T>(config: tokio_postgres::Config, tls: T, store: Weak<Inner>)
where
    T: MakeTlsConnect<Socket> + Clone + Send + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let mut pause = Duration::from_millis(100);
    while store.strong_count() > 0 {
        match listen(&config, tls.clone(), &store).await {
            Ok(()) => pause = Duration::from_millis(100),
            Err(error) => {
                tracing::warn!(%error, "lost the store's event notifications; reconnecting");
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
        tokio::time::sleep(pause).await;
    }
}

async fn listen<T>(config: &tokio_postgres::Config, tls: T, store: &Weak<Inner>) -> Result<(), tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket> + Send + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut connection) = config.connect(tls).await?;
    let (notices, mut received) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|context| connection.poll_message(context)).await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if notices.send(notification.payload().parse::<u64>().ok()).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // What committed before the LISTEN took effect.
    let newest = client.query_one("SELECT next_event - 1 FROM posbridge_meta", &[]).await?.get::<_, i64>(0);
    match store.upgrade() {
        Some(inner) => inner.announce(newest as u64),
        None => return Ok(()),
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            notice = received.recv() => {
                let Some(id) = notice else { break };
                let Some(inner) = store.upgrade() else { return Ok(()) };
                if let Some(id) = id {
                    inner.announce(id);
                }
            }
            // A quiet connection is asked something now and then: a dead one fails
            // here and is replaced.
            _ = heartbeat.tick() => {
                client.simple_query("SELECT 1").await?;
            }
        }
    }
    drop(client);
    driver.await.unwrap_or(Ok(()))
}

type Transaction<'a> = deadpool_postgres::Transaction<'a>;

/// One statement of a change, to be pipelined with the others.
type Step<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'a>>;

async fn release(transaction: &Transaction<'_>, receipt: &str) -> Result<(), StoreError> {
    let statement = transaction.prepare_cached("DELETE FROM posbridge_receipts WHERE receipt = $1").await.map_err(classify)?;
    transaction.execute(&statement, &[&receipt]).await.map_err(classify)?;
    Ok(())
}

/// Runs `sql` once per row, all sent together: the connection pipelines them (one round
/// trip in all, not one per row).
async fn insert_all(transaction: &Transaction<'_>, sql: &str, rows: &Rows) -> Result<(), StoreError> {
    let statement = transaction.prepare_cached(sql).await.map_err(classify)?;
    let values = rows.values();
    let inserts = values.iter().map(|values| {
        let statement = &statement;
        async move { transaction.execute(statement, &parameters(values)).await }
    });
    futures_util::future::try_join_all(inserts).await.map_err(classify)?;
    Ok(())
}

async fn reserve(transaction: &Transaction<'_>, receipt: &str, payment: &PaymentId) -> Result<(), StoreError> {
    let statement = transaction
        .prepare_cached(
            "INSERT INTO posbridge_receipts AS held (receipt, payment) VALUES ($1, $2) \
             ON CONFLICT (receipt) DO UPDATE SET payment = held.payment RETURNING payment",
        )
        .await
        .map_err(classify)?;
    let holder: String = transaction.query_one(&statement, &[&receipt, &payment.as_str()]).await.map_err(classify)?.get(0);
    if holder != payment.as_str() {
        let holder = PaymentId::parse(&holder).unwrap_or_else(|| payment.clone());
        return Err(StoreError::ReceiptTaken { transaction_id: receipt.to_string(), payment: holder });
    }
    Ok(())
}

/// Inserts a payment unless its id is stored (a new payment; a copied one).
const INSERT_PAYMENT: &str = "INSERT INTO posbridge_payments (id, register, reference, status, method, currency, amount, \
     captured_amount, refunded_amount, split_reserved_amount, split_of, open, created_at, version, record) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, to_timestamp($13::double precision / 1000), $14, $15) \
     ON CONFLICT (id) DO NOTHING";

/// Replaces a stored payment with a newer version of it.
const UPDATE_PAYMENT: &str = "UPDATE posbridge_payments SET register = $2, reference = $3, status = $4, method = $5, \
     currency = $6, amount = $7, captured_amount = $8, refunded_amount = $9, split_reserved_amount = $10, split_of = $11, \
     open = $12, created_at = to_timestamp($13::double precision / 1000), version = $14, record = $15 \
     WHERE id = $1 AND version < $14 AND version = COALESCE($16, version)";

type Values<'a> = Vec<Box<dyn ToSql + Sync + Send + 'a>>;

/// Records copied from another store, of one kind.
pub(super) enum Rows {
    Payments(Vec<Payment>),
    Refunds(Vec<Refund>),
    /// Receipt → the payment holding it.
    Receipts(Vec<(String, String)>),
    Idempotency(Vec<(String, IdempotencyRecord)>),
    Events(Vec<Event>),
}

impl Rows {
    /// Each record's row, in its insert's parameter order.
    fn values(&self) -> Vec<Values<'_>> {
        match self {
            Rows::Payments(payments) => payments.iter().map(payment_values).collect(),
            Rows::Refunds(refunds) => refunds.iter().map(|refund| refund_values(refund, None)).collect(),
            Rows::Receipts(receipts) => receipts
                .iter()
                .map(|(receipt, payment)| vec![Box::new(receipt.as_str()) as Box<dyn ToSql + Sync + Send>, Box::new(payment.as_str())])
                .collect(),
            Rows::Idempotency(records) => records
                .iter()
                .map(|(key, record)| {
                    vec![Box::new(key.as_str()) as Box<dyn ToSql + Sync + Send>, Box::new(record.created_at), Box::new(Json(record))]
                })
                .collect(),
            Rows::Events(events) => events
                .iter()
                .map(|event| {
                    vec![
                        Box::new(event.id as i64) as Box<dyn ToSql + Sync + Send>,
                        Box::new(event.kind.as_str()),
                        Box::new(event.at),
                        Box::new(&event.data),
                    ]
                })
                .collect(),
        }
    }
}

/// A payment's row, in the order of [`INSERT_PAYMENT`]'s and [`UPDATE_PAYMENT`]'s parameters.
fn payment_values(payment: &Payment) -> Values<'_> {
    vec![
        Box::new(payment.id.as_str()),
        Box::new(payment.register.as_str()),
        Box::new(payment.reference.as_deref()),
        Box::new(payment.status.as_str()),
        Box::new(payment.method.as_str()),
        Box::new(payment.currency.as_str()),
        Box::new(payment.amount.0 as i64),
        Box::new(payment.captured_amount.0 as i64),
        Box::new(payment.refunded_amount.0 as i64),
        Box::new(payment.split_reserved_amount.0 as i64),
        Box::new(payment.split_of.as_ref().map(PaymentId::as_str)),
        Box::new(index::is_open(payment)),
        Box::new(payment.created_at as f64),
        Box::new(payment.version as i64),
        Box::new(Json(payment)),
    ]
}

/// Inserts a new payment or updates a stored one over an older version.
async fn write_payment(transaction: &Transaction<'_>, payment: &Payment, read_version: Option<u64>) -> Result<(), StoreError> {
    let sql = if payment.version <= 1 { INSERT_PAYMENT } else { UPDATE_PAYMENT };
    let statement = transaction.prepare_cached(sql).await.map_err(classify)?;
    let mut values = payment_values(payment);
    if payment.version > 1 {
        // The version the change was computed from: the update lands only over it.
        values.push(Box::new(read_version.map(|version| version as i64)));
    }
    let written = transaction.execute(&statement, &parameters(&values)).await.map_err(classify)?;
    if written == 1 {
        return Ok(());
    }
    let stored =
        transaction.query_opt("SELECT version FROM posbridge_payments WHERE id = $1", &[&payment.id.as_str()]).await.map_err(classify)?;
    Err(match stored {
        // Read before a retention sweep removed it: never bring it back.
        None => StoreError::Gone(payment.id.clone()),
        Some(_) => StoreError::Conflict(payment.id.clone()),
    })
}

/// A refund's row: its payment's register comes from the commit (`$3`) or the stored
/// payment.
const INSERT_REFUND: &str = "INSERT INTO posbridge_refunds (id, payment, register, status, amount, currency, created_at, record) \
     VALUES ($1, $2, COALESCE($3, (SELECT register FROM posbridge_payments WHERE id = $2)), $4, $5, $6, \
             to_timestamp($7::double precision / 1000), $8)";

fn refund_values<'a>(refund: &'a Refund, register: Option<&'a str>) -> Values<'a> {
    vec![
        Box::new(refund.id.as_str()),
        Box::new(refund.payment.as_ref().map(PaymentId::as_str)),
        Box::new(register),
        Box::new(refund.status.as_str()),
        Box::new(refund.amount.0 as i64),
        Box::new(refund.currency.as_str()),
        Box::new(refund.created_at as f64),
        Box::new(Json(refund)),
    ]
}

/// Inserts or replaces a refund, with its payment's register (staged in the same commit,
/// or stored).
async fn write_refund(transaction: &Transaction<'_>, commit: &Commit, refund: &Refund) -> Result<(), StoreError> {
    let staged_register = refund
        .payment
        .as_ref()
        .and_then(|id| commit.payments.iter().find(|payment| &payment.id == id))
        .map(|payment| payment.register.as_str());
    let sql = format!(
        "{INSERT_REFUND} ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, amount = EXCLUDED.amount, record = EXCLUDED.record"
    );
    let statement = transaction.prepare_cached(&sql).await.map_err(classify)?;
    let values = refund_values(refund, staged_register);
    transaction.execute(&statement, &parameters(&values)).await.map_err(classify)?;
    Ok(())
}

async fn write_idempotency(transaction: &Transaction<'_>, key: &str, record: Option<&IdempotencyRecord>) -> Result<(), StoreError> {
    match record {
        Some(record) => {
            let statement = transaction
                .prepare_cached(
                    "INSERT INTO posbridge_idempotency (key, created_at, record) VALUES ($1, $2, $3) \
                     ON CONFLICT (key) DO UPDATE SET created_at = EXCLUDED.created_at, record = EXCLUDED.record",
                )
                .await
                .map_err(classify)?;
            transaction.execute(&statement, &[&key, &record.created_at, &Json(record)]).await.map_err(classify)?;
        }
        None => {
            let statement = transaction.prepare_cached("DELETE FROM posbridge_idempotency WHERE key = $1").await.map_err(classify)?;
            transaction.execute(&statement, &[&key]).await.map_err(classify)?;
        }
    }
    Ok(())
}

/// Appends the commit's events under the counter row's lock (held to the commit) and
/// announces the newest to every listening daemon when the transaction commits.
async fn append_events(transaction: &Transaction<'_>, drafts: &[(String, serde_json::Value)]) -> Result<Vec<Event>, StoreError> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    // One statement: take the ids from the counter (its row lock orders the commits),
    // write the events, and announce the newest to every listening daemon at commit.
    let append = transaction
        .prepare_cached(
            "WITH counter AS (UPDATE posbridge_meta SET next_event = next_event + cardinality($1::text[]) \
                              RETURNING next_event - cardinality($1::text[]) AS first), \
                  written AS (INSERT INTO posbridge_journal (id, kind, at, data) \
                              SELECT counter.first + e.position - 1, e.kind, $3, e.data \
                              FROM counter, unnest($1::text[], $2::jsonb[]) WITH ORDINALITY AS e(kind, data, position) \
                              RETURNING id) \
             SELECT min(id), max(id), pg_notify($4, max(id)::text)::text FROM written",
        )
        .await
        .map_err(classify)?;
    let at = now_ms();
    let kinds: Vec<&str> = drafts.iter().map(|(kind, _)| kind.as_str()).collect();
    let data: Vec<&serde_json::Value> = drafts.iter().map(|(_, data)| data).collect();
    let row = transaction.query_one(&append, &[&kinds, &data, &at, &CHANNEL]).await.map_err(classify)?;
    let first = row.get::<_, i64>(0) as u64;
    Ok(drafts
        .iter()
        .enumerate()
        .map(|(offset, (kind, data))| Event { id: first + offset as u64, kind: kind.clone(), at, data: data.clone() })
        .collect())
}

/// A newest-first read of records by index: the conditions of the indexes asked (any
/// of them), narrowed by id bounds, with the parameters they bind.
struct IndexQuery<'a> {
    conditions: String,
    values: Values<'a>,
}

impl<'a> IndexQuery<'a> {
    /// Records matching any of `indexes`, each turned into its condition by `condition`
    /// (which binds its values through the query).
    fn matching_any<I: Copy>(indexes: &[I], condition: impl Fn(I, &mut IndexQuery<'a>) -> String) -> IndexQuery<'a> {
        let mut query = IndexQuery { conditions: String::new(), values: Vec::new() };
        let any: Vec<String> = indexes.iter().map(|index| condition(*index, &mut query)).collect();
        query.conditions = if any.is_empty() { "false".into() } else { format!("({})", any.join(" OR ")) };
        query
    }

    /// Binds `value` as the next parameter: its placeholder.
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'a) -> String {
        self.values.push(Box::new(value));
        format!("${}", self.values.len())
    }

    /// Keeps only ids `compared` (`>=`, `<`) to `id`, when given.
    fn id(&mut self, compared: &str, id: Option<String>) {
        if let Some(id) = id {
            let placeholder = self.bind(id);
            self.conditions += &format!(" AND id {compared} {placeholder}");
        }
    }

    /// Up to `limit` records of `table`, newest first.
    async fn records<T: for<'de> serde::Deserialize<'de>>(
        mut self,
        client: &deadpool_postgres::Object,
        table: &str,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        let limit = self.bind(limit_of(limit));
        let sql = format!("SELECT record FROM {table} WHERE {} ORDER BY id DESC LIMIT {limit}", self.conditions);
        let rows = client.query(&sql, &parameters(&self.values)).await.map_err(classify)?;
        Ok(rows.into_iter().map(|row| row.get::<_, Json<T>>(0).0).collect())
    }
}

/// The condition a payment index stands for.
fn payment_condition<'a>(index: PaymentIndex<'a>, query: &mut IndexQuery<'a>) -> String {
    match index {
        PaymentIndex::All => "true".to_string(),
        PaymentIndex::Reference(reference) => format!("reference = {}", query.bind(reference)),
        PaymentIndex::Register(register) => format!("register = {}", query.bind(register)),
        PaymentIndex::Status(status) => format!("status = {}", query.bind(status.as_str())),
        PaymentIndex::RegisterStatus(register, status) => {
            format!("(register = {} AND status = {})", query.bind(register), query.bind(status.as_str()))
        }
        PaymentIndex::LegsOf(parent) => format!("split_of = {}", query.bind(parent.as_str())),
        PaymentIndex::Open => "open".to_string(),
        PaymentIndex::Exceptions => format!("({})", postgres_schema::EXCEPTION_CONDITION),
    }
}

/// The condition a refund index stands for.
fn refund_condition<'a>(index: RefundIndex<'a>, query: &mut IndexQuery<'a>) -> String {
    match index {
        RefundIndex::All => "true".to_string(),
        RefundIndex::OfPayment(payment) => format!("payment = {}", query.bind(payment.as_str())),
        RefundIndex::OfRegister(register) => format!("register = {}", query.bind(register)),
        RefundIndex::Pending => "status = 'pending'".to_string(),
    }
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn parameters<'a>(values: &'a [Box<dyn ToSql + Sync + Send + 'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    values.iter().map(|value| value.as_ref() as &(dyn ToSql + Sync)).collect()
}

impl Backend for PostgresStore {
    async fn unique(&self) -> Result<u64, StoreError> {
        {
            let mut block = self.inner.ids.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if block.0 < block.1 {
                block.0 += 1;
                return Ok(block.0 - 1);
            }
        }
        let client = self.client().await?;
        let start = client.query_one("SELECT nextval('posbridge_ids')", &[]).await.map_err(classify)?.get::<_, i64>(0) as u64;
        let mut block = self.inner.ids.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *block = (start + 1, start + ID_BLOCK);
        Ok(start)
    }

    async fn commit(&self, commit: &Commit) -> Result<Vec<Event>, StoreError> {
        self.write(commit).await
    }

    async fn import(&self, commit: &Commit) -> Result<(), StoreError> {
        self.write(commit).await.map(drop)
    }

    async fn settled(&self) -> Result<(), StoreError> {
        // Whatever a read sees is committed, hence durable.
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn payment(&self, id: &PaymentId) -> Result<Option<Payment>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached("SELECT record FROM posbridge_payments WHERE id = $1").await.map_err(classify)?;
        let row = client.query_opt(&statement, &[&id.as_str()]).await.map_err(classify)?;
        Ok(row.map(|row| row.get::<_, Json<Payment>>(0).0))
    }

    async fn refund(&self, id: &RefundId) -> Result<Option<Refund>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached("SELECT record FROM posbridge_refunds WHERE id = $1").await.map_err(classify)?;
        let row = client.query_opt(&statement, &[&id.as_str()]).await.map_err(classify)?;
        Ok(row.map(|row| row.get::<_, Json<Refund>>(0).0))
    }

    async fn payments(&self, indexes: &[PaymentIndex<'_>], window: &Window, limit: usize) -> Result<Vec<Payment>, StoreError> {
        let mut query = IndexQuery::matching_any(indexes, payment_condition);
        query.id(">=", window.from.map(|from| PaymentId::first_at(from).to_string()));
        query.id("<", window.to.map(|to| PaymentId::first_at(to.saturating_add(1)).to_string()));
        query.id("<", window.before.clone());
        query.records(&self.client().await?, "posbridge_payments", limit).await
    }

    async fn refunds(&self, indexes: &[RefundIndex<'_>], before: Option<&str>, limit: usize) -> Result<Vec<Refund>, StoreError> {
        let mut query = IndexQuery::matching_any(indexes, refund_condition);
        query.id("<", before.map(str::to_string));
        query.records(&self.client().await?, "posbridge_refunds", limit).await
    }

    async fn redeemed_by(&self, transaction_id: &str) -> Result<Option<PaymentId>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached("SELECT payment FROM posbridge_receipts WHERE receipt = $1").await.map_err(classify)?;
        let row = client.query_opt(&statement, &[&transaction_id]).await.map_err(classify)?;
        Ok(row.and_then(|row| PaymentId::parse(row.get::<_, &str>(0))))
    }

    async fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached("SELECT record FROM posbridge_idempotency WHERE key = $1").await.map_err(classify)?;
        let row = client.query_opt(&statement, &[&key]).await.map_err(classify)?;
        Ok(row.map(|row| row.get::<_, Json<IdempotencyRecord>>(0).0))
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT id, kind, at, data FROM posbridge_journal WHERE id > $1 ORDER BY id LIMIT $2")
            .await
            .map_err(classify)?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = client.query(&statement, &[&after, &limit_of(limit)]).await.map_err(classify)?;
        let events: Vec<Event> = rows
            .into_iter()
            .map(|row| Event { id: row.get::<_, i64>(0) as u64, kind: row.get(1), at: row.get(2), data: row.get(3) })
            .collect();
        if let Some(last) = events.last() {
            self.inner.announce(last.id);
        }
        Ok(events)
    }

    async fn oldest_event(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT COALESCE((SELECT min(id) FROM posbridge_journal), (SELECT next_event FROM posbridge_meta))", &[])
            .await
            .map_err(classify)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.last_event.subscribe()
    }

    async fn sweep(&self, cutoffs: &Cutoffs) -> Result<Totals, StoreError> {
        let payments_before = PaymentId::first_at(cutoffs.payments).to_string();
        let refunds_before = RefundId::first_at(cutoffs.payments).to_string();
        let mut payments = 0;
        loop {
            let (removed, more) = self.sweep_payments(&payments_before).await?;
            payments += removed;
            if !more {
                break;
            }
        }
        let refunds = self
            .drain(
                "WITH gone AS (DELETE FROM posbridge_refunds WHERE id IN (SELECT id FROM posbridge_refunds \
                   WHERE id < $1 AND payment IS NULL AND status <> 'pending' ORDER BY id LIMIT $2) RETURNING 1) \
                 SELECT count(*) FROM gone",
                &refunds_before,
            )
            .await?;
        // Only ever a prefix of the journal (the daemons' clocks may differ): everything
        // before the first event written at or after the cutoff.
        let events = self
            .drain(
                "WITH keep AS (SELECT COALESCE((SELECT min(id) FROM posbridge_journal WHERE at >= $1), \
                                               (SELECT next_event FROM posbridge_meta)) AS first), \
                 gone AS (DELETE FROM posbridge_journal WHERE id IN (SELECT id FROM posbridge_journal, keep \
                   WHERE id < keep.first ORDER BY id LIMIT $2) RETURNING 1) SELECT count(*) FROM gone",
                &cutoffs.journal,
            )
            .await?;
        // Leases of work long done or given up by a daemon that stopped.
        let client = self.client().await?;
        client.execute("DELETE FROM posbridge_leases WHERE expires_at < now() - interval '1 hour'", &[]).await.map_err(classify)?;
        let idempotency = self
            .drain(
                "WITH gone AS (DELETE FROM posbridge_idempotency WHERE key IN (SELECT key FROM posbridge_idempotency \
                   WHERE created_at < $1 LIMIT $2) RETURNING 1) SELECT count(*) FROM gone",
                &cutoffs.idempotency,
            )
            .await?;
        Ok(Totals { payments, refunds, events, idempotency })
    }

    async fn logical_sizes(&self) -> Result<Vec<(&'static str, usize, usize)>, StoreError> {
        let client = self.client().await?;
        let mut sizes = Vec::new();
        for (name, table) in [
            ("payments", "posbridge_payments"),
            ("refunds", "posbridge_refunds"),
            ("journal", "posbridge_journal"),
            ("idempotency", "posbridge_idempotency"),
            ("redeemed", "posbridge_receipts"),
        ] {
            let row = client
                .query_one(&format!("SELECT count(*), pg_total_relation_size('{table}') FROM {table}"), &[])
                .await
                .map_err(classify)?;
            sizes.push((name, row.get::<_, i64>(0) as usize, row.get::<_, i64>(1) as usize));
        }
        Ok(sizes)
    }

    async fn health(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.query_one("SELECT 1", &[]).await.map_err(classify)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_sockets_go_without_tls() {
        let local = |url: &str| is_local(&parse_url(url).unwrap());
        assert!(local("postgres://posbridge@localhost/posbridge"));
        assert!(local("postgres://posbridge@127.0.0.1:5432/posbridge"));
        assert!(local("host=/run/postgresql dbname=posbridge"));
        assert!(!local("postgres://posbridge@db.example.com/posbridge"));
        assert!(!local("postgres://posbridge@10.0.0.5/posbridge"));
        let mut remote_plain = parse_url("postgres://posbridge@db.example.com/posbridge?sslmode=disable").unwrap();
        assert!(matches!(tls_for(&mut remote_plain, None), Err(StoreError::Schema(_))), "a remote URL never goes in the clear");
        let mut remote = parse_url("postgres://posbridge@db.example.com/posbridge").unwrap();
        assert!(tls_for(&mut remote, None).unwrap().is_some());
        assert_eq!(remote.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn a_ca_file_adds_its_certificates_and_anything_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/testdata/test-ca.pem");
        assert_eq!(read_ca_file(&ca).unwrap().len(), 1);
        let mut remote = parse_url("postgres://posbridge@db.example.com/posbridge").unwrap();
        assert!(tls_for(&mut remote, Some(&ca)).unwrap().is_some());
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "not a certificate\n").unwrap();
        assert!(read_ca_file(&not_pem).unwrap_err().contains("holds no certificate"));
        assert!(read_ca_file(&dir.path().join("missing.pem")).unwrap_err().contains("cannot read"));
        assert!(matches!(tls_for(&mut remote, Some(&not_pem)), Err(StoreError::Schema(_))));
    }

    #[test]
    fn a_lost_connection_is_unavailable_and_a_refusal_is_a_database_error() {
        assert!(is_connection_state("08006"));
        assert!(is_connection_state("57P01"));
        assert!(!is_connection_state("23505"));
    }
}
