//! Channel settings as the deployment's TOML gives them (`[bank.channels.<CODE>]`), and the
//! connectors built from them.
//!
//! ```toml
//! [bank.channels.WECHAT_AGG]
//! connector = "wechatpay_v3"
//! mchid = "1900000109"
//! merchant_serial_no = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
//! private_key_file = "/etc/tuikuan/wechatpay/apiclient_key.pem"
//! apiv3_key_env = "TUIKUAN_WECHATPAY_APIV3_KEY"
//! platform_public_keys = [{ id = "PUB_KEY_ID_0114232134912410000000000000", file = "/etc/tuikuan/wechatpay/pub_key.pem" }]
//!
//! [bank.channels.ALIPAY_AGG]
//! connector = "alipay"
//! app_id = "2021000000000000"
//! private_key_file = "/etc/tuikuan/alipay/app_private_key.txt"
//! alipay_public_key_file = "/etc/tuikuan/alipay/alipay_public_key.txt"
//! ```
//!
//! Every secret is given as `<name>_file` (a path) or `<name>_env` (an environment variable
//! holding it), exactly one of the two. See `docs/channels.md`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tuikuan_kernel::{Error, Result, SharedClock};

use super::alipay::{Alipay, AlipayConfig, ALIPAY_GATEWAY};
use super::keys::{ApiV3Key, ChannelKey, MerchantKey, SecretSource};
use super::wechat::{WechatConfig, WechatPayV3, DEFAULT_MAX_SKEW_SECS, WECHATPAY_API};
use super::Connector;

/// One channel's connector and credentials.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "connector", rename_all = "snake_case")]
pub enum ChannelSettings {
    /// The bank simulator (the default for channels not configured).
    Simulator,
    WechatpayV3(WechatSettings),
    Alipay(AlipaySettings),
}

/// WeChat Pay API v3, direct merchant.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatSettings {
    /// 商户号.
    pub mchid: String,
    /// 商户API证书序列号.
    pub merchant_serial_no: String,
    /// 商户API私钥 (`apiclient_key.pem`).
    pub private_key_file: Option<PathBuf>,
    pub private_key_env: Option<String>,
    /// APIv3密钥 (32 characters).
    pub apiv3_key_file: Option<PathBuf>,
    pub apiv3_key_env: Option<String>,
    /// 微信支付平台证书 files (PEM); their serials are read from the certificates.
    #[serde(default)]
    pub platform_certificate_files: Vec<PathBuf>,
    /// 微信支付公钥 (PEM) with their ids (`PUB_KEY_ID_…`).
    #[serde(default)]
    pub platform_public_keys: Vec<PlatformPublicKey>,
    #[serde(default = "wechat_base_url")]
    pub base_url: String,
    /// Where WeChat Pay sends refund notifications; default: the bank's notification listener.
    pub notify_url: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_skew")]
    pub max_clock_skew_secs: i64,
    #[serde(default = "default_reason")]
    pub refund_reason: String,
}

/// A WeChat Pay platform public key and its id.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformPublicKey {
    pub id: String,
    pub file: PathBuf,
}

/// The Alipay open platform gateway, key mode.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlipaySettings {
    /// 应用ID (APPID).
    pub app_id: String,
    /// 应用私钥 (PKCS#8, PEM or the bare base64 the key tool prints).
    pub private_key_file: Option<PathBuf>,
    pub private_key_env: Option<String>,
    /// 支付宝公钥 (PEM or bare base64).
    pub alipay_public_key_file: Option<PathBuf>,
    pub alipay_public_key_env: Option<String>,
    #[serde(default = "alipay_gateway")]
    pub gateway_url: String,
    /// Where Alipay sends notifications (set on the payments; refunds notify there): default the
    /// bank's notification listener.
    pub notify_url: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_reason")]
    pub refund_reason: String,
}

fn wechat_base_url() -> String {
    WECHATPAY_API.to_string()
}
fn alipay_gateway() -> String {
    ALIPAY_GATEWAY.to_string()
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_skew() -> i64 {
    DEFAULT_MAX_SKEW_SECS
}
fn default_reason() -> String {
    "退款".to_string()
}

/// `<name>_file` or `<name>_env`, exactly one.
fn secret(file: &Option<PathBuf>, env: &Option<String>, name: &str) -> Result<SecretSource> {
    match (file, env) {
        (Some(path), None) => Ok(SecretSource::File(path.clone())),
        (None, Some(var)) => Ok(SecretSource::Env(var.clone())),
        _ => Err(Error::field(
            name,
            format!("give exactly one of {name}_file and {name}_env"),
        )),
    }
}

impl ChannelSettings {
    /// The connector name (`simulator`, `wechatpay_v3`, `alipay`).
    pub fn connector(&self) -> &'static str {
        match self {
            ChannelSettings::Simulator => "simulator",
            ChannelSettings::WechatpayV3(_) => "wechatpay_v3",
            ChannelSettings::Alipay(_) => "alipay",
        }
    }

    /// The configured notification URL, if any.
    pub fn notify_url(&self) -> Option<&str> {
        match self {
            ChannelSettings::Simulator => None,
            ChannelSettings::WechatpayV3(w) => w.notify_url.as_deref(),
            ChannelSettings::Alipay(a) => a.notify_url.as_deref(),
        }
    }

    /// Loads the keys and builds the connector; `None` for the simulator. Errors name the
    /// channel and the setting, never a secret.
    pub fn build(&self, channel: &str, clock: SharedClock) -> Result<Option<Arc<dyn Connector>>> {
        let named =
            |e: Error| Error::new(e.code, format!("bank.channels.{channel}: {}", e.message));
        match self {
            ChannelSettings::Simulator => Ok(None),
            ChannelSettings::WechatpayV3(w) => {
                let cfg = wechat_config(channel, w).map_err(named)?;
                Ok(Some(Arc::new(WechatPayV3::new(cfg, clock).map_err(named)?)))
            }
            ChannelSettings::Alipay(a) => {
                let cfg = alipay_config(channel, a).map_err(named)?;
                Ok(Some(Arc::new(Alipay::new(cfg, clock).map_err(named)?)))
            }
        }
    }
}

fn wechat_config(channel: &str, w: &WechatSettings) -> Result<WechatConfig> {
    let merchant_key = MerchantKey::load(
        &secret(&w.private_key_file, &w.private_key_env, "private_key")?,
        "private_key",
    )?;
    let apiv3_key = ApiV3Key::load(
        &secret(&w.apiv3_key_file, &w.apiv3_key_env, "apiv3_key")?,
        "apiv3_key",
    )?;
    let mut platform_keys = HashMap::new();
    for path in &w.platform_certificate_files {
        let text = SecretSource::File(path.clone()).read("platform_certificate_files")?;
        let (serial, key) = ChannelKey::from_certificate_pem(&text, "platform_certificate_files")?;
        platform_keys.insert(serial, key);
    }
    for k in &w.platform_public_keys {
        let key = ChannelKey::load(&SecretSource::File(k.file.clone()), "platform_public_keys")?;
        platform_keys.insert(k.id.clone(), key);
    }
    if w.mchid.is_empty() || w.merchant_serial_no.is_empty() {
        return Err(Error::field(
            "mchid",
            "mchid and merchant_serial_no are required",
        ));
    }
    Ok(WechatConfig {
        channel: channel.to_string(),
        mchid: w.mchid.clone(),
        merchant_serial_no: w.merchant_serial_no.clone(),
        merchant_key,
        apiv3_key,
        platform_keys,
        base_url: w.base_url.clone(),
        timeout: Duration::from_millis(w.timeout_ms.clamp(100, 120_000)),
        max_skew_secs: w.max_clock_skew_secs.clamp(1, 3600),
        reason: w.refund_reason.clone(),
    })
}

fn alipay_config(channel: &str, a: &AlipaySettings) -> Result<AlipayConfig> {
    if a.app_id.is_empty() {
        return Err(Error::field("app_id", "is required"));
    }
    Ok(AlipayConfig {
        channel: channel.to_string(),
        app_id: a.app_id.clone(),
        app_key: MerchantKey::load(
            &secret(&a.private_key_file, &a.private_key_env, "private_key")?,
            "private_key",
        )?,
        alipay_key: ChannelKey::load(
            &secret(
                &a.alipay_public_key_file,
                &a.alipay_public_key_env,
                "alipay_public_key",
            )?,
            "alipay_public_key",
        )?,
        gateway_url: a.gateway_url.clone(),
        timeout: Duration::from_millis(a.timeout_ms.clamp(100, 120_000)),
        reason: a.refund_reason.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_from_toml() {
        let w: ChannelSettings = toml_like(
            r#"{"connector":"wechatpay_v3","mchid":"1900000109","merchant_serial_no":"AB",
                "private_key_file":"/k.pem","apiv3_key_env":"K",
                "platform_public_keys":[{"id":"PUB_KEY_ID_1","file":"/p.pem"}]}"#,
        );
        let ChannelSettings::WechatpayV3(ws) = &w else {
            panic!("{w:?}")
        };
        assert_eq!(ws.base_url, WECHATPAY_API);
        assert_eq!(ws.max_clock_skew_secs, 300);
        assert_eq!(w.connector(), "wechatpay_v3");
        let e = secret(&None, &None, "private_key").unwrap_err();
        assert!(e.message.contains("private_key_file"), "{}", e.message);
        let both = secret(&Some("/a".into()), &Some("B".into()), "apiv3_key").unwrap_err();
        assert!(both.message.starts_with("apiv3_key"));
        assert!(serde_json::from_str::<ChannelSettings>(
            r#"{"connector":"alipay","app_id":"1","colour":"red"}"#
        )
        .is_err());
        assert_eq!(
            toml_like(r#"{"connector":"simulator"}"#),
            ChannelSettings::Simulator
        );
    }

    fn toml_like(json: &str) -> ChannelSettings {
        serde_json::from_str(json).expect("settings")
    }

    #[test]
    fn missing_key_files_name_the_channel_not_the_secret() {
        let s: ChannelSettings = serde_json::from_str(
            r#"{"connector":"alipay","app_id":"2021","private_key_env":"TUIKUAN_TEST_SURELY_UNSET_VAR","alipay_public_key_file":"/nonexistent"}"#,
        )
        .unwrap();
        let clock: SharedClock = Arc::new(tuikuan_kernel::SystemClock);
        let e = s.build("ALIPAY_AGG", clock).unwrap_err();
        assert!(
            e.message
                .starts_with("bank.channels.ALIPAY_AGG: private_key"),
            "{}",
            e.message
        );
    }
}
