//! `/v1/payments` and `/v1/refunds`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{Client, StrictJson};
use super::idempotency::{self, Answer};
use super::AppState;
use crate::payments::model::{parse_rfc3339, Amount, Currency, Line, PaymentId, PaymentStatus};
use crate::payments::view::{payment_view, refund_view};
use crate::payments::{canceled_body, Asked, ListQuery, NewPayment, NewRefund, PaymentError};

/// The longest `?wait=` a POS may ask for.
const MAX_WAIT_SECONDS: u64 = 60;

/// `POST /v1/payments`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// A method id from `GET /v1/methods`.
    pub method: String,
    /// Minor units (cents), more than zero.
    pub amount: i64,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
    /// The POS's receipt number.
    #[serde(default)]
    pub reference: Option<String>,
    /// The register; defaults to the client the token names.
    #[serde(default)]
    pub register: Option<String>,
    /// Cart lines; when given, their amounts must sum to `amount`.
    #[serde(default)]
    pub lines: Option<Vec<CartLineBody>>,
    /// An earlier payment of the same purchase whose remaining amount this one covers.
    #[serde(default)]
    pub split_of: Option<String>,
}

/// A cart line.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CartLineBody {
    #[serde(default)]
    pub sku: String,
    #[serde(default)]
    pub name: String,
    pub amount: i64,
    #[serde(default)]
    pub labels: Vec<String>,
}

/// `POST /v1/payments/{id}/scan`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanBody {
    /// The text read from the QR code.
    pub code: String,
}

/// `POST /v1/payments/{id}/manual`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualBody {
    /// The amount on the customer's receipt, in cents.
    pub amount: i64,
    /// The receipt's transaction id (`tx_…`), when the cashier can read it.
    #[serde(default)]
    pub transaction_id: Option<String>,
}

/// `POST /v1/payments/{id}/cancel` (an empty body or `{}`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {}

/// `POST /v1/refunds`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// The payment to refund (`pay_…`).
    #[serde(default)]
    pub payment: Option<String>,
    /// With `transaction_id`, for a payment posbridge did not take or no longer has.
    #[serde(default)]
    pub method: Option<String>,
    /// The provider's transaction id (`tx_…`); needed for manual Smartum payments.
    #[serde(default)]
    pub transaction_id: Option<String>,
    /// Cents; defaults to everything still refundable.
    #[serde(default)]
    pub amount: Option<i64>,
    /// ISO 4217, for refunds by transaction id (default `EUR`).
    #[serde(default)]
    pub currency: Option<String>,
    /// Free text, e.g. `customer_request`.
    #[serde(default)]
    pub reason: Option<String>,
    /// With `payment`: refund every leg of its split purchase (answers `{"data": [refunds]}`).
    #[serde(default)]
    pub include_splits: bool,
}

/// `GET /v1/payments/{id}` query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Hold the request up to this many seconds (at most 60)…
    pub wait: Option<u64>,
    /// …until the payment's version is greater than this.
    pub version: Option<u64>,
}

/// `GET /v1/payments` query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub register: Option<String>,
    /// The POS's reference (receipt number): the payments of one purchase.
    pub reference: Option<String>,
    pub status: Option<String>,
    /// RFC 3339; payments created at or after.
    pub from: Option<String>,
    /// RFC 3339; payments created at or before.
    pub to: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<usize>,
    /// A payment id: continue after it (pagination).
    pub starting_after: Option<String>,
}

fn positive(value: i64, field: &str) -> Result<Amount, ApiError> {
    u64::try_from(value)
        .ok()
        .filter(|amount| *amount > 0)
        .map(Amount)
        .ok_or_else(|| ApiError::invalid(format!("{field} must be a positive integer number of cents")).field(field))
}

fn currency(text: &str, field: &str) -> Result<Currency, ApiError> {
    Currency::parse(text).ok_or_else(|| ApiError::invalid("currency must be an ISO 4217 code such as \"EUR\"").field(field))
}

fn answer(result: Answer) -> Response {
    match result {
        Ok((status, body)) => (status, Json(body)).into_response(),
        Err(error) => error.into_response(),
    }
}

fn payment_json(payment: &crate::payments::model::Payment) -> Value {
    serde_json::to_value(payment_view(payment)).unwrap_or_default()
}

/// Runs `handler` under the request's idempotency key and answers its result.
async fn idempotent<F, Fut>(state: &AppState, client: &str, headers: &HeaderMap, route: &str, raw: &[u8], handler: F) -> Response
where
    F: FnOnce(Asked) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    answer(idempotency::run(&state.payments, &state.in_flight, client, headers, route, raw, handler).await)
}

/// An action on one payment that answers the payment (`200`).
async fn payment_action<Fut>(
    state: &AppState,
    client: &str,
    headers: &HeaderMap,
    route: String,
    raw: &[u8],
    action: impl FnOnce(Asked) -> Fut,
) -> Response
where
    Fut: std::future::Future<Output = Result<crate::payments::model::Payment, ApiError>>,
{
    idempotent(state, client, headers, &route, raw, |asked| async { Ok((StatusCode::OK, payment_json(&action(asked).await?))) }).await
}

/// The payment `id` if `client` may see it; another register's is `404`, as if it did
/// not exist.
pub(super) fn visible_payment(state: &AppState, client: &Client, id: &str) -> Result<crate::payments::model::Payment, ApiError> {
    let payment = state.payments.get(id)?;
    if client.sees(&payment.register) {
        Ok(payment)
    } else {
        Err(PaymentError::NotFound(id.to_string()).into())
    }
}

/// A payment `client` acts on: its own register's, and a role that moves money.
fn acting_on(state: &AppState, client: &Client, id: &str) -> Result<(), ApiError> {
    client.may_move_money()?;
    visible_payment(state, client, id).map(|_| ())
}

/// Creates a payment.
pub async fn create(State(state): State<Arc<AppState>>, client: Client, headers: HeaderMap, body: StrictJson<CreatePayment>) -> Response {
    let StrictJson { value, raw } = body;
    idempotent(&state, &client.name, &headers, "POST /v1/payments", &raw, |asked| async {
        client.may_move_money()?;
        let register = value.register.unwrap_or_else(|| client.default_register());
        if !client.sees(&register) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "register_not_allowed",
                format!("this token does not act for register {register:?}"),
            )
            .field("register"));
        }
        let lines = value
            .lines
            .map(|lines| {
                lines
                    .into_iter()
                    .enumerate()
                    .map(|(index, line)| {
                        let amount = u64::try_from(line.amount)
                            .map_err(|_| ApiError::invalid("a line amount cannot be negative").field(format!("lines[{index}].amount")))?;
                        Ok(Line { sku: line.sku, name: line.name, amount: Amount(amount), labels: line.labels })
                    })
                    .collect::<Result<Vec<_>, ApiError>>()
            })
            .transpose()?;
        let split_of = value
            .split_of
            .map(|id| PaymentId::parse(&id).ok_or_else(|| ApiError::invalid("split_of must be a payment id (pay_…)").field("split_of")))
            .transpose()?;
        if let Some(parent) = &split_of {
            // Another register's purchase is not this till's to continue.
            if state.payments.get(parent.as_str()).is_ok_and(|parent| !client.sees(&parent.register)) {
                return Err(PaymentError::SplitParentNotFound(parent.to_string()).into());
            }
        }
        let request = NewPayment {
            method: value.method,
            amount: positive(value.amount, "amount")?,
            currency: currency(&value.currency, "currency")?,
            reference: value.reference,
            register,
            lines,
            split_of,
            client: client.name.clone(),
        };
        let payment = state.payments.create(request, asked).await?;
        Ok((StatusCode::CREATED, payment_json(&payment)))
    })
    .await
}

/// Reads a payment, optionally waiting for a change.
pub async fn get(
    State(state): State<Arc<AppState>>,
    client: Client,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return ApiError::invalid(rejection.body_text()).into_response(),
    };
    if let Err(error) = visible_payment(&state, &client, &id) {
        return error.into_response();
    }
    let result = match (query.wait, query.version) {
        (Some(wait), version) => {
            if wait > MAX_WAIT_SECONDS {
                return ApiError::invalid(format!("wait is at most {MAX_WAIT_SECONDS} seconds")).field("wait").into_response();
            }
            state.payments.wait(&id, version.unwrap_or(0), Duration::from_secs(wait)).await
        }
        (None, _) => state.payments.get(&id),
    };
    answer(result.map(|payment| (StatusCode::OK, payment_json(&payment))).map_err(ApiError::from))
}

/// Applies a code the POS read.
pub async fn scan(
    State(state): State<Arc<AppState>>,
    client: Client,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: StrictJson<ScanBody>,
) -> Response {
    payment_action(&state, &client.name, &headers, format!("POST /v1/payments/{id}/scan"), &body.raw, |asked| async {
        acting_on(&state, &client, &id)?;
        if body.value.code.trim().is_empty() {
            return Err(ApiError::invalid("code must not be empty").field("code"));
        }
        Ok(state.payments.scan(&id, &body.value.code, asked).await?)
    })
    .await
}

/// Records a manual entry.
pub async fn manual(
    State(state): State<Arc<AppState>>,
    client: Client,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: StrictJson<ManualBody>,
) -> Response {
    payment_action(&state, &client.name, &headers, format!("POST /v1/payments/{id}/manual"), &body.raw, |asked| async {
        acting_on(&state, &client, &id)?;
        let amount = positive(body.value.amount, "amount")?;
        Ok(state.payments.manual(&id, amount, body.value.transaction_id.clone(), asked).await?)
    })
    .await
}

/// Cancels a payment that has taken nothing.
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    client: Client,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: StrictJson<CancelBody>,
) -> Response {
    idempotent(&state, &client.name, &headers, &format!("POST /v1/payments/{id}/cancel"), &body.raw, |asked| async {
        acting_on(&state, &client, &id)?;
        let canceled = state.payments.cancel(&id, asked).await?;
        Ok((StatusCode::OK, canceled_body(&canceled.payment, &canceled.compensation)))
    })
    .await
}

/// Lists payments, newest first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    client: Client,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = (|| {
        let Query(params) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
        let time = |value: Option<String>, field: &str| {
            value
                .map(|text| parse_rfc3339(&text).ok_or_else(|| ApiError::invalid("expected an RFC 3339 timestamp").field(field)))
                .transpose()
        };
        let limit = params.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::invalid("limit is 1 to 100").field("limit"));
        }
        let query = ListQuery {
            registers: client.visible_registers().map(<[String]>::to_vec),
            register: params.register,
            reference: params.reference,
            status: params
                .status
                .map(|status| PaymentStatus::parse(&status).ok_or_else(|| ApiError::invalid("unknown status").field("status")))
                .transpose()?,
            from: time(params.from, "from")?,
            to: time(params.to, "to")?,
            limit,
            starting_after: params
                .starting_after
                .map(|id| {
                    PaymentId::parse(&id).ok_or_else(|| ApiError::invalid("starting_after must be a payment id").field("starting_after"))
                })
                .transpose()?,
        };
        Ok(query)
    })();
    let result = result.and_then(|query| {
        let (payments, has_more) = state.payments.list(&query)?;
        Ok((StatusCode::OK, json!({"data": payments.iter().map(payment_json).collect::<Vec<_>>(), "has_more": has_more})))
    });
    answer(result)
}

/// `GET /v1/refunds` query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundListParams {
    /// 1 to 100, default 20.
    pub limit: Option<usize>,
    /// Only the refunds of this payment.
    pub payment: Option<String>,
}

/// Lists refunds, newest first.
pub async fn list_refunds(
    State(state): State<Arc<AppState>>,
    client: Client,
    query: Result<Query<RefundListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = query.map_err(|rejection| ApiError::invalid(rejection.body_text())).and_then(|Query(params)| {
        let limit = params.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::invalid("limit is 1 to 100").field("limit"));
        }
        let (refunds, has_more) = state.payments.list_refunds(limit, params.payment.as_deref(), client.visible_registers())?;
        let data: Vec<Value> = refunds.iter().map(|refund| serde_json::to_value(refund_view(refund)).unwrap_or_default()).collect();
        Ok((StatusCode::OK, json!({"data": data, "has_more": has_more})))
    });
    answer(result)
}

/// Creates and sends a refund.
pub async fn refund(State(state): State<Arc<AppState>>, client: Client, headers: HeaderMap, body: StrictJson<CreateRefund>) -> Response {
    let StrictJson { value, raw } = body;
    idempotent(&state, &client.name, &headers, "POST /v1/refunds", &raw, |asked| async {
        client.may_move_money()?;
        if let Some(payment) = &value.payment {
            visible_payment(&state, &client, payment)?;
        }
        if value.include_splits {
            let Some(payment_id) = &value.payment else {
                return Err(ApiError::invalid("include_splits needs `payment`").field("include_splits"));
            };
            let payment = state.payments.get(payment_id)?;
            let refunds = state.payments.refund_purchase(&payment, value.reason.clone(), &client.name).await?;
            let data: Vec<Value> = refunds.iter().map(|refund| serde_json::to_value(refund_view(refund)).unwrap_or_default()).collect();
            return Ok((StatusCode::CREATED, json!({"data": data})));
        }
        let request = NewRefund {
            payment: value.payment,
            method: value.method,
            transaction_id: value.transaction_id,
            amount: value.amount.map(|amount| positive(amount, "amount")).transpose()?,
            currency: value.currency.map(|text| currency(&text, "currency")).transpose()?,
            reason: value.reason,
            client: client.name.clone(),
        };
        match state.payments.refunded_payment(&request)? {
            Some(payment) if !client.sees(&payment.register) => return Err(PaymentError::NotFound(payment.id.to_string()).into()),
            Some(_) => {}
            None => client.may_refund_by_transaction()?,
        }
        let refund = state.payments.refund(request, asked).await?;
        Ok((StatusCode::CREATED, serde_json::to_value(refund_view(&refund)).unwrap_or_default()))
    })
    .await
}

/// Reads a refund.
pub async fn get_refund(State(state): State<Arc<AppState>>, client: Client, Path(id): Path<String>) -> Response {
    answer(
        state
            .payments
            .get_refund(&id)
            .and_then(|refund| match state.payments.refund_visible(&refund, client.visible_registers())? {
                true => Ok(refund),
                false => Err(PaymentError::RefundNotFound(id.clone())),
            })
            .map(|refund| (StatusCode::OK, serde_json::to_value(refund_view(&refund)).unwrap_or_default()))
            .map_err(ApiError::from),
    )
}
