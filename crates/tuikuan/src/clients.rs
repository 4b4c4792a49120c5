//! Typed clients for every service of a deployment, for the demo, `ctl` commands and tests.
//!
//! Internal services are reached under the transport given (mutual TLS as `ctl` for staff tools);
//! the merchant API on the public listener, with the merchant's API key and no certificate.

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};
use tuikuan_proto::accounting::v1::accounting_service_client::AccountingServiceClient;
use tuikuan_proto::bank::v1::bank_service_client::BankServiceClient;
use tuikuan_proto::business::v1::business_admin_service_client::BusinessAdminServiceClient;
use tuikuan_proto::business::v1::merchant_service_client::MerchantServiceClient;
use tuikuan_proto::clearing::v1::clearing_service_client::ClearingServiceClient;
use tuikuan_proto::payout::v1::payout_service_client::PayoutServiceClient;
use tuikuan_proto::reconciliation::v1::reconciliation_service_client::ReconciliationServiceClient;
use tuikuan_proto::refund::v1::batch_service_client::BatchServiceClient;
use tuikuan_proto::refund::v1::refund_control_service_client::RefundControlServiceClient;
use tuikuan_proto::refund::v1::refund_service_client::RefundServiceClient;

use tuikuan_auth::client::OperatorToken;
use tuikuan_proto::staff::v1::operator_service_client::OperatorServiceClient;
use tuikuan_proto::staff::v1::staff_service_client::StaffServiceClient;
use tuikuan_proto::tls::Transport;

use crate::config::{DeploymentConfig, Service};

impl Clients {
    /// The deployment's services as the staff client `ctl` (`tuikuan ctl`, `tuikuan audit`).
    pub fn for_deployment(config: &DeploymentConfig) -> anyhow::Result<Clients> {
        let transport = config.transport(tuikuan_proto::tls::Principal::Ctl)?;
        let public_ca = config.public_ca()?;
        Clients::connect(
            &transport,
            |s| config.peer_addr(s),
            &config.public_url(),
            public_ca.as_deref(),
        )
    }
}

/// A channel whose calls carry the operator's token (when the clients have one).
pub type Staffed = InterceptedService<Channel, OperatorToken>;

/// Adds `authorization: Bearer <api key>` to every merchant call.
#[derive(Clone)]
pub struct BearerAuth {
    value: MetadataValue<tonic::metadata::Ascii>,
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.value.clone());
        Ok(request)
    }
}

pub type MerchantClient = MerchantServiceClient<InterceptedService<Channel, BearerAuth>>;

/// Adds the operator's identity (`x-operator-id`, `x-operator-role`) to a request for the
/// staff-only RPCs (risk holds, manual controls, error refunds).
pub fn as_operator<T>(message: T, operator: &str, role: &str) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    let value = |v: &str, flag: &str| {
        MetadataValue::try_from(v).map_err(|_| anyhow::anyhow!("{flag}: not a valid header value"))
    };
    request
        .metadata_mut()
        .insert("x-operator-id", value(operator, "--operator")?);
    request
        .metadata_mut()
        .insert("x-operator-role", value(role, "--role")?);
    Ok(request)
}

/// One client per service.
#[derive(Clone)]
pub struct Clients {
    pub accounting: AccountingServiceClient<Channel>,
    pub clearing: ClearingServiceClient<Channel>,
    pub business: BusinessAdminServiceClient<Channel>,
    pub refund: RefundServiceClient<Channel>,
    /// The refund center's daily spreadsheets.
    pub batch: BatchServiceClient<Channel>,
    /// The refund center's risk holds and manual controls (need an operator identity).
    pub control: RefundControlServiceClient<Channel>,
    pub payout: PayoutServiceClient<Channel>,
    pub reconciliation: ReconciliationServiceClient<Channel>,
    pub bank: BankServiceClient<Channel>,
    /// The operator registry (business layer): login, operator management.
    pub operators: OperatorServiceClient<Staffed>,
    business_channel: Channel,
    /// Every service's channel, for its staff desk.
    channels: std::collections::BTreeMap<Service, Channel>,
    token: OperatorToken,
    /// The public listener (merchant API).
    public_channel: Channel,
}

impl Clients {
    /// Clients for the internal services at `url(service)` under `transport`, and for the
    /// merchant API at `public_url` (HTTPS verified against `public_ca` when given).
    pub fn connect(
        transport: &Transport,
        url: impl Fn(Service) -> String,
        public_url: &str,
        public_ca: Option<&str>,
    ) -> anyhow::Result<Clients> {
        let ch = |s: Service| transport.channel(s.principal(), &url(s));
        let business_channel = ch(Service::Business)?;
        let mut channels = std::collections::BTreeMap::new();
        for s in Service::ALL {
            channels.insert(s, ch(s)?);
        }
        let token = OperatorToken::none();
        Ok(Clients {
            operators: OperatorServiceClient::with_interceptor(
                business_channel.clone(),
                token.clone(),
            ),
            channels,
            token,
            accounting: AccountingServiceClient::new(ch(Service::Accounting)?),
            clearing: ClearingServiceClient::new(ch(Service::Clearing)?),
            business: BusinessAdminServiceClient::new(business_channel.clone()),
            refund: RefundServiceClient::new(ch(Service::Refund)?),
            batch: BatchServiceClient::new(ch(Service::Refund)?),
            control: RefundControlServiceClient::new(ch(Service::Refund)?),
            payout: PayoutServiceClient::new(ch(Service::Payout)?),
            reconciliation: ReconciliationServiceClient::new(ch(Service::Reconciliation)?),
            bank: BankServiceClient::new(ch(Service::Bank)?),
            public_channel: tuikuan_proto::tls::public_channel(public_url, public_ca)?,
            business_channel,
        })
    }

    /// The same clients acting as the operator whose token this is (empty: none).
    pub fn with_token(&self, token: &str) -> anyhow::Result<Clients> {
        let token =
            OperatorToken::new(token).map_err(|e| anyhow::anyhow!("token: {}", e.message))?;
        let mut c = self.clone();
        c.operators =
            OperatorServiceClient::with_interceptor(self.business_channel.clone(), token.clone());
        c.token = token;
        Ok(c)
    }

    /// A service's staff desk (audit trail, proposals), as this operator.
    pub fn staff_desk(&self, service: Service) -> StaffServiceClient<Staffed> {
        let channel = self
            .channels
            .get(&service)
            .cloned()
            .unwrap_or_else(|| self.business_channel.clone());
        StaffServiceClient::with_interceptor(channel, self.token.clone())
    }

    /// The merchant API as the merchant holding `api_key`.
    pub fn merchant(&self, api_key: &str) -> anyhow::Result<MerchantClient> {
        let value = MetadataValue::try_from(format!("Bearer {api_key}"))
            .map_err(|_| anyhow::anyhow!("api key: not a valid header value"))?;
        Ok(MerchantServiceClient::with_interceptor(
            self.public_channel.clone(),
            BearerAuth { value },
        ))
    }
}
