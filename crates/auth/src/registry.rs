//! The operator registry and `OperatorService`, hosted by the business layer: operators with
//! roles and argon2id password hashes, the login that issues tokens (the signing key lives here
//! only), and operator management (role admin), every change audited.
//!
//! Times: lockouts and audit entries use the service's clock; token validity uses the system
//! clock (a token's freshness is a security property of real time, whatever day the business
//! clock says it is).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tuikuan_db::Db;
use tuikuan_kernel::{Error, ErrorCode, Result, SharedClock};
use tuikuan_proto::staff::v1 as pb;
use tuikuan_proto::status::grpc_err;

use crate::domain::audit::verb;
use crate::domain::registry::{
    invalid_credentials, validate_name, validate_password, MAX_NAME_LEN, MAX_PASSWORD_CHARS,
};
use crate::domain::{parse_roles, Action, AuditEntry, Operator, OperatorRecord, Role};
use crate::guard::{staff, Staff};
use crate::password::{dummy_hash, hash_password, is_argon2id_hash, verify_password};
use crate::store;
use crate::token::TokenSigner;

const LOGIN_RPC: &str = "/tuikuan.staff.v1.OperatorService/Login";

/// The registry.
#[derive(Clone, Debug)]
pub struct Registry {
    db: Db,
    clock: SharedClock,
    signer: Option<Arc<TokenSigner>>,
}

fn system_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("password task failed: {e}")))
}

fn describe(r: &OperatorRecord) -> String {
    format!(
        "{} roles={} {}",
        r.name,
        r.roles
            .iter()
            .map(|x| x.as_str())
            .collect::<Vec<_>>()
            .join(","),
        if r.enabled { "enabled" } else { "disabled" }
    )
}

impl Registry {
    /// The registry on the business layer's migrated database; without a signer nobody can log
    /// in (every other service only verifies).
    pub fn new(db: Db, clock: SharedClock, signer: Option<TokenSigner>) -> Registry {
        Registry {
            db,
            clock,
            signer: signer.map(Arc::new),
        }
    }

    /// Creates the first administrator from a configured argon2id hash when the registry is
    /// empty; `true` when it did.
    pub async fn bootstrap(&self, name: &str, password_hash: &str) -> Result<bool> {
        validate_name(name).map_err(|e| Error::field("bootstrap_admin", e.message))?;
        if !is_argon2id_hash(password_hash) {
            return Err(Error::field(
                "bootstrap_admin_password_hash",
                "not an argon2id PHC string (make one with `tuikuan operator hash-password`)",
            ));
        }
        let now = self.clock.now_ms();
        let record = OperatorRecord {
            name: name.to_string(),
            roles: vec![Role::Admin],
            password_hash: password_hash.to_string(),
            enabled: true,
            failed_logins: 0,
            locked_until_ms: 0,
            created_at_ms: now,
            updated_at_ms: now,
            password_changed_at_ms: now,
        };
        let created = self
            .db
            .transaction(move |c| {
                if store::count_operators(c)? > 0 {
                    return Ok(false);
                }
                store::insert_operator(c, &record)
            })
            .await?;
        if created {
            tracing::warn!(
                operator = name,
                "bootstrap: created the first administrator"
            );
        }
        Ok(created)
    }

    /// Adds an operator directly (the demo's and tests' own operators; the bootstrap path).
    pub async fn add(&self, name: &str, roles: &[Role], password: &str) -> Result<OperatorRecord> {
        validate_name(name)?;
        validate_password(password, "password")?;
        if roles.is_empty() {
            return Err(Error::field("roles", "at least one role is required"));
        }
        let pw = password.to_string();
        let hash = blocking(move || hash_password(&pw)).await??;
        let now = self.clock.now_ms();
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        let record = OperatorRecord {
            name: name.to_string(),
            roles,
            password_hash: hash,
            enabled: true,
            failed_logins: 0,
            locked_until_ms: 0,
            created_at_ms: now,
            updated_at_ms: now,
            password_changed_at_ms: now,
        };
        let r = record.clone();
        if !self.db.run(move |c| store::insert_operator(c, &r)).await? {
            return Err(Error::new(
                ErrorCode::IdempotencyConflict,
                format!("operator {name} exists already"),
            ));
        }
        Ok(record)
    }

    /// Checks a name and password and issues a token. Every failure is the same
    /// `INVALID_CREDENTIALS`; five in a row lock the operator for 15 minutes.
    pub async fn login(&self, name: &str, password: &str) -> Result<(String, i64, OperatorRecord)> {
        let signer = self.signer.clone().ok_or_else(|| {
            Error::unavailable(
                "this business layer has no operator signing key (operator_signing_key_file)",
            )
        })?;
        let now = self.clock.now_ms();
        let plausible =
            validate_name(name).is_ok() && password.chars().count() <= MAX_PASSWORD_CHARS;
        let key = name.to_string();
        let record = if plausible {
            self.db.run(move |c| store::get_operator(c, &key)).await?
        } else {
            None
        };
        let usable = record.as_ref().filter(|r| r.may_try_login(now)).cloned();
        let hash = usable
            .as_ref()
            .map(|r| r.password_hash.clone())
            .unwrap_or_else(|| dummy_hash().to_string());
        let pw = password.to_string();
        let matches = blocking(move || verify_password(&pw, &hash)).await?;
        let who = if plausible { name } else { "?" };
        let Some(record) = usable.filter(|_| matches) else {
            if let Some(r) = record.filter(|r| r.enabled && r.may_try_login(now)) {
                let after = r.after_failed_login(now);
                let locked = !after.may_try_login(now);
                self.db
                    .run(move |c| store::update_operator(c, &after))
                    .await?;
                if locked {
                    tracing::warn!(operator = %r.name, "operator locked after repeated failed logins");
                }
            }
            self.audit_login(who, "", verb::LOGIN_FAILED, now).await?;
            return Err(invalid_credentials());
        };
        let mut fresh = record.clone();
        if fresh.failed_logins != 0 {
            fresh.failed_logins = 0;
            fresh.updated_at_ms = now;
            let f = fresh.clone();
            self.db.run(move |c| store::update_operator(c, &f)).await?;
        }
        let operator = Operator {
            name: fresh.name.clone(),
            roles: fresh.roles.clone(),
        };
        let (token, claims) = signer.issue(&operator, system_secs())?;
        let expires_at_ms = claims.expires_at_secs()?.saturating_mul(1000);
        self.audit_login(&fresh.name, &operator.roles_text(), verb::LOGIN, now)
            .await?;
        Ok((token, expires_at_ms, fresh))
    }

    async fn audit_login(&self, name: &str, roles: &str, what: &str, now: i64) -> Result<()> {
        let mut entry = AuditEntry::new(
            &Operator {
                name: name.chars().take(MAX_NAME_LEN).collect(),
                roles: Vec::new(),
            },
            what,
            LOGIN_RPC,
            name,
            now,
        );
        entry.roles = roles.to_string();
        self.db.run(move |c| store::insert_audit(c, &entry)).await
    }

    async fn get(&self, name: &str) -> Result<OperatorRecord> {
        validate_name(name)?;
        let key = name.to_string();
        self.db
            .run(move |c| store::get_operator(c, &key))
            .await?
            .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("operator {name} not found")))
    }

    /// Reads, changes and writes an operator in one transaction with its audit entry. `change`
    /// also sees every operator, to keep at least one enabled administrator.
    async fn change<F>(
        &self,
        by: &Staff,
        name: &str,
        action: Action,
        reason: &str,
        f: F,
    ) -> Result<OperatorRecord>
    where
        F: FnOnce(&mut OperatorRecord, &[OperatorRecord]) -> Result<()> + Send + 'static,
    {
        validate_name(name)?;
        let now = self.clock.now_ms();
        let key = name.to_string();
        let (op, rpc, why) = (by.operator.clone(), by.rpc.clone(), reason.to_string());
        self.db
            .transaction(move |c| {
                let all = store::list_operators(c)?;
                let before = all.iter().find(|r| r.name == key).cloned().ok_or_else(|| {
                    Error::new(ErrorCode::NotFound, format!("operator {key} not found"))
                })?;
                let mut after = before.clone();
                f(&mut after, &all)?;
                after.updated_at_ms = now;
                let others: Vec<&OperatorRecord> = all.iter().filter(|r| r.name != key).collect();
                let admin_left = others
                    .iter()
                    .any(|r| r.enabled && r.roles.contains(&Role::Admin))
                    || (after.enabled && after.roles.contains(&Role::Admin));
                if !admin_left {
                    return Err(Error::new(
                        ErrorCode::InvalidStateTransition,
                        "at least one enabled operator must keep the admin role",
                    ));
                }
                store::update_operator(c, &after)?;
                store::insert_audit(
                    c,
                    &AuditEntry::of(&op, action, &rpc, &key, now)
                        .reason(&why)
                        .change(&describe(&before), &describe(&after)),
                )?;
                Ok(after)
            })
            .await
    }

    async fn hash(password: &str, field: &str) -> Result<String> {
        validate_password(password, field)?;
        let pw = password.to_string();
        blocking(move || hash_password(&pw)).await?
    }
}

// ---------------------------------------------------------------------------------------------
// Wire

/// An operator on the wire (never the hash).
pub fn operator_to_wire(r: &OperatorRecord) -> pb::Operator {
    pb::Operator {
        name: r.name.clone(),
        roles: r.roles.iter().map(|x| x.as_str().to_string()).collect(),
        enabled: r.enabled,
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        password_changed_at_ms: r.password_changed_at_ms,
        locked_until_ms: r.locked_until_ms,
    }
}

#[tonic::async_trait]
impl pb::operator_service_server::OperatorService for Registry {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let r = request.into_inner();
        let (token, expires_at_ms, record) = Registry::login(self, &r.name, &r.password)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::LoginResponse {
            token,
            expires_at_ms,
            operator: Some(operator_to_wire(&record)),
        }))
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::Operator>, Status> {
        let who = staff(&request)?;
        let record = self.get(&who.operator.name).await.map_err(grpc_err)?;
        Ok(Response::new(operator_to_wire(&record)))
    }

    async fn create_operator(
        &self,
        request: Request<pb::CreateOperatorRequest>,
    ) -> Result<Response<pb::Operator>, Status> {
        let who = staff(&request)?;
        let r = request.into_inner();
        let created = async {
            validate_name(&r.name)?;
            let roles = parse_roles(&r.roles, "roles")?;
            let hash = Registry::hash(&r.password, "password").await?;
            let now = self.clock.now_ms();
            let record = OperatorRecord {
                name: r.name.clone(),
                roles,
                password_hash: hash,
                enabled: true,
                failed_logins: 0,
                locked_until_ms: 0,
                created_at_ms: now,
                updated_at_ms: now,
                password_changed_at_ms: now,
            };
            let entry = AuditEntry::of(
                &who.operator,
                Action::ManageOperators,
                &who.rpc,
                &r.name,
                now,
            )
            .reason("create operator")
            .change("", &describe(&record));
            let rec = record.clone();
            let inserted = self
                .db
                .transaction(move |c| {
                    if !store::insert_operator(c, &rec)? {
                        return Ok(false);
                    }
                    store::insert_audit(c, &entry)?;
                    Ok(true)
                })
                .await?;
            if !inserted {
                return Err(Error::new(
                    ErrorCode::IdempotencyConflict,
                    format!("operator {} exists already", r.name),
                ));
            }
            Ok(record)
        }
        .await
        .map_err(grpc_err)?;
        Ok(Response::new(operator_to_wire(&created)))
    }

    async fn list_operators(
        &self,
        request: Request<pb::ListOperatorsRequest>,
    ) -> Result<Response<pb::ListOperatorsResponse>, Status> {
        staff(&request)?;
        let all = self.db.run(store::list_operators).await.map_err(grpc_err)?;
        Ok(Response::new(pb::ListOperatorsResponse {
            operators: all.iter().map(operator_to_wire).collect(),
        }))
    }

    async fn set_operator_roles(
        &self,
        request: Request<pb::SetOperatorRolesRequest>,
    ) -> Result<Response<pb::Operator>, Status> {
        let who = staff(&request)?;
        let r = request.into_inner();
        let roles = parse_roles(&r.roles, "roles").map_err(grpc_err)?;
        let record = self
            .change(
                &who,
                &r.name,
                Action::ManageOperators,
                "set roles",
                move |rec, _| {
                    rec.roles = roles;
                    Ok(())
                },
            )
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(operator_to_wire(&record)))
    }

    async fn set_operator_enabled(
        &self,
        request: Request<pb::SetOperatorEnabledRequest>,
    ) -> Result<Response<pb::Operator>, Status> {
        let who = staff(&request)?;
        let r = request.into_inner();
        if !r.enabled && r.name == who.operator.name {
            return Err(grpc_err(Error::new(
                ErrorCode::InvalidStateTransition,
                "an operator cannot disable themselves",
            )));
        }
        let enabled = r.enabled;
        let what = if enabled { "enable" } else { "disable" };
        let record = self
            .change(
                &who,
                &r.name,
                Action::ManageOperators,
                what,
                move |rec, _| {
                    rec.enabled = enabled;
                    rec.failed_logins = 0;
                    rec.locked_until_ms = 0;
                    Ok(())
                },
            )
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(operator_to_wire(&record)))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::Operator>, Status> {
        let who = staff(&request)?;
        let r = request.into_inner();
        let hash = Registry::hash(&r.password, "password")
            .await
            .map_err(grpc_err)?;
        let now = self.clock.now_ms();
        let record = self
            .change(
                &who,
                &r.name,
                Action::ManageOperators,
                "reset password",
                move |rec, _| {
                    rec.password_hash = hash;
                    rec.password_changed_at_ms = now;
                    rec.failed_logins = 0;
                    rec.locked_until_ms = 0;
                    Ok(())
                },
            )
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(operator_to_wire(&record)))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::Operator>, Status> {
        let who = staff(&request)?;
        let r = request.into_inner();
        let name = who.operator.name.clone();
        let result = async {
            let current = self.get(&name).await?;
            let (pw, hash) = (r.current_password.clone(), current.password_hash.clone());
            if r.current_password.chars().count() > MAX_PASSWORD_CHARS
                || !blocking(move || verify_password(&pw, &hash)).await?
            {
                return Err(Error::new(
                    ErrorCode::InvalidCredentials,
                    "current_password: does not match",
                ));
            }
            let new_hash = Registry::hash(&r.new_password, "new_password").await?;
            let now = self.clock.now_ms();
            self.change(
                &who,
                &name,
                Action::ChangeOwnPassword,
                "change own password",
                move |rec, _| {
                    rec.password_hash = new_hash;
                    rec.password_changed_at_ms = now;
                    Ok(())
                },
            )
            .await
        }
        .await
        .map_err(grpc_err)?;
        Ok(Response::new(operator_to_wire(&result)))
    }
}
