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
    #[schemars(length(min = 1, max = 64))]
    pub method: String,
    /// Minor units (cents), more than zero.
    #[schemars(range(min = 1, max = 1_000_000_000))]
    #[serde(deserialize_with = "whole_number")]
    pub amount: i64,
    /// ISO 4217, e.g. `EUR`.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
    /// The POS's receipt number.
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub reference: Option<String>,
    /// The register; defaults to the till's own.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    pub register: Option<String>,
    /// Cart lines; when given, their amounts must sum to `amount`.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub lines: Option<Vec<CartLineBody>>,
    /// An earlier payment of the same purchase whose remaining amount this one covers.
    #[serde(default)]
    #[schemars(regex(pattern = r"^pay_[0-9A-Za-z]{16}$"))]
    pub split_of: Option<String>,
}

/// A cart line.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CartLineBody {
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub sku: String,
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub name: String,
    #[schemars(range(min = 0, max = 1_000_000_000))]
    #[serde(deserialize_with = "whole_number")]
    pub amount: i64,
    #[serde(default)]
    #[schemars(length(max = 20), inner(length(max = 64)))]
    pub labels: Vec<String>,
}

/// `POST /v1/payments/{id}/scan`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanBody {
    /// The text read from the QR code.
    #[schemars(length(min = 1, max = 4096), regex(pattern = r"\S"))]
    pub code: String,
}

/// `POST /v1/payments/{id}/manual`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualBody {
    /// The amount on the customer's receipt, in cents.
    #[schemars(range(min = 1, max = 1_000_000_000))]
    #[serde(deserialize_with = "whole_number")]
    pub amount: i64,
    /// The receipt's transaction id (`tx_…`), when the cashier can read it.
    #[serde(default)]
    #[schemars(length(min = 1, max = 128))]
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
    #[schemars(length(min = 1, max = 64))]
    pub payment: Option<String>,
    /// With `transaction_id`, for a payment posbridge did not take or no longer has.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    pub method: Option<String>,
    /// The provider's transaction id (`tx_…`); needed for manual Smartum payments.
    #[serde(default)]
    #[schemars(length(min = 1, max = 128))]
    pub transaction_id: Option<String>,
    /// Cents; defaults to everything still refundable.
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub amount: Option<i64>,
    /// ISO 4217, for refunds by transaction id (default `EUR`).
    #[serde(default)]
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: Option<String>,
    /// Free text, e.g. `customer_request`.
    #[serde(default)]
    #[schemars(length(max = 256))]
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
    #[schemars(range(min = 0, max = 60))]
    pub wait: Option<u64>,
    /// …until the payment's version is greater than this.
    #[schemars(range(min = 0, max = 9_007_199_254_740_991u64))]
    pub version: Option<u64>,
}

/// `GET /v1/payments` query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[schemars(length(max = 64))]
    pub register: Option<String>,
    /// The POS's reference (receipt number): the payments of one purchase.
    #[schemars(length(max = 128))]
    pub reference: Option<String>,
    pub status: Option<PaymentStatus>,
    /// RFC 3339; payments created at or after.
    #[schemars(extend("format" = "date-time"))]
    pub from: Option<String>,
    /// RFC 3339; payments created at or before.
    #[schemars(extend("format" = "date-time"))]
    pub to: Option<String>,
    /// 1 to 100, default 20.
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<usize>,
    /// A payment id: continue after it (pagination).
    #[schemars(regex(pattern = r"^pay_[0-9A-Za-z]{16}$"))]
    pub starting_after: Option<String>,
}

/// An integer, also written as `1500.0` (JSON Schema counts that as an integer).
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole =
        number.as_i64().or_else(|| number.as_f64().filter(|float| float.fract() == 0.0 && float.abs() < 9.0e15).map(|float| float as i64));
    whole.ok_or_else(|| serde::de::Error::custom("expected a whole number of cents"))
}

fn optional_whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct Whole(#[serde(deserialize_with = "whole_number")] i64);
    Ok(Option::<Whole>::deserialize(deserializer)?.map(|Whole(value)| value))
}

/// The largest amount accepted anywhere (10,000,000.00 in a two-decimal currency).
pub const MAX_AMOUNT: u64 = 1_000_000_000;

fn positive(value: i64, field: &str) -> Result<Amount, ApiError> {
    u64::try_from(value)
        .ok()
        .filter(|amount| (1..=MAX_AMOUNT).contains(amount))
        .map(Amount)
        .ok_or_else(|| ApiError::invalid(format!("{field} must be a whole number of cents from 1 to {MAX_AMOUNT}")).field(field))
}

/// A text field within its documented length (characters).
pub(super) fn bounded(value: Option<&str>, field: &str, min: usize, max: usize) -> Result<(), ApiError> {
    match value.map(|text| text.chars().count()) {
        Some(length) if length < min || length > max => {
            Err(ApiError::invalid(format!("{field} must be {min} to {max} characters long")).field(field))
        }
        _ => Ok(()),
    }
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
pub(super) async fn idempotent<F, Fut>(state: &AppState, client: &str, headers: &HeaderMap, route: &str, raw: &[u8], handler: F) -> Response
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
pub(super) async fn visible_payment(state: &AppState, client: &Client, id: &str) -> Result<crate::payments::model::Payment, ApiError> {
    let payment = state.payments.get(id).await?;
    if client.sees(&payment.register) {
        Ok(payment)
    } else {
        Err(PaymentError::NotFound(id.to_string()).into())
    }
}

/// A payment `client` acts on: its own register's, and a role that moves money.
async fn acting_on(state: &AppState, client: &Client, id: &str) -> Result<(), ApiError> {
    client.may_move_money()?;
    visible_payment(state, client, id).await.map(|_| ())
}

/// Creates a payment.
pub async fn create(State(state): State<Arc<AppState>>, client: Client, headers: HeaderMap, body: StrictJson<CreatePayment>) -> Response {
    let StrictJson { value, raw } = body;
    idempotent(&state, &client.name, &headers, "POST /v1/payments", &raw, |asked| async {
        client.may_move_money()?;
        bounded(Some(&value.method), "method", 1, 64)?;
        bounded(value.reference.as_deref(), "reference", 0, 128)?;
        bounded(value.register.as_deref(), "register", 1, 64)?;
        if value.lines.as_ref().is_some_and(|lines| lines.len() > 100) {
            return Err(ApiError::invalid("at most 100 lines").field("lines"));
        }
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
                        let at = |field: &str| format!("lines[{index}].{field}");
                        let amount = u64::try_from(line.amount)
                            .ok()
                            .filter(|amount| *amount <= MAX_AMOUNT)
                            .ok_or_else(|| ApiError::invalid(format!("a line amount is 0 to {MAX_AMOUNT} cents")).field(at("amount")))?;
                        bounded(Some(&line.sku), &at("sku"), 0, 64)?;
                        bounded(Some(&line.name), &at("name"), 0, 256)?;
                        if line.labels.len() > 20 {
                            return Err(ApiError::invalid("at most 20 labels").field(at("labels")));
                        }
                        for (label_index, label) in line.labels.iter().enumerate() {
                            bounded(Some(label), &at(&format!("labels[{label_index}]")), 0, 64)?;
                        }
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
            if state.payments.get(parent.as_str()).await.is_ok_and(|parent| !client.sees(&parent.register)) {
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
    if query.version.is_some_and(|version| version > super::MAX_JSON_INTEGER) {
        return ApiError::invalid("version is at most 2^53 - 1").field("version").into_response();
    }
    if let Err(error) = visible_payment(&state, &client, &id).await {
        return error.into_response();
    }
    let result = match (query.wait, query.version) {
        (Some(wait), version) => {
            if wait > MAX_WAIT_SECONDS {
                return ApiError::invalid(format!("wait is at most {MAX_WAIT_SECONDS} seconds")).field("wait").into_response();
            }
            state.payments.wait(&id, version.unwrap_or(0), Duration::from_secs(wait)).await
        }
        (None, _) => match settled(&state).await {
            Ok(()) => state.payments.get(&id).await,
            Err(error) => return error.into_response(),
        },
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
        acting_on(&state, &client, &id).await?;
        if body.value.code.trim().is_empty() {
            return Err(ApiError::invalid("code must not be empty").field("code"));
        }
        bounded(Some(&body.value.code), "code", 1, 4096)?;
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
        acting_on(&state, &client, &id).await?;
        let amount = positive(body.value.amount, "amount")?;
        bounded(body.value.transaction_id.as_deref(), "transaction_id", 1, 128)?;
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
        acting_on(&state, &client, &id).await?;
        let canceled = state.payments.cancel(&id, asked).await?;
        Ok((StatusCode::OK, canceled_body(&canceled.payment, &canceled.compensation)))
    })
    .await
}

/// Waits until every applied change is durable, so a read never shows what a crash
/// could still undo (usually free: the flush is done or under way).
async fn settled(state: &AppState) -> Result<(), ApiError> {
    state.payments.store().settled().await.map_err(ApiError::from)
}

/// Lists payments, newest first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    client: Client,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(error) = settled(&state).await {
        return error.into_response();
    }
    let result = (|| {
        let Query(params) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
        let time = |value: Option<String>, field: &str| {
            value
                .map(|text| parse_rfc3339(&text).ok_or_else(|| ApiError::invalid("expected an RFC 3339 timestamp").field(field)))
                .transpose()
        };
        let limit = page_limit(params.limit)?;
        bounded(params.register.as_deref(), "register", 0, 64)?;
        bounded(params.reference.as_deref(), "reference", 0, 128)?;
        let query = ListQuery {
            registers: client.visible_registers().map(<[String]>::to_vec),
            register: params.register,
            reference: params.reference,
            status: params.status,
            from: time(params.from, "from")?,
            to: time(params.to, "to")?,
            limit,
            starting_after: starting_after(params.starting_after)?,
        };
        Ok(query)
    })();
    let result = match result {
        Ok(query) => state.payments.list(&query).await.map_err(ApiError::from).map(|(payments, has_more)| {
            (StatusCode::OK, json!({"data": payments.iter().map(payment_json).collect::<Vec<_>>(), "has_more": has_more}))
        }),
        Err(error) => Err(error),
    };
    answer(result)
}

/// `GET /v1/refunds` query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundListParams {
    /// 1 to 100, default 20.
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<usize>,
    /// Only the refunds of this payment.
    #[schemars(length(max = 64))]
    pub payment: Option<String>,
}

/// Lists refunds, newest first.
pub async fn list_refunds(
    State(state): State<Arc<AppState>>,
    client: Client,
    query: Result<Query<RefundListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(error) = settled(&state).await {
        return error.into_response();
    }
    let result = async {
        let Query(params) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
        let limit = page_limit(params.limit)?;
        bounded(params.payment.as_deref(), "payment", 0, 64)?;
        let (refunds, has_more) = state.payments.list_refunds(limit, params.payment.as_deref(), client.visible_registers()).await?;
        let data: Vec<Value> = refunds.iter().map(|refund| serde_json::to_value(refund_view(refund)).unwrap_or_default()).collect();
        Ok((StatusCode::OK, json!({"data": data, "has_more": has_more})))
    };
    answer(result.await)
}

/// A list's `limit`: 1 to 100, default 20.
fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit is 1 to 100").field("limit"));
    }
    Ok(limit)
}

/// A list's `starting_after`: the last payment id of the previous page.
fn starting_after(id: Option<String>) -> Result<Option<PaymentId>, ApiError> {
    id.map(|id| PaymentId::parse(&id).ok_or_else(|| ApiError::invalid("starting_after must be a payment id").field("starting_after")))
        .transpose()
}

/// `GET /v1/exceptions` query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExceptionListParams {
    /// 1 to 100, default 20.
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<usize>,
    /// The last payment id of the previous page.
    #[schemars(length(max = 64))]
    pub starting_after: Option<String>,
}

/// Lists receipts taken offline that the provider refused, newest first: for managers
/// (and technicians, who read everything); a till's token is refused.
pub async fn list_exceptions(
    State(state): State<Arc<AppState>>,
    client: Client,
    query: Result<Query<ExceptionListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(error) = settled(&state).await {
        return error.into_response();
    }
    let result = async {
        client.may_read_exceptions()?;
        let Query(params) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
        let limit = page_limit(params.limit)?;
        let after = starting_after(params.starting_after)?;
        let (payments, has_more) = state.payments.exceptions(limit, after.as_ref()).await?;
        let data: Vec<Value> = payments.iter().map(crate::payments::view::exception).collect();
        Ok((StatusCode::OK, json!({"data": data, "has_more": has_more})))
    };
    answer(result.await)
}

/// Creates and sends a refund.
pub async fn refund(State(state): State<Arc<AppState>>, client: Client, headers: HeaderMap, body: StrictJson<CreateRefund>) -> Response {
    let StrictJson { value, raw } = body;
    idempotent(&state, &client.name, &headers, "POST /v1/refunds", &raw, |asked| async {
        client.may_move_money()?;
        bounded(value.payment.as_deref(), "payment", 1, 64)?;
        bounded(value.method.as_deref(), "method", 1, 64)?;
        bounded(value.transaction_id.as_deref(), "transaction_id", 1, 128)?;
        bounded(value.reason.as_deref(), "reason", 0, 256)?;
        if let Some(payment) = &value.payment {
            visible_payment(&state, &client, payment).await?;
        }
        if value.include_splits {
            let Some(payment_id) = &value.payment else {
                return Err(PaymentError::Incomplete { field: "payment", message: "include_splits needs `payment`".into() }.into());
            };
            let payment = state.payments.get(payment_id).await?;
            // The same state rule as a plain refund: only a payment that took money.
            if payment.status != PaymentStatus::Succeeded {
                return Err(PaymentError::InvalidState { status: payment.status, action: "refunded" }.into());
            }
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
        match state.payments.refunded_payment(&request).await? {
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
    if let Err(error) = settled(&state).await {
        return error.into_response();
    }
    let visible = async {
        let refund = state.payments.get_refund(&id).await?;
        match state.payments.refund_visible(&refund, client.visible_registers()).await? {
            true => Ok(refund),
            false => Err(PaymentError::RefundNotFound(id.clone())),
        }
    };
    answer(
        visible
            .await
            .map(|refund| (StatusCode::OK, serde_json::to_value(refund_view(&refund)).unwrap_or_default()))
            .map_err(ApiError::from),
    )
}
