//! `/openapi.json`, generated from the route table and the request/response types
//! (their JSON Schemas come from `schemars` derives on the same structs serde uses).

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::error::ErrorBody;

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// A type's schema (a `$ref` into the document's components).
pub fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// One route's documentation.
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Needs a bearer token.
    pub auth: bool,
    request: Option<SchemaFn>,
    /// Media types of a non-JSON body (an image).
    binary_body: &'static [&'static str],
    query: Option<SchemaFn>,
    response: Option<(u16, SchemaFn)>,
    event_stream: bool,
}

impl RouteDoc {
    /// A `/v1` route (bearer token).
    pub fn new(method: &'static str, path: &'static str, summary: &'static str) -> Self {
        RouteDoc { method, path, summary, auth: true, request: None, binary_body: &[], query: None, response: None, event_stream: false }
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
        self.response = Some((200, schema));
        self
    }

    /// Answers `201` with this body.
    pub fn created(mut self, schema: SchemaFn) -> Self {
        self.response = Some((201, schema));
        self
    }

    /// Answers `text/event-stream`.
    pub fn event_stream(mut self) -> Self {
        self.event_stream = true;
        self
    }
}

/// The OpenAPI 3 document for `routes`.
pub fn document<H>(routes: &[(RouteDoc, H)]) -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let error = schema::<ErrorBody>(&mut generator);
    let mut paths = Map::new();
    for (doc, _) in routes {
        let operation = operation(doc, &mut generator, &error);
        let entry = paths.entry(doc.path.to_string()).or_insert_with(|| json!({}));
        entry[doc.method.to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "posbridge localhost API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Payments, refunds and events for cash registers. Every POST takes an Idempotency-Key."
        },
        "servers": [{"url": "http://127.0.0.1:8787"}],
        "components": {
            "schemas": generator.take_definitions(true),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "paths": paths,
    })
}

fn operation(doc: &RouteDoc, generator: &mut SchemaGenerator, error: &Schema) -> Value {
    let mut parameters = Vec::new();
    if doc.path.contains("{id}") {
        parameters.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}));
    }
    if let Some(query) = doc.query {
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
        for (parameter, schema) in properties {
            parameters.push(json!({"name": parameter, "in": "query", "required": false, "schema": schema}));
        }
    }
    if doc.method == "POST" {
        parameters.push(json!({"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "minLength": 1, "maxLength": 255}}));
    }
    let mut responses = Map::new();
    let error_content = json!({"application/json": {"schema": error}});
    match (doc.response, doc.event_stream) {
        (Some((status, response)), _) => {
            responses.insert(
                status.to_string(),
                json!({"description": "Success", "content": {"application/json": {"schema": response(generator)}}}),
            );
        }
        (None, true) => {
            responses.insert(
                "200".into(),
                json!({"description": "An event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}),
            );
        }
        (None, false) => {
            responses.insert("200".into(), json!({"description": "Success"}));
        }
    }
    responses.insert("default".into(), json!({"description": "An error", "content": error_content}));
    let mut operation = json!({"summary": doc.summary, "parameters": parameters, "responses": responses});
    if let Some(request) = doc.request {
        operation["requestBody"] =
            json!({"required": doc.path != "/v1/payments/{id}/cancel", "content": {"application/json": {"schema": request(generator)}}});
    }
    if !doc.binary_body.is_empty() {
        let content: Map<String, Value> =
            doc.binary_body.iter().map(|media| (media.to_string(), json!({"schema": {"type": "string", "format": "binary"}}))).collect();
        operation["requestBody"] = json!({"required": true, "content": content});
    }
    if doc.auth {
        operation["security"] = json!([{"bearer": []}]);
    }
    operation
}
