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

/// One client per service.
#[derive(Clone)]
pub struct Clients {
    pub accounting: AccountingServiceClient<Staffed>,
    pub clearing: ClearingServiceClient<Staffed>,
    pub business: BusinessAdminServiceClient<Staffed>,
    pub refund: RefundServiceClient<Staffed>,
    /// The refund center's daily spreadsheets.
    pub batch: BatchServiceClient<Staffed>,
    /// The refund center's risk holds and manual controls.
    pub control: RefundControlServiceClient<Staffed>,
    pub payout: PayoutServiceClient<Staffed>,
    pub reconciliation: ReconciliationServiceClient<Staffed>,
    pub bank: BankServiceClient<Staffed>,
    /// The operator registry (business layer): login, operator management.
    pub operators: OperatorServiceClient<Staffed>,
    /// Every service's channel, for its staff desk.
    channels: std::collections::BTreeMap<Service, Channel>,
    token: OperatorToken,
    /// The public listener (merchant API).
    public_channel: Channel,
}

impl Clients {
    /// Clients for the internal services at `url(service)` under `transport`, and for the
    /// merchant API at `public_url` (HTTPS verified against `public_ca` when given). They carry
    /// no operator token until [`Clients::with_token`].
    pub fn connect(
        transport: &Transport,
        url: impl Fn(Service) -> String,
        public_url: &str,
        public_ca: Option<&str>,
    ) -> anyhow::Result<Clients> {
        let mut channels = std::collections::BTreeMap::new();
        for s in Service::ALL {
            channels.insert(s, transport.channel(s.principal(), &url(s))?);
        }
        let public_channel = tuikuan_proto::tls::public_channel(public_url, public_ca)?;
        Ok(Clients::build(
            channels,
            public_channel,
            OperatorToken::none(),
        ))
    }

    fn build(
        channels: std::collections::BTreeMap<Service, Channel>,
        public_channel: Channel,
        token: OperatorToken,
    ) -> Clients {
        let ch = |s: Service| {
            let channel = channels.get(&s).cloned().expect("a channel per service");
            InterceptedService::new(channel, token.clone())
        };
        Clients {
            operators: OperatorServiceClient::new(ch(Service::Business)),
            accounting: AccountingServiceClient::new(ch(Service::Accounting)),
            clearing: ClearingServiceClient::new(ch(Service::Clearing)),
            business: BusinessAdminServiceClient::new(ch(Service::Business)),
            refund: RefundServiceClient::new(ch(Service::Refund)),
            batch: BatchServiceClient::new(ch(Service::Refund)),
            control: RefundControlServiceClient::new(ch(Service::Refund)),
            payout: PayoutServiceClient::new(ch(Service::Payout)),
            reconciliation: ReconciliationServiceClient::new(ch(Service::Reconciliation)),
            bank: BankServiceClient::new(ch(Service::Bank)),
            channels,
            token,
            public_channel,
        }
    }

    /// The same clients acting as the operator whose token this is (empty: none).
    pub fn with_token(&self, token: &str) -> anyhow::Result<Clients> {
        let token =
            OperatorToken::new(token).map_err(|e| anyhow::anyhow!("token: {}", e.message))?;
        Ok(Clients::build(
            self.channels.clone(),
            self.public_channel.clone(),
            token,
        ))
    }

    /// A service's staff desk (audit trail, proposals), as this operator.
    pub fn staff_desk(&self, service: Service) -> StaffServiceClient<Staffed> {
        let channel = self
            .channels
            .get(&service)
            .cloned()
            .expect("a channel per service");
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
