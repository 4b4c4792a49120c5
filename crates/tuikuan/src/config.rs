//! Deployment configuration: where each service listens, where its database is, where its peers are.
//!
//! Sources, later ones winning: built-in defaults, a TOML file (`--config`), environment variables
//! (`TUIKUAN_DATA_DIR`, `TUIKUAN_DATABASE_URL`, `TUIKUAN_<SERVICE>_ADDR`, `TUIKUAN_JOB_INTERVAL_MS`).
//! See `docs/configuration.md` and `tuikuan.example.toml`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use tuikuan_proto::tls::{Credentials, Principal, PublicTls, Transport};

/// The default port of the public listener (the merchant API); internal listeners use
/// 50051..50057.
pub const DEFAULT_PUBLIC_PORT: u16 = 50050;

/// The seven services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Accounting,
    Clearing,
    Business,
    Refund,
    Payout,
    Reconciliation,
    Bank,
}

impl Service {
    pub const ALL: [Service; 7] = [
        Service::Accounting,
        Service::Clearing,
        Service::Business,
        Service::Refund,
        Service::Payout,
        Service::Reconciliation,
        Service::Bank,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Accounting => "accounting",
            Service::Clearing => "clearing",
            Service::Business => "business",
            Service::Refund => "refund",
            Service::Payout => "payout",
            Service::Reconciliation => "reconciliation",
            Service::Bank => "bank",
        }
    }

    pub fn parse(name: &str) -> anyhow::Result<Service> {
        Service::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .with_context(|| {
                format!(
                    "service: unknown service {name:?}; expected one of {}",
                    Service::ALL.map(|s| s.name()).join(", ")
                )
            })
    }

    /// The default port of the service in a deployment.
    pub fn default_port(self) -> u16 {
        50051 + self as u16
    }

    /// The certificate identity of the service.
    pub fn principal(self) -> Principal {
        match self {
            Service::Accounting => Principal::Accounting,
            Service::Clearing => Principal::Clearing,
            Service::Business => Principal::Business,
            Service::Refund => Principal::Refund,
            Service::Payout => Principal::Payout,
            Service::Reconciliation => Principal::Reconciliation,
            Service::Bank => Principal::Bank,
        }
    }

    fn env_prefix(self) -> String {
        format!("TUIKUAN_{}", self.name().to_uppercase())
    }
}

/// Settings of the bank subsystem: the simulator's knobs, and the channels served by a real
/// connector (`[bank.channels.<CODE>]`, see `docs/channels.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BankSimulator {
    pub seed: u64,
    pub delay_min_secs: u64,
    pub delay_max_secs: u64,
    pub fail_per_mille: u32,
    pub duplicate_callback_per_mille: u32,
    pub out_of_order_per_mille: u32,
    /// Share of paid payouts the bank later returns (退票), and how long after.
    pub return_per_mille: u32,
    pub return_delay_secs: u64,
    /// Channels served by a real connector (WeChat Pay API v3, Alipay); every other channel is
    /// the simulator's.
    pub channels:
        std::collections::BTreeMap<String, tuikuan_bank::connector::settings::ChannelSettings>,
    /// Port of the bank's notification listener (`POST /notify/<CHANNEL>`), bound only when a
    /// real channel is configured; 0 picks a free one.
    pub notify_port: u16,
    /// The listener's public URL as channels reach it (`https://pay.example.com/bank`); default
    /// `http://<host>:<notify_port>`.
    pub notify_public_url: Option<String>,
    /// How soon an open refund at a real channel is first queried (then less often as it ages).
    pub channel_query_interval_secs: u64,
    /// channel → the layout of the simulator's clearing files for it: `csv` (default), `wechat`,
    /// `wechat-legacy`, `unionpay` or `alipay` (the channel's real bank's file).
    pub clearing_formats: std::collections::BTreeMap<String, String>,
}

impl Default for BankSimulator {
    fn default() -> Self {
        BankSimulator {
            seed: 42,
            delay_min_secs: 60,
            delay_max_secs: 7200,
            fail_per_mille: 100,
            duplicate_callback_per_mille: 100,
            out_of_order_per_mille: 100,
            return_per_mille: 0,
            return_delay_secs: 3600,
            channels: Default::default(),
            notify_port: 50058,
            notify_public_url: None,
            channel_query_interval_secs: 60,
            clearing_formats: Default::default(),
        }
    }
}

/// Certificates and transport security (see `docs/security.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// The directory `tuikuan certs init` writes: `ca.pem` (trusted CAs), `<identity>.pem` and
    /// `<identity>-key.pem` for each service and staff client. Also `TUIKUAN_TLS_DIR`.
    pub dir: PathBuf,
    /// Plaintext internal listeners without client certificates or caller checks. Only for a
    /// network where nothing else can reach the ports; logged loudly at start.
    pub insecure_internal: bool,
    /// The public (merchant) listener's certificate and key (PEM); unset: plaintext, for a
    /// TLS-terminating proxy in front.
    pub public_cert: Option<PathBuf>,
    pub public_key: Option<PathBuf>,
    /// The CA certificates a client (ctl, demo) trusts for the public listener; unset: the
    /// public listener is reached in plaintext unless `public_cert` is set, then `dir/ca.pem`.
    pub public_ca: Option<PathBuf>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            dir: PathBuf::from("certs"),
            insecure_internal: false,
            public_cert: None,
            public_key: None,
            public_ca: None,
        }
    }
}

/// Merchant notifications: where the business layer's sender may deliver (see
/// `docs/security.md`, "Merchant notifications"). The default: public addresses, HTTPS only,
/// certificates verified against the public web roots.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifySettings {
    /// Special-purpose address ranges (loopback, private, link-local, …) notifications may go to
    /// anyway, as `address/prefix` (`["127.0.0.0/8", "::1/128"]`; `10.20.0.0/16` for merchants
    /// on a private network). Default: none.
    pub allow_private: Vec<String>,
    /// Accept plain `http://` notify URLs (default: `https://` only).
    pub allow_http: bool,
    /// CA certificates (PEM) trusted besides the public web roots, for merchant endpoints whose
    /// certificates a private CA issued.
    pub ca_file: Option<PathBuf>,
}

/// The deployment.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Where SQLite databases and clearing files live.
    pub data_dir: PathBuf,
    /// Host the services bind to.
    pub host: String,
    /// A PostgreSQL URL template with `{service}` (e.g. `postgres://u@h/tuikuan_{service}`); when
    /// unset, each service has an SQLite file `<data_dir>/<service>.db`.
    pub database_url: Option<String>,
    /// Per-service port overrides of the internal listeners (`accounting = 7001`); 0 picks a
    /// free port.
    pub ports: std::collections::BTreeMap<String, u16>,
    /// The public listener (the merchant API), on `public_host`; 0 picks a free port.
    pub public_port: u16,
    /// Host the public listener binds to (default: `host`).
    pub public_host: Option<String>,
    /// Where clients reach the public listener when it runs elsewhere (`https://api.example:443`).
    pub public_addr: Option<String>,
    /// Per-service address overrides for peers that run elsewhere (`refund = "http://10.0.0.5:50054"`).
    pub peers: std::collections::BTreeMap<String, String>,
    /// How often scheduled jobs run, in milliseconds; 0 disables them (admin RPCs still work).
    pub job_interval_ms: u64,
    /// Channels the reconciliation job reconciles every day.
    pub reconciliation_channels: Vec<String>,
    /// channel → clearing file format (`csv`, `wechat`, `unionpay`, `alipay`).
    pub reconciliation_formats: std::collections::BTreeMap<String, String>,
    /// channel → cross-day window (days) before a platform-only refund becomes a discrepancy.
    pub suspense_days: std::collections::BTreeMap<String, u32>,
    /// The working-day calendar (TOML: `holidays`, `makeup_workdays`); the bundled mainland China
    /// calendar (`config/calendar-2026.toml`) when unset.
    pub calendar_file: Option<PathBuf>,
    /// The AES-256 key (64 hex digits) sealing card numbers at rest; also `TUIKUAN_CARD_KEY`.
    /// Unset: a public development key, with a loud warning — never in production.
    pub card_key: Option<String>,
    /// PASERK `k4.public.…` keys every service verifies operator tokens with (two during a
    /// rotation); also `TUIKUAN_OPERATOR_PUBLIC_KEYS` (comma-separated). See `docs/security.md`.
    pub operator_public_keys: Vec<String>,
    /// A file with the PASERK `k4.secret.…` key that signs operator tokens (the business layer
    /// only); also `TUIKUAN_OPERATOR_SIGNING_KEY_FILE`. Neither set: a development key pair in
    /// the data directory, with a loud warning.
    pub operator_signing_key_file: Option<PathBuf>,
    /// Operator token lifetime in seconds (default one hour, at most 12 hours).
    pub operator_token_ttl_secs: i64,
    /// The first administrator, created by the business layer when no operator exists.
    pub bootstrap_admin: Option<String>,
    /// Its argon2id hash (`tuikuan operator hash-password`); also
    /// `TUIKUAN_BOOTSTRAP_ADMIN_PASSWORD_HASH`.
    pub bootstrap_admin_password_hash: Option<String>,
    /// Single-operator thresholds of money moved by hand: action → "amount CURRENCY", e.g.
    /// `force_fail = "100.00 CNY"`. Default: always two operators.
    pub four_eyes: std::collections::BTreeMap<String, String>,
    pub tls: TlsSettings,
    pub notify: NotifySettings,
    pub bank: BankSimulator,
}

/// The bundled example calendar: mainland China's 2026 holidays and make-up working days.
pub const BUNDLED_CALENDAR: &str = include_str!("../../../config/calendar-2026.toml");

impl Default for DeploymentConfig {
    fn default() -> Self {
        DeploymentConfig {
            data_dir: PathBuf::from("data"),
            host: "127.0.0.1".to_string(),
            database_url: None,
            ports: Default::default(),
            public_port: DEFAULT_PUBLIC_PORT,
            public_host: None,
            public_addr: None,
            peers: Default::default(),
            job_interval_ms: 1000,
            reconciliation_channels: Vec::new(),
            reconciliation_formats: Default::default(),
            suspense_days: Default::default(),
            calendar_file: None,
            card_key: None,
            operator_public_keys: Vec::new(),
            operator_signing_key_file: None,
            operator_token_ttl_secs: 0,
            bootstrap_admin: None,
            bootstrap_admin_password_hash: None,
            four_eyes: Default::default(),
            tls: TlsSettings::default(),
            notify: NotifySettings::default(),
            bank: BankSimulator::default(),
        }
    }
}

impl DeploymentConfig {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<DeploymentConfig> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("config: cannot read {}", path.display()))?;
                toml::from_str::<DeploymentConfig>(&text)
                    .with_context(|| format!("config: {} is not valid", path.display()))?
            }
            None => DeploymentConfig::default(),
        };
        if let Ok(dir) = std::env::var("TUIKUAN_DATA_DIR") {
            config.data_dir = PathBuf::from(dir);
        }
        if let Ok(url) = std::env::var("TUIKUAN_DATABASE_URL") {
            config.database_url = Some(url);
        }
        if let Ok(dir) = std::env::var("TUIKUAN_TLS_DIR") {
            config.tls.dir = PathBuf::from(dir);
        }
        if let Ok(addr) = std::env::var("TUIKUAN_PUBLIC_ADDR") {
            config.public_addr = Some(addr);
        }
        if let Ok(key) = std::env::var("TUIKUAN_CARD_KEY") {
            config.card_key = Some(key);
        }
        if let Ok(keys) = std::env::var("TUIKUAN_OPERATOR_PUBLIC_KEYS") {
            config.operator_public_keys = keys
                .split(',')
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect();
        }
        if let Ok(path) = std::env::var("TUIKUAN_OPERATOR_SIGNING_KEY_FILE") {
            config.operator_signing_key_file = Some(PathBuf::from(path));
        }
        if let Ok(hash) = std::env::var("TUIKUAN_BOOTSTRAP_ADMIN_PASSWORD_HASH") {
            config.bootstrap_admin_password_hash = Some(hash);
        }
        if let Ok(ms) = std::env::var("TUIKUAN_JOB_INTERVAL_MS") {
            config.job_interval_ms = ms
                .parse()
                .with_context(|| format!("TUIKUAN_JOB_INTERVAL_MS: {ms:?} is not a number"))?;
        }
        for service in Service::ALL {
            if let Ok(addr) = std::env::var(format!("{}_ADDR", service.env_prefix())) {
                config.peers.insert(service.name().to_string(), addr);
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for key in self.ports.keys().chain(self.peers.keys()) {
            Service::parse(key).with_context(|| format!("config: ports/peers key {key:?}"))?;
        }
        self.calendar()?;
        self.staff_four_eyes()?;
        if self.bootstrap_admin.is_some() != self.bootstrap_admin_password_hash.is_some() {
            bail!("bootstrap_admin and bootstrap_admin_password_hash: set both or neither");
        }
        tuikuan_business::domain::egress::EgressRules::new(
            &self.notify.allow_private,
            self.notify.allow_http,
        )
        .map_err(|e| anyhow::anyhow!(e.message))?;
        if self.tls.public_cert.is_some() != self.tls.public_key.is_some() {
            bail!("tls: set both public_cert and public_key, or neither");
        }
        if let Some(url) = &self.database_url {
            if !url.contains("{service}") {
                bail!("database_url: must contain {{service}} so that each service has its own database");
            }
        }
        Ok(())
    }

    pub fn port(&self, service: Service) -> u16 {
        self.ports
            .get(service.name())
            .copied()
            .unwrap_or(service.default_port())
    }

    pub fn bind_addr(&self, service: Service) -> String {
        format!("{}:{}", self.host, self.port(service))
    }

    /// Where the public listener binds.
    pub fn public_bind_addr(&self) -> String {
        let host = self.public_host.as_deref().unwrap_or(&self.host);
        format!("{host}:{}", self.public_port)
    }

    /// Where clients reach the public listener.
    pub fn public_url(&self) -> String {
        self.public_addr.clone().unwrap_or_else(|| {
            let host = self.public_host.as_deref().unwrap_or(&self.host);
            let scheme = if self.tls.public_cert.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{host}:{}", self.public_port)
        })
    }

    /// The transport of `identity`: mutual TLS with its certificate from `tls.dir`, or
    /// plaintext when `tls.insecure_internal`.
    pub fn transport(&self, identity: Principal) -> anyhow::Result<Transport> {
        if self.tls.insecure_internal {
            return Ok(Transport::Insecure);
        }
        let credentials = Credentials::from_dir(&self.tls.dir, identity)
            .map_err(|e| anyhow::anyhow!("{} (or TUIKUAN_TLS_DIR)", e.message))?;
        Ok(Transport::mtls(credentials))
    }

    /// The public listener's certificate, when configured.
    pub fn public_tls(&self) -> anyhow::Result<Option<PublicTls>> {
        match (&self.tls.public_cert, &self.tls.public_key) {
            (Some(cert), Some(key)) => Ok(Some(
                PublicTls::from_files(cert, key).map_err(|e| anyhow::anyhow!(e.message))?,
            )),
            _ => Ok(None),
        }
    }

    /// The CA certificates a client trusts for the public listener (see
    /// [`TlsSettings::public_ca`]); `None`: plaintext.
    pub fn public_ca(&self) -> anyhow::Result<Option<String>> {
        let path = match (&self.tls.public_ca, &self.tls.public_cert) {
            (Some(ca), _) => ca.clone(),
            (None, Some(_)) => self.tls.dir.join("ca.pem"),
            (None, None) if self.public_url().starts_with("https://") => {
                self.tls.dir.join("ca.pem")
            }
            (None, None) => return Ok(None),
        };
        std::fs::read_to_string(&path)
            .map(Some)
            .with_context(|| format!("tls.public_ca: cannot read {}", path.display()))
    }

    /// The business layer's notification sender settings (`[notify]`).
    pub fn notify_settings(&self) -> anyhow::Result<tuikuan_business::NotifySettings> {
        let rules = tuikuan_business::domain::egress::EgressRules::new(
            &self.notify.allow_private,
            self.notify.allow_http,
        )
        .map_err(|e| anyhow::anyhow!(e.message))?;
        let extra_ca_pem = match &self.notify.ca_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("notify.ca_file: cannot read {}", path.display()))?,
            ),
            None => None,
        };
        Ok(tuikuan_business::NotifySettings {
            rules,
            extra_ca_pem,
            lookup: None,
        })
    }

    /// The address peers use to reach `service`.
    pub fn peer_addr(&self, service: Service) -> String {
        self.peers
            .get(service.name())
            .cloned()
            .unwrap_or_else(|| format!("http://{}:{}", self.host, self.port(service)))
    }

    pub fn database_url(&self, service: Service) -> String {
        match &self.database_url {
            Some(template) => template.replace("{service}", service.name()),
            None => self
                .data_dir
                .join(format!("{}.db", service.name()))
                .display()
                .to_string(),
        }
    }

    /// The working-day calendar: the configured file, else the bundled one.
    pub fn calendar(&self) -> anyhow::Result<tuikuan_kernel::WorkingCalendar> {
        match &self.calendar_file {
            Some(path) => tuikuan_kernel::WorkingCalendar::from_file(path)
                .map_err(|e| anyhow::anyhow!("calendar_file: {}: {e}", path.display())),
            None => tuikuan_kernel::WorkingCalendar::from_toml_str(BUNDLED_CALENDAR)
                .map_err(|e| anyhow::anyhow!("bundled calendar: {e}")),
        }
    }

    /// The four-eyes thresholds, parsed.
    pub fn staff_four_eyes(&self) -> anyhow::Result<tuikuan_auth::domain::FourEyes> {
        tuikuan_auth::domain::FourEyes::parse(&self.four_eyes)
            .map_err(|e| anyhow::anyhow!("config: {}", e.message))
    }

    pub fn job_interval(&self) -> Option<std::time::Duration> {
        (self.job_interval_ms > 0).then(|| std::time::Duration::from_millis(self.job_interval_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_and_validation() {
        let c: DeploymentConfig = toml::from_str(
            r#"
            data_dir = "/var/lib/tuikuan"
            database_url = "postgres://u@db/tk_{service}"
            [ports]
            refund = 7004
            [peers]
            bank = "http://bank.internal:9000"
            [bank.channels.WECHAT_AGG]
            connector = "wechatpay_v3"
            mchid = "1900000109"
            merchant_serial_no = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
            private_key_file = "/etc/tuikuan/wechatpay/apiclient_key.pem"
            apiv3_key_env = "TUIKUAN_WECHATPAY_APIV3_KEY"
            platform_public_keys = [{ id = "PUB_KEY_ID_01", file = "/etc/tuikuan/wechatpay/pub_key.pem" }]
            [bank.channels.ALIPAY_AGG]
            connector = "alipay"
            app_id = "2021000000000001"
            private_key_env = "TUIKUAN_ALIPAY_APP_KEY"
            alipay_public_key_file = "/etc/tuikuan/alipay/alipay_public_key.txt"
            "#,
        )
        .unwrap();
        assert_eq!(c.bank.channels.len(), 2);
        assert_eq!(c.bank.channels["WECHAT_AGG"].connector(), "wechatpay_v3");
        assert_eq!(c.bank.channels["ALIPAY_AGG"].connector(), "alipay");
        assert_eq!(c.bank.notify_port, 50058);
        let example: DeploymentConfig =
            toml::from_str(include_str!("../../../tuikuan.example.toml")).expect("example config");
        example.validate().expect("example config is valid");
        c.validate().unwrap();
        assert_eq!(c.port(Service::Refund), 7004);
        assert_eq!(c.port(Service::Accounting), 50051);
        assert_eq!(c.peer_addr(Service::Bank), "http://bank.internal:9000");
        assert_eq!(
            c.database_url(Service::Clearing),
            "postgres://u@db/tk_clearing"
        );
        let eyes: DeploymentConfig =
            toml::from_str("[four_eyes]\nforce_fail = \"100.00 CNY\"").unwrap();
        let thresholds = eyes.staff_four_eyes().unwrap();
        let cny = |minor| tuikuan_kernel::Money::from_minor(minor, tuikuan_kernel::Currency::Cny);
        let force_fail = tuikuan_auth::Action::ForceFail;
        assert!(!thresholds.needs_second(force_fail, Some(&cny(9_999))));
        assert!(thresholds.needs_second(force_fail, Some(&cny(10_000))));
        assert!(example
            .staff_four_eyes()
            .unwrap()
            .needs_second(force_fail, Some(&cny(1))));
        let wrong: DeploymentConfig =
            toml::from_str("[four_eyes]\nsuspend = \"1.00 CNY\"").unwrap();
        assert!(wrong
            .validate()
            .unwrap_err()
            .to_string()
            .contains("four_eyes.suspend"));
        let bad: DeploymentConfig = toml::from_str("[ports]\nrefunds = 1").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("refunds"));
        assert!(toml::from_str::<DeploymentConfig>("colour = 1").is_err());
        // Merchant notifications: strict by default; ranges checked at load.
        let rules = example.notify_settings().unwrap().rules;
        assert!(rules.allow_private.is_empty() && !rules.allow_http);
        let lab: DeploymentConfig = toml::from_str(
            "[notify]\nallow_private = [\"10.20.0.0/16\", \"::1\"]\nallow_http = true",
        )
        .unwrap();
        lab.validate().unwrap();
        assert_eq!(lab.notify_settings().unwrap().rules.allow_private.len(), 2);
        let bad: DeploymentConfig =
            toml::from_str("[notify]\nallow_private = [\"10.20.0.1/16\"]").unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("notify.allow_private"), "{e}");
    }
}
