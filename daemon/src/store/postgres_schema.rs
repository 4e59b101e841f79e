//! The PostgreSQL store's schema, as numbered migrations embedded in the binary.
//!
//! `posbridge store migrate` applies the missing ones, each in its own transaction, under
//! an advisory lock so two daemons migrating at once take turns. A daemon never migrates
//! by itself: it refuses to start on a schema other than [`CURRENT`] and names the command.
//!
//! Every table is prefixed `posbridge_` so the database can be shared with other
//! software. Ids are `COLLATE "C"`: they sort by bytes, as their creation time is written
//! in them, so an id range is a time range (as in the embedded store).

use tokio_postgres::GenericClient;

use super::StoreError;

/// The schema version this posbridge reads and writes.
pub const CURRENT: i32 = 2;

/// The condition of migration 2's partial index (a payment whose offline receipt the
/// provider refused), written the same way so the planner uses it.
pub const EXCEPTION_CONDITION: &str = "(record -> 'offline' ->> 'state') = 'refused'";

/// Migrations by version: applying number `n` takes a schema from `n - 1` to `n`.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE posbridge_meta (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- The id of the next journal event: updated in every transaction that appends
    -- events, so ids are handed out in commit order, without gaps.
    next_event bigint NOT NULL
);
INSERT INTO posbridge_meta (next_event) VALUES (1);

-- Blocks of unique numbers for payment and refund ids (a daemon takes 1000 at a time).
CREATE SEQUENCE posbridge_ids INCREMENT BY 1000 START WITH 1000;

CREATE TABLE posbridge_payments (
    id                    text COLLATE "C" PRIMARY KEY,
    register              text NOT NULL,
    reference             text,
    status                text NOT NULL,
    method                text NOT NULL,
    currency              text NOT NULL,
    amount                bigint NOT NULL,
    captured_amount       bigint NOT NULL,
    refunded_amount       bigint NOT NULL,
    split_reserved_amount bigint NOT NULL,
    split_of              text COLLATE "C",
    -- Work left: not final, or a compensation under way (resumed by some daemon).
    open                  boolean NOT NULL,
    created_at            timestamptz NOT NULL,
    version               bigint NOT NULL,
    record                jsonb NOT NULL
);
CREATE INDEX posbridge_payments_reference ON posbridge_payments (reference, id) WHERE reference IS NOT NULL;
CREATE INDEX posbridge_payments_register_status ON posbridge_payments (register, status, id);
CREATE INDEX posbridge_payments_status ON posbridge_payments (status, id);
CREATE INDEX posbridge_payments_legs ON posbridge_payments (split_of, id) WHERE split_of IS NOT NULL;
CREATE INDEX posbridge_payments_open ON posbridge_payments (id) WHERE open;
CREATE INDEX posbridge_payments_created ON posbridge_payments (created_at);

CREATE TABLE posbridge_refunds (
    id         text COLLATE "C" PRIMARY KEY,
    payment    text COLLATE "C",
    -- The register of its payment (none for a refund by transaction id alone).
    register   text,
    status     text NOT NULL,
    amount     bigint NOT NULL,
    currency   text NOT NULL,
    created_at timestamptz NOT NULL,
    record     jsonb NOT NULL
);
CREATE INDEX posbridge_refunds_payment ON posbridge_refunds (payment, id) WHERE payment IS NOT NULL;
CREATE INDEX posbridge_refunds_register ON posbridge_refunds (register, id) WHERE register IS NOT NULL;
CREATE INDEX posbridge_refunds_pending ON posbridge_refunds (id) WHERE status = 'pending';

-- The journal: every change, which is also the event stream (`Last-Event-ID`).
CREATE TABLE posbridge_journal (
    id   bigint PRIMARY KEY,
    kind text NOT NULL,
    at   bigint NOT NULL,
    data jsonb NOT NULL
);

CREATE TABLE posbridge_idempotency (
    key        text COLLATE "C" PRIMARY KEY,
    created_at bigint NOT NULL,
    record     jsonb NOT NULL
);
CREATE INDEX posbridge_idempotency_created ON posbridge_idempotency (created_at);

-- A receipt (transaction id or receipt key) is held by one payment at most: the primary
-- key makes two daemons scanning it at once end with one holder.
CREATE TABLE posbridge_receipts (
    receipt text COLLATE "C" PRIMARY KEY,
    payment text COLLATE "C" NOT NULL
);
CREATE INDEX posbridge_receipts_payment ON posbridge_receipts (payment);

-- Who runs a payment's or refund's provider work, until when (database time).
CREATE TABLE posbridge_leases (
    work       text COLLATE "C" PRIMARY KEY,
    owner      text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Reporting: what every till took, per day, method, currency and status.
CREATE VIEW posbridge_payments_by_day AS
SELECT (created_at AT TIME ZONE 'UTC')::date AS day,
       register,
       method,
       currency,
       status,
       count(*)                AS payments,
       sum(captured_amount)    AS captured_amount,
       sum(refunded_amount)    AS refunded_amount
FROM posbridge_payments
GROUP BY 1, 2, 3, 4, 5;
"#,
    ),
    (
        2,
        // Receipts taken offline that the provider later refused: a short list the shop
        // follows up, read without scanning every payment.
        r#"
CREATE INDEX posbridge_payments_exceptions ON posbridge_payments (id) WHERE (record -> 'offline' ->> 'state') = 'refused';
"#,
    ),
];

/// The version the database holds: 0 for an empty database.
pub async fn version(client: &impl GenericClient) -> Result<i32, StoreError> {
    let exists = client
        .query_one("SELECT to_regclass('posbridge_schema') IS NOT NULL", &[])
        .await
        .map_err(super::postgres_store::classify)?
        .get::<_, bool>(0);
    if !exists {
        return Ok(0);
    }
    let row = client.query_one("SELECT version FROM posbridge_schema", &[]).await.map_err(super::postgres_store::classify)?;
    Ok(row.get(0))
}

/// Why a daemon must not use a database at `found`, or `Ok` at [`CURRENT`].
pub fn check(found: i32) -> Result<(), StoreError> {
    match found.cmp(&CURRENT) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(StoreError::Schema(format!(
            "the store's database has schema version {found}; this posbridge needs {CURRENT}: run `posbridge store migrate --config <your config>` (once, from any daemon's machine)"
        ))),
        std::cmp::Ordering::Greater => Err(StoreError::Schema(format!(
            "the store's database has schema version {found}, newer than this posbridge knows ({CURRENT}): upgrade posbridge on this machine"
        ))),
    }
}

/// Applies every missing migration; answers the versions applied (empty: up to date).
pub async fn migrate(client: &mut deadpool_postgres::Client) -> Result<Vec<i32>, StoreError> {
    let classify = super::postgres_store::classify;
    let mut applied = Vec::new();
    for (number, sql) in MIGRATIONS {
        let transaction = client.transaction().await.map_err(classify)?;
        // One migrator at a time, whichever daemon's machine runs it.
        transaction.execute("SELECT pg_advisory_xact_lock(7273627)", &[]).await.map_err(classify)?;
        transaction.batch_execute("CREATE TABLE IF NOT EXISTS posbridge_schema (version integer NOT NULL)").await.map_err(classify)?;
        let found: Option<i32> =
            transaction.query_opt("SELECT version FROM posbridge_schema", &[]).await.map_err(classify)?.map(|row| row.get(0));
        let found = found.unwrap_or(0);
        if found > CURRENT {
            return Err(check(found).unwrap_err());
        }
        if found >= *number {
            continue;
        }
        transaction.batch_execute(sql).await.map_err(classify)?;
        transaction.execute("DELETE FROM posbridge_schema", &[]).await.map_err(classify)?;
        transaction.execute("INSERT INTO posbridge_schema (version) VALUES ($1)", &[number]).await.map_err(classify)?;
        transaction.commit().await.map_err(classify)?;
        applied.push(*number);
    }
    Ok(applied)
}
