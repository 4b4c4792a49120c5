//! Storage plumbing shared by every tuikuan service.
//!
//! Layout:
//! - [`AnyConnection`]: one diesel connection type over SQLite (the embedded default) and PostgreSQL,
//!   so each service's store is written once;
//! - [`Db`]: a connection pool plus [`Db::run`], which runs blocking diesel work off the async runtime
//!   and maps storage errors to [`tuikuan_kernel::Error`];
//! - [`Db::migrate`]: each service embeds its own portable migrations and runs them at start;
//! - [`testing`]: throw-away databases for tests, on SQLite or on a PostgreSQL server.
//!
//! Portability rules for migrations and queries: ids are TEXT made by the application, money is
//! BIGINT minor units, instants are BIGINT milliseconds since the epoch, booleans are INTEGER 0/1.
//! Concurrency guards are conditional `UPDATE ... WHERE` statements whose affected-row count
//! decides, which behave the same on both databases.

pub mod testing;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{CustomizeConnection, Pool, PooledConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use tuikuan_kernel::{Error, ErrorCode};

/// A connection to either database. Stores take `&mut AnyConnection`.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database URL is either `postgres://…` / `postgresql://…` or an SQLite path, optionally written
/// `sqlite://path`.
pub fn backend_of(url: &str) -> Backend {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://").unwrap_or(url)
}

#[derive(Debug)]
struct Manager {
    url: String,
    backend: Backend,
}

impl r2d2::ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<AnyConnection, Self::Error> {
        match self.backend {
            Backend::Postgres => diesel::PgConnection::establish(&self.url)
                .map(AnyConnection::Postgresql)
                .map_err(diesel::r2d2::Error::ConnectionError),
            Backend::Sqlite => diesel::SqliteConnection::establish(sqlite_path(&self.url))
                .map(AnyConnection::Sqlite)
                .map_err(diesel::r2d2::Error::ConnectionError),
        }
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), Self::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, _conn: &mut AnyConnection) -> bool {
        false
    }
}

#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<AnyConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut AnyConnection) -> Result<(), diesel::r2d2::Error> {
        if let AnyConnection::Sqlite(c) = conn {
            c.batch_execute(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
            )
            .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// A pooled database handle. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Pool<Manager>,
    backend: Backend,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Db {
    /// Opens a pool. SQLite gets a single connection (one writer at a time is SQLite's model, and
    /// serialising here avoids busy errors); PostgreSQL gets `max_connections`.
    pub fn connect(url: &str, max_connections: u32) -> Result<Db, Error> {
        let backend = backend_of(url);
        if backend == Backend::Sqlite {
            let path = std::path::Path::new(sqlite_path(url));
            if let Some(parent) = path.parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        Error::storage(format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
            }
        }
        let size = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => max_connections.max(1),
        };
        let pool = Pool::builder()
            .max_size(size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(30))
            .connection_customizer(Box::new(SqlitePragmas))
            .build(Manager {
                url: url.to_string(),
                backend,
            })
            .map_err(|e| Error::storage(format!("cannot open database: {e}")))?;
        Ok(Db { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn get(&self) -> Result<PooledConnection<Manager>, Error> {
        self.pool
            .get()
            .map_err(|e| Error::storage(format!("no database connection: {e}")))
    }

    /// Runs the service's embedded migrations (idempotent).
    pub fn migrate(&self, migrations: EmbeddedMigrations) -> Result<(), Error> {
        let mut conn = self.get()?;
        let result = match &mut *conn {
            AnyConnection::Postgresql(c) => c.run_pending_migrations(migrations).map(|_| ()),
            AnyConnection::Sqlite(c) => c.run_pending_migrations(migrations).map(|_| ()),
        };
        result.map_err(|e| Error::storage(format!("migration failed: {e}")))
    }

    /// Runs blocking diesel work on the blocking pool. The closure gets a connection and returns
    /// kernel errors; diesel errors convert with `?` through [`storage_error`].
    pub async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut AnyConnection) -> Result<T, Error> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.get()?;
            f(&mut conn)
        })
        .await
        .map_err(|e| Error::internal(format!("storage task failed: {e}")))?
    }

    /// Runs `f` inside one database transaction.
    pub async fn transaction<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut AnyConnection) -> Result<T, Error> + Send + 'static,
    {
        self.run(move |conn| {
            conn.transaction::<T, TxError, _>(|c| f(c).map_err(TxError::Kernel))
                .map_err(|e| match e {
                    TxError::Kernel(e) => e,
                    TxError::Diesel(e) => storage_error(e),
                })
        })
        .await
    }
}

/// Error type inside [`Db::transaction`]: diesel's for rollback plumbing, ours for the rest.
#[derive(Debug)]
enum TxError {
    Kernel(Error),
    Diesel(DieselError),
}

impl From<DieselError> for TxError {
    fn from(e: DieselError) -> Self {
        TxError::Diesel(e)
    }
}

/// Maps a diesel error to a kernel storage error.
pub fn storage_error(e: DieselError) -> Error {
    match e {
        DieselError::NotFound => Error::new(ErrorCode::NotFound, "record not found"),
        other => Error::storage(other),
    }
}

/// Whether a diesel error is a unique-constraint violation (an idempotency key seen before).
pub fn is_unique_violation(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

/// Inserts or replaces one row outside a transaction, portably: `update` first; when it touched
/// no row, `insert`; when a concurrent writer inserted the row in between (a unique violation),
/// `update` again, so the last writer wins. Both closures return diesel's affected-row count.
pub fn update_or_insert(
    conn: &mut AnyConnection,
    mut update: impl FnMut(&mut AnyConnection) -> QueryResult<usize>,
    insert: impl FnOnce(&mut AnyConnection) -> QueryResult<usize>,
) -> Result<(), Error> {
    if update(conn).map_err(db_err)? > 0 {
        return Ok(());
    }
    match insert(conn) {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => update(conn).map(|_| ()).map_err(db_err),
        Err(e) => Err(db_err(e)),
    }
}

/// `?`-friendly conversion: `query.execute(conn).map_err(db_err)?`.
pub fn db_err(e: DieselError) -> Error {
    storage_error(e)
}

/// Re-exported so service crates embed migrations without naming diesel_migrations themselves.
pub use diesel_migrations::embed_migrations;
pub use diesel_migrations::EmbeddedMigrations as Migrations;
