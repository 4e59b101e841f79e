//! `/openapi.json`: an OpenAPI 3.1 document generated from the route table and the
//! request/response types (their JSON Schemas come from `schemars` derives on the same
//! structs serde uses, constraints included), so the contract cannot drift from the
//! code. Every operation lists every error status it can answer, with the error shape
//! and the headers that come with it.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::error::ErrorBody;

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// A type's schema (a `$ref` into the document's components).
pub fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a successful answer carries.
#[derive(Clone, Copy)]
enum Body {
    Json(u16, SchemaFn),
    EventStream,
    Text(&'static str),
}

/// One route's documentation.
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Needs a bearer token.
    pub auth: bool,
    request: Option<SchemaFn>,
    request_required: bool,
    /// Media types of a non-JSON body (an image).
    binary_body: &'static [&'static str],
    query: Option<SchemaFn>,
    body: Option<Body>,
    /// Statuses besides the common ones this route answers with the success schema.
    also: &'static [u16],
    links: bool,
}

impl RouteDoc {
    /// A `/v1` route (bearer token).
    pub fn new(method: &'static str, path: &'static str, summary: &'static str) -> Self {
        RouteDoc {
            method,
            path,
            summary,
            auth: true,
            request: None,
            request_required: true,
            binary_body: &[],
            query: None,
            body: None,
            also: &[],
            links: false,
        }
    }

    /// A route without a token.
    pub fn public(method: &'static str, path: &'static str, summary: &'static str) -> Self {
        RouteDoc { auth: false, ..RouteDoc::new(method, path, summary) }
    }

    /// Its JSON request body.
    pub fn request(mut self, schema: SchemaFn) -> Self {
        self.request = Some(schema);
        self
    }

    /// Its JSON body may be left out.
    pub fn optional_request(mut self) -> Self {
        self.request_required = false;
        self
    }

    /// Its body is a file of one of these media types.
    pub fn binary_request(mut self, media_types: &'static [&'static str]) -> Self {
        self.binary_body = media_types;
        self
    }

    /// Its query parameters (an object schema).
    pub fn query(mut self, schema: SchemaFn) -> Self {
        self.query = Some(schema);
        self
    }

    /// Answers `200` with this body.
    pub fn ok(mut self, schema: SchemaFn) -> Self {
        self.body = Some(Body::Json(200, schema));
        self
    }

    /// Answers `201` with this body.
    pub fn created(mut self, schema: SchemaFn) -> Self {
        self.body = Some(Body::Json(201, schema));
        self
    }

    /// Answers `text/event-stream`.
    pub fn event_stream(mut self) -> Self {
        self.body = Some(Body::EventStream);
        self
    }

    /// Answers this text media type.
    pub fn text(mut self, media_type: &'static str) -> Self {
        self.body = Some(Body::Text(media_type));
        self
    }

    /// Also answers these statuses with the success body (`/readyz`: 503 not ready).
    pub fn also(mut self, statuses: &'static [u16]) -> Self {
        self.also = statuses;
        self
    }

    /// The created payment links to the operations on it.
    pub fn with_links(mut self) -> Self {
        self.links = true;
        self
    }

    /// `post_v1_payments_id_scan`: unique per method and path.
    fn operation_id(&self) -> String {
        let path: Vec<&str> =
            self.path.split('/').filter(|part| !part.is_empty()).map(|part| part.trim_matches(|c| c == '{' || c == '}')).collect();
        let path = if path.is_empty() { "root".to_string() } else { path.join("_").replace('.', "_") };
        format!("{}_{path}", self.method.to_ascii_lowercase())
    }

    fn tag(&self) -> &'static str {
        let groups = [
            ("/v1/payments", "payments"),
            ("/v1/refunds", "refunds"),
            ("/v1/events", "events"),
            ("/v1/scanners", "scanners"),
            ("/v1/decode", "scanners"),
        ];
        groups.iter().find(|(prefix, _)| self.path.starts_with(prefix)).map(|(_, tag)| *tag).unwrap_or("operations")
    }

    /// The error statuses this route can answer.
    fn error_statuses(&self) -> Vec<u16> {
        // Every route: a foreign Host (403), the global limit (429), a store failure (500).
        let mut statuses = vec![400, 403, 405, 429, 500];
        if self.auth {
            statuses.push(401);
            statuses.push(404);
        }
        if self.method == "POST" {
            statuses.extend([409, 413, 415, 422, 502, 503, 504]);
        }
        statuses.retain(|status| !self.also.contains(status));
        statuses.sort_unstable();
        statuses.dedup();
        statuses
    }
}

/// The OpenAPI 3.1 document for `routes`, served at `base_url`.
pub fn document<H>(routes: &[(RouteDoc, H)], base_url: &str) -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.definitions_path = "/components/schemas".into();
            settings.meta_schema = None;
        })
        .into_generator();
    let error = schema::<ErrorBody>(&mut generator);
    let mut paths = Map::new();
    for (doc, _) in routes {
        let operation = operation(doc, &mut generator, &error);
        let entry = paths.entry(doc.path.to_string()).or_insert_with(|| json!({}));
        entry[doc.method.to_ascii_lowercase()] = operation;
    }
    let tags: Vec<Value> = ["payments", "refunds", "events", "scanners", "operations"].iter().map(|name| json!({"name": name})).collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "posbridge localhost API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Payments, refunds and events for cash registers. Every POST takes an Idempotency-Key; every answer carries X-Request-Id."
        },
        "servers": [{"url": base_url}],
        "tags": tags,
        "components": {
            "schemas": generator.take_definitions(true),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "paths": paths,
    })
}

fn request_id_header() -> Value {
    json!({"description": "The request's id (the client's X-Request-Id, or a new one); every log line of the request carries it.", "schema": {"type": "string"}})
}

fn error_response(status: u16, error: &Schema) -> Value {
    let mut headers = json!({"X-Request-Id": request_id_header()});
    match status {
        401 => headers["WWW-Authenticate"] = json!({"description": "`Bearer`", "schema": {"type": "string"}}),
        429 => headers["Retry-After"] = json!({"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}}),
        _ => {}
    }
    json!({"description": reason(status), "headers": headers, "content": {"application/json": {"schema": error}}})
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "invalid_request: a field is malformed (see error.field)",
        401 => "unauthorized: missing or unknown bearer token",
        403 => {
            "forbidden: a Host that is not this machine, an origin not allowed, a role that may not do this, or a register not this till's"
        }
        404 => "not_found: no such object (or another register's)",
        405 => "method_not_allowed",
        409 => "invalid_state, receipt_already_used, idempotency_conflict, method_not_configured, conflict…",
        413 => "payload_too_large, image_too_large",
        415 => "unsupported_media_type",
        422 => "the request cannot be done: unknown_method, refund_exceeds_payment, a provider's refusal…",
        429 => "rate_limited, decoder_busy",
        500 => "store_error",
        502 => "provider_error, plugin_panicked, plugin_error",
        503 => "provider_unavailable, outcome_unknown, store_unavailable",
        504 => "plugin_timeout",
        _ => "An error",
    }
}

/// Query parameters cannot be null: `["integer", "null"]` → `"integer"`, an `anyOf`
/// with a null branch → the other branch.
fn non_null(mut schema: Value) -> Value {
    if let Some(types) = schema.get("type").and_then(Value::as_array).cloned() {
        let kept: Vec<Value> = types.into_iter().filter(|kind| kind != "null").collect();
        schema["type"] = if kept.len() == 1 { kept[0].clone() } else { Value::Array(kept) };
    }
    if let Some(branches) = schema.get("anyOf").and_then(Value::as_array).cloned() {
        let kept: Vec<Value> = branches.into_iter().filter(|branch| branch.get("type") != Some(&json!("null"))).collect();
        if kept.len() == 1 {
            let mut only = kept[0].clone();
            if let (Some(only), Some(description)) = (only.as_object_mut(), schema.get("description")) {
                only.insert("description".into(), description.clone());
            }
            return only;
        }
    }
    schema
}

fn query_parameters(query: SchemaFn, generator: &mut SchemaGenerator) -> Vec<Value> {
    let schema = query(generator);
    let name =
        schema.get("$ref").and_then(Value::as_str).and_then(|reference| reference.rsplit('/').next()).unwrap_or_default().to_string();
    let properties = generator
        .definitions()
        .get(&name)
        .and_then(|definition| definition.get("properties"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    properties
        .into_iter()
        .map(|(parameter, schema)| json!({"name": parameter, "in": "query", "required": false, "schema": non_null(schema)}))
        .collect()
}

fn links() -> Value {
    let id = "$response.body#/id";
    json!({
        "GetPayment": {"operationId": "get_v1_payments_id", "parameters": {"id": id}},
        "ScanPayment": {"operationId": "post_v1_payments_id_scan", "parameters": {"id": id}},
        "EnterPaymentByHand": {"operationId": "post_v1_payments_id_manual", "parameters": {"id": id}},
        "CancelPayment": {"operationId": "post_v1_payments_id_cancel", "parameters": {"id": id}},
        "RefundPayment": {"operationId": "post_v1_refunds", "requestBody": {"payment": id}}
    })
}

fn success(doc: &RouteDoc, generator: &mut SchemaGenerator) -> (u16, Value) {
    let headers = json!({"X-Request-Id": request_id_header()});
    match doc.body {
        Some(Body::Json(status, body)) => {
            let mut response =
                json!({"description": "Success", "headers": headers, "content": {"application/json": {"schema": body(generator)}}});
            if doc.links {
                response["links"] = links();
            }
            (status, response)
        }
        Some(Body::EventStream) => {
            let event = json!({
                "type": "object",
                "description": "One event: its id (for Last-Event-ID; none on `events.truncated`, which says the journal no longer keeps what was asked for), its kind, and its data as a JSON object in text",
                "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "string"}},
            });
            let content = json!({"text/event-stream": {"schema": event}});
            (200, json!({"description": "An event stream", "headers": headers, "content": content}))
        }
        Some(Body::Text(media)) => {
            (200, json!({"description": "Success", "headers": headers, "content": {media: {"schema": {"type": "string"}}}}))
        }
        None => (200, json!({"description": "Success", "headers": headers})),
    }
}

fn operation(doc: &RouteDoc, generator: &mut SchemaGenerator, error: &Schema) -> Value {
    let mut parameters = Vec::new();
    if doc.path.contains("{id}") {
        parameters
            .push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$"}}));
    }
    if let Some(query) = doc.query {
        parameters.extend(query_parameters(query, generator));
    }
    if doc.method == "POST" {
        let key = json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7E]+$"});
        parameters.push(json!({"name": "Idempotency-Key", "in": "header", "required": false, "schema": key}));
        let prefer = json!({"type": "string"});
        parameters.push(json!({"name": "Prefer", "in": "header", "required": false, "schema": prefer,
            "description": "`wait=N` (RFC 7240): answer after at most N seconds (N ≤ 999) with the current state; the work goes on. Other preferences are ignored."}));
    }
    let mut responses = Map::new();
    let (status, response) = success(doc, generator);
    responses.insert(status.to_string(), response.clone());
    for also in doc.also {
        responses.insert(also.to_string(), response.clone());
    }
    for status in doc.error_statuses() {
        responses.insert(status.to_string(), error_response(status, error));
    }
    let mut operation = json!({
        "operationId": doc.operation_id(),
        "summary": doc.summary,
        "tags": [doc.tag()],
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(request) = doc.request {
        operation["requestBody"] =
            json!({"required": doc.request_required, "content": {"application/json": {"schema": request(generator)}}});
    }
    if !doc.binary_body.is_empty() {
        let content: Map<String, Value> = doc
            .binary_body
            .iter()
            .map(|media| (media.to_string(), json!({"schema": {"type": "string", "contentMediaType": media}})))
            .collect();
        operation["requestBody"] = json!({"required": true, "content": content});
    }
    operation["security"] = if doc.auth { json!([{"bearer": []}]) } else { json!([]) };
    operation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_never_null() {
        assert_eq!(non_null(json!({"type": ["integer", "null"], "minimum": 1})), json!({"type": "integer", "minimum": 1}));
        let status = json!({"anyOf": [{"$ref": "#/components/schemas/PaymentStatus"}, {"type": "null"}], "description": "d"});
        assert_eq!(non_null(status), json!({"$ref": "#/components/schemas/PaymentStatus", "description": "d"}));
    }

    #[test]
    fn operation_ids_are_unique_per_method_and_path() {
        assert_eq!(RouteDoc::new("POST", "/v1/payments/{id}/scan", "").operation_id(), "post_v1_payments_id_scan");
        assert_eq!(RouteDoc::public("GET", "/openapi.json", "").operation_id(), "get_openapi_json");
        assert_eq!(RouteDoc::public("GET", "/", "").operation_id(), "get_root");
    }
}
