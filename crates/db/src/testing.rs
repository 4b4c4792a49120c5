//! Throw-away databases for tests.
//!
//! [`TestDb::sqlite`] makes a database file in a temporary directory. [`TestDb::postgres`] creates a
//! fresh database on the server named by `TUIKUAN_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and drops it afterwards. When no server answers,
//! it returns `None` with a message on a developer's machine, and panics under CI (`CI=true`),
//! where PostgreSQL must run.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// The default administrative URL of the test PostgreSQL server.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A temporary database; removed on drop.
#[derive(Debug)]
pub struct TestDb {
    url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

/// The administrative PostgreSQL URL for tests.
pub fn pg_admin_url() -> String {
    std::env::var("TUIKUAN_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

/// Whether tests run under CI, where every database variant must run.
pub fn under_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

fn with_database(admin_url: &str, name: &str) -> String {
    match admin_url.rfind('/') {
        Some(pos)
            if admin_url[..pos].contains("://") && pos > admin_url.find("://").unwrap_or(0) + 2 =>
        {
            let rest = &admin_url[pos + 1..];
            let query = rest.find('?').map(|q| &rest[q..]).unwrap_or("");
            format!("{}/{}{}", &admin_url[..pos], name, query)
        }
        _ => format!("{admin_url}/{name}"),
    }
}

impl TestDb {
    pub fn sqlite(name: &str) -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = dir.path().join(format!("{name}.db")).display().to_string();
        TestDb {
            url,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A fresh PostgreSQL database, or `None` (with a message) when no server is reachable outside CI.
    pub fn postgres(name: &str) -> Option<TestDb> {
        let admin_url = pg_admin_url();
        let mut admin = match diesel::PgConnection::establish(&admin_url) {
            Ok(c) => c,
            Err(e) => {
                if under_ci() {
                    panic!("CI=true but PostgreSQL at {admin_url} is not reachable: {e}");
                }
                eprintln!(
                    "skipping PostgreSQL variant: no server at {admin_url} ({e}); \
                     set TUIKUAN_TEST_PG_URL or run .ci/run"
                );
                return None;
            }
        };
        let db_name = format!(
            "tk_{}_{}",
            name.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_lowercase(),
            uuid::Uuid::new_v4().simple()
        );
        let db_name: String = db_name.chars().take(63).collect();
        admin
            .batch_execute(&format!("CREATE DATABASE \"{db_name}\""))
            .expect("create test database");
        Some(TestDb {
            url: with_database(&admin_url, &db_name),
            cleanup: Cleanup::Postgres {
                admin_url,
                name: db_name,
            },
        })
    }

    /// One fresh PostgreSQL database per name, sharing a random prefix, plus a URL template with
    /// `{service}` that names them (`…/tk1a2b3c4d_{service}`). `None` as for [`TestDb::postgres`].
    pub fn postgres_set(names: &[&str]) -> Option<(String, Vec<TestDb>)> {
        let admin_url = pg_admin_url();
        let mut admin = match diesel::PgConnection::establish(&admin_url) {
            Ok(c) => c,
            Err(e) => {
                if under_ci() {
                    panic!("CI=true but PostgreSQL at {admin_url} is not reachable: {e}");
                }
                eprintln!(
                    "skipping PostgreSQL variant: no server at {admin_url} ({e}); \
                     set TUIKUAN_TEST_PG_URL or run .ci/run"
                );
                return None;
            }
        };
        let prefix = format!("tk{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut dbs = Vec::new();
        for name in names {
            let db_name = format!("{prefix}_{name}");
            admin
                .batch_execute(&format!("CREATE DATABASE \"{db_name}\""))
                .expect("create test database");
            dbs.push(TestDb {
                url: with_database(&admin_url, &db_name),
                cleanup: Cleanup::Postgres {
                    admin_url: admin_url.clone(),
                    name: db_name,
                },
            });
        }
        Some((
            with_database(&admin_url, &format!("{prefix}_{{service}}")),
            dbs,
        ))
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            if let Ok(mut admin) = diesel::PgConnection::establish(admin_url) {
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_replaces_the_path() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
