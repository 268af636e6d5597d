//! API keys: made, revoked, and recognised on every request.
//!
//! A secret is 256 random bits, shown once when the key is made; the database keeps only its
//! SHA-256. Each API process holds every key in use in memory ([`KeyRing`]) and reloads them
//! every second, so a request costs no query to authenticate, a new key works everywhere within
//! a second, and a revoked one stops within a second. A process that cannot reload for
//! [`TRUST_FOR`] stops trusting what it holds and refuses keyed requests until it can: a
//! revocation is never missed for longer than that.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use platform::{config::Secret, shutdown::Shutdown};
use poem_openapi::{Object, types::Example};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tokio::time::Instant;
use uuid::Uuid;

use super::{Caller, Role};
use crate::error::{Error, OnConstraint, Result};
use crate::http::example;

/// How often each process reloads the keys in use.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// How long a process trusts keys it could not reload: the bound on a revocation's delay.
pub const TRUST_FOR: Duration = Duration::from_secs(5);

/// Generated secrets start with this, so that they are recognisable in a config file or a leak.
const SECRET_PREFIX: &str = "dsk_";
/// Characters of a secret kept in clear, to tell keys apart.
const SHOWN_CHARS: usize = 8;

type Sha = [u8; 32];

fn digest(secret: &str) -> Sha {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new secret: `dsk_` and 256 random bits in URL-safe base64.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    format!("{SECRET_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A key, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Object)]
#[oai(example)]
pub struct ApiKey {
    pub id: Uuid,
    /// Who holds it; the timeline and the audit name it.
    pub name: String,
    pub role: Role,
    /// The first characters of the secret, to tell keys apart.
    pub secret_prefix: String,
    pub created_at: DateTime<Utc>,
    /// The admin key that made it; null for keys made at start-up.
    #[oai(nullable)]
    pub created_by: Option<Uuid>,
    /// When it stopped working; null while it works.
    #[oai(nullable)]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Example for ApiKey {
    fn example() -> Self {
        Self {
            id: example::KEY,
            name: "picker-app".into(),
            role: Role::Client,
            secret_prefix: "dsk_Hq3Z".into(),
            created_at: example::at(8),
            created_by: Some(example::KEY),
            revoked_at: None,
        }
    }
}

/// A key just made, with its secret: the only time the secret is seen.
#[derive(Debug)]
pub struct NewKey {
    pub record: ApiKey,
    pub secret: String,
}

struct Row {
    id: Uuid,
    name: String,
    role: String,
    secret_prefix: String,
    created_at: DateTime<Utc>,
    created_by: Option<Uuid>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<Row> for ApiKey {
    type Error = sqlx::Error;

    fn try_from(row: Row) -> sqlx::Result<Self> {
        Ok(Self {
            role: parse_role(&row.role)?,
            id: row.id,
            name: row.name,
            secret_prefix: row.secret_prefix,
            created_at: row.created_at,
            created_by: row.created_by,
            revoked_at: row.revoked_at,
        })
    }
}

fn parse_role(role: &str) -> sqlx::Result<Role> {
    role.parse().map_err(|_| sqlx::Error::Decode(format!("unknown role {role:?} in api_key").into()))
}

fn name_in_use(name: &str) -> impl FnOnce(&str) -> Option<Error> + '_ {
    move |constraint| {
        (constraint == "api_key_name_in_use")
            .then(|| Error::Conflict(format!("a key named {name:?} is in use; revoke it first or choose another name")))
    }
}

/// Makes a key with a fresh secret.
pub async fn create(tx: &mut PgConnection, name: &str, role: Role, created_by: Option<Uuid>) -> Result<NewKey> {
    let secret = generate_secret();
    let record = insert(tx, name, role, &secret, created_by).await?;
    Ok(NewKey { record, secret })
}

async fn insert(
    tx: &mut PgConnection,
    name: &str,
    role: Role,
    secret: &str,
    created_by: Option<Uuid>,
) -> Result<ApiKey> {
    let row = sqlx::query_as!(
        Row,
        "INSERT INTO api_key (id, name, role, secret_sha256, secret_prefix, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, name, role, secret_prefix, created_at, created_by, revoked_at",
        Uuid::new_v4(),
        name,
        role.as_ref(),
        &digest(secret)[..],
        secret.chars().take(SHOWN_CHARS).collect::<String>(),
        created_by
    )
    .fetch_one(tx)
    .await
    .on_constraint(name_in_use(name))?;
    Ok(row.try_into()?)
}

/// Keys by id, from `after` on; revoked ones too.
pub async fn list(conn: &mut PgConnection, after: Uuid, limit: i64) -> sqlx::Result<Vec<ApiKey>> {
    sqlx::query_as!(
        Row,
        "SELECT id, name, role, secret_prefix, created_at, created_by, revoked_at
         FROM api_key WHERE id > $1 ORDER BY id LIMIT $2",
        after,
        limit
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(ApiKey::try_from)
    .collect()
}

/// Revokes a key; revoking it again changes nothing. The last admin key in use cannot be revoked:
/// nobody could make keys any more.
pub async fn revoke(tx: &mut PgConnection, id: Uuid, by: Uuid) -> Result<ApiKey> {
    // Serializes revocations, so that two admins cannot each revoke the other's last key.
    sqlx::query!("LOCK TABLE api_key IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
    let key = sqlx::query_as!(
        Row,
        "SELECT id, name, role, secret_prefix, created_at, created_by, revoked_at FROM api_key WHERE id = $1",
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::NotFound(format!("no API key {id}")))?;
    let key = ApiKey::try_from(key)?;
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    if key.role == Role::Admin {
        let admins =
            sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM api_key WHERE role = 'admin' AND revoked_at IS NULL"#)
                .fetch_one(&mut *tx)
                .await?;
        if admins <= 1 {
            return Err(Error::Conflict(
                "this is the last admin key in use; make another admin key before revoking it".into(),
            ));
        }
    }
    let row = sqlx::query_as!(
        Row,
        "UPDATE api_key SET revoked_at = now(), revoked_by = $2 WHERE id = $1
         RETURNING id, name, role, secret_prefix, created_at, created_by, revoked_at",
        id,
        by
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(row.try_into()?)
}

/// What start-up did about keys.
#[derive(Debug)]
pub enum Bootstrap {
    /// `BOOTSTRAP_ADMIN_KEY` is a key in use.
    Configured,
    /// `BOOTSTRAP_ADMIN_KEY` names a key that was revoked; it stays revoked.
    ConfiguredButRevoked,
    /// No key existed at all: this admin key was made, to be shown once.
    Created(NewKey),
    /// Keys exist; nothing to do.
    Nothing,
}

/// Makes sure someone can administer the deployment: the configured bootstrap secret becomes an
/// admin key, or, in a deployment with no key at all, a new admin key is made to be shown once.
/// Safe when several processes start at once.
pub async fn bootstrap(pool: &PgPool, configured: Option<&Secret>) -> Result<Bootstrap> {
    let mut tx = pool.begin().await?;
    // One starting process at a time decides, so that two cannot both find the table empty.
    sqlx::query!("LOCK TABLE api_key IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
    let outcome = match configured {
        Some(Secret(secret)) => {
            let sha = digest(secret);
            let revoked =
                sqlx::query_scalar!("SELECT revoked_at IS NOT NULL FROM api_key WHERE secret_sha256 = $1", &sha[..])
                    .fetch_optional(&mut *tx)
                    .await?;
            match revoked {
                Some(Some(true)) => Bootstrap::ConfiguredButRevoked,
                Some(_) => Bootstrap::Configured,
                None => {
                    // Named after its hash: a changed secret is a new key, never a clash.
                    let name = format!("bootstrap-{}", &hex(&sha)[..8]);
                    insert(&mut tx, &name, Role::Admin, secret, None).await?;
                    Bootstrap::Configured
                }
            }
        }
        None => {
            let any =
                sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM api_key) AS "any!""#).fetch_one(&mut *tx).await?;
            if any {
                Bootstrap::Nothing
            } else {
                Bootstrap::Created(create(&mut tx, "admin", Role::Admin, None).await?)
            }
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The keys in use, held by each API process.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    inner: Arc<RwLock<Snapshot>>,
}

#[derive(Debug, Default)]
struct Snapshot {
    keys: HashMap<Sha, Arc<Caller>>,
    /// When the keys were last read from the database; `None` before the first read.
    loaded_at: Option<Instant>,
}

/// The process cannot vouch for keys now: it has not reloaded them for [`TRUST_FOR`].
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("API keys could not be reloaded from the database lately")]
pub struct Untrusted;

impl KeyRing {
    /// The holder of `secret`, if it is a key in use.
    pub fn find(&self, secret: &str) -> Result<Option<Arc<Caller>>, Untrusted> {
        let snapshot = self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        match snapshot.loaded_at {
            Some(at) if at.elapsed() <= TRUST_FOR => Ok(snapshot.keys.get(&digest(secret)).cloned()),
            _ => Err(Untrusted),
        }
    }

    /// Reads every key in use from the database.
    pub async fn reload(&self, pool: &PgPool) -> sqlx::Result<()> {
        let started = Instant::now();
        let rows = sqlx::query!("SELECT id, name, role, secret_sha256 FROM api_key WHERE revoked_at IS NULL")
            .fetch_all(pool)
            .await?;
        let mut keys = HashMap::with_capacity(rows.len());
        for row in rows {
            let Ok(sha) = Sha::try_from(row.secret_sha256.as_slice()) else { continue };
            keys.insert(sha, Arc::new(Caller { key_id: row.id, name: row.name, role: parse_role(&row.role)? }));
        }
        let mut snapshot = self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *snapshot = Snapshot { keys, loaded_at: Some(started) };
        Ok(())
    }

    /// Forgets a key at once in this process (the others follow at their next reload).
    pub fn forget(&self, key_id: Uuid) {
        let mut snapshot = self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        snapshot.keys.retain(|_, caller| caller.key_id != key_id);
    }

    /// Reloads every [`RELOAD_EVERY`] until shutdown, the first time one period after the load
    /// made at start-up.
    pub async fn run(self, pool: PgPool, mut shutdown: Shutdown) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(RELOAD_EVERY) => {}
            }
            match self.reload(&pool).await {
                Ok(()) if failing => {
                    tracing::info!("API keys reloaded again");
                    failing = false;
                }
                Ok(()) => {}
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "API keys could not be reloaded; keyed requests are refused after {} s", TRUST_FOR.as_secs());
                    }
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_recognisable() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("dsk_") && a.len() == 4 + 43, "{a}");
        assert!(platform::config::valid_secret(&a), "a generated secret passes the rule for configured ones");
    }

    #[test]
    fn a_ring_never_loaded_vouches_for_nobody() {
        assert!(KeyRing::default().find("anything").is_err());
    }
}
