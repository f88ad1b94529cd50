//! Finishing touches on the generated OpenAPI document that hold for every operation alike, so
//! they are stated once here instead of in each handler's annotation (where they would drift):
//! the error answers the shared layers can give, and the constraints of the shared path
//! parameters.

use utoipa::openapi::{
    HttpMethod, OpenApi, Ref, RefOr, ResponseBuilder,
    header::HeaderBuilder,
    path::{Operation, ParameterIn},
    schema::{ObjectBuilder, Schema, Type},
};

/// Routes that touch no database and no tenant: they cannot answer 404 or 503.
const STATIC_ROUTES: [&str; 3] = ["/healthz", "/metrics", "/v1/openapi.json"];

/// A tenant slug (`tenants::TenantSlug`): 3–63 lowercase letters, digits and `-`, not at the ends.
const SLUG_PATTERN: &str = "^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$";

pub fn finish(doc: &mut OpenApi) {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for item in doc.paths.paths.values() {
        for op in [&item.get, &item.put, &item.post, &item.delete, &item.options, &item.head, &item.patch] {
            if let Some(id) = op.as_ref().and_then(|op| op.operation_id.clone()) {
                *seen.entry(id).or_default() += 1;
            }
        }
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        for method in [
            HttpMethod::Get,
            HttpMethod::Put,
            HttpMethod::Post,
            HttpMethod::Delete,
            HttpMethod::Options,
            HttpMethod::Head,
            HttpMethod::Patch,
        ] {
            let op = match method {
                HttpMethod::Get => item.get.as_mut(),
                HttpMethod::Put => item.put.as_mut(),
                HttpMethod::Post => item.post.as_mut(),
                HttpMethod::Delete => item.delete.as_mut(),
                HttpMethod::Options => item.options.as_mut(),
                HttpMethod::Head => item.head.as_mut(),
                HttpMethod::Patch => item.patch.as_mut(),
                _ => None,
            };
            if let Some(op) = op {
                document_errors(path, op);
                // A CORS preflight answers for any value of the path's parameters.
                if method != HttpMethod::Options {
                    constrain_parameters(op);
                }
                describe_responses(op);
                unique_operation_id(op, &seen);
            }
        }
    }
}

/// Adds each error answer an operation can get from the shared layers, unless its annotation
/// already documents that status with a more specific description.
fn document_errors(path: &str, op: &mut Operation) {
    let is_static = STATIC_ROUTES.contains(&path);
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = op.request_body.is_some();
    let mut add = |status: &str, description: &str| {
        op.responses.responses.entry(status.to_string()).or_insert_with(|| error_response(status, description));
    };
    // Every route: a `%00` in the URL, a malformed query parameter.
    add("400", "Malformed request: the URL, a query parameter or the JSON body (`field` names the culprit).");
    if secured {
        add("401", "Missing, invalid or revoked bearer token.");
        add("403", "The token may not do this (an auditor token on an admin route).");
    }
    if !is_static && path.contains('{') {
        add("404", "No such resource, or no such tenant for this token.");
    }
    if has_body {
        add("413", "The body is larger than the limit (`server.max_body_bytes`).");
        add("415", "Content-Type is neither `application/json`, `*+json` nor `text/plain`.");
        add("422", "The JSON is well-formed but breaks a rule; `field` names the offending field.");
    }
    if !is_static {
        add("503", "The database is unreachable; retry after `Retry-After` seconds.");
    }
}

fn error_response(status: &str, description: &str) -> RefOr<utoipa::openapi::Response> {
    let mut builder = ResponseBuilder::new()
        .description(description)
        .content("application/json", utoipa::openapi::Content::new(Some(Ref::from_schema_name("ErrorBody"))));
    if status == "503" {
        builder = builder.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1))))
                .description(Some("Seconds to wait before retrying."))
                .build(),
        );
    }
    RefOr::T(builder.build())
}

/// A visitor id (`consent::records::VisitorId`): a UUID or 1–64 URL-safe characters.
pub const VISITOR_ID_PATTERN: &str = "^[A-Za-z0-9._~-]{1,64}$";

/// Parameters shared by many routes, whose Rust types are parsed by hand (newtypes documented
/// as plain strings): the tenant slug, visitor ids, a consent action, an export format.
fn constrain_parameters(op: &mut Operation) {
    let string = |min: usize, max: usize, pattern: &str| {
        Some(RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(min))
                .max_length(Some(max))
                .pattern(Some(pattern))
                .build(),
        )))
    };
    let one_of = |values: &[&str]| {
        Some(RefOr::T(Schema::Object(
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values.iter().copied())).build(),
        )))
    };
    for param in op.parameters.iter_mut().flatten() {
        let RefOr::T(param) = param else { continue };
        match (&param.parameter_in, param.name.as_str()) {
            (ParameterIn::Path, "tenant") => param.schema = string(3, 63, SLUG_PATTERN),
            (ParameterIn::Path | ParameterIn::Query, "visitor_id") => param.schema = string(1, 64, VISITOR_ID_PATTERN),
            (ParameterIn::Query, "action") => {
                param.schema = one_of(&["accept_all", "reject_all", "custom", "withdraw"])
            }
            (ParameterIn::Query, "format") => param.schema = one_of(&["csv", "ndjson"]),
            (ParameterIn::Path, "provider") => {
                let names: Vec<&str> = crate::providers::all().iter().map(|p| p.name()).collect();
                param.schema = one_of(&names)
            }
            _ => {}
        }
    }
}

/// OpenAPI requires a description on every response; where an annotation gives none, the
/// status's reason phrase stands in.
fn describe_responses(op: &mut Operation) {
    for (status, response) in op.responses.responses.iter_mut() {
        if let RefOr::T(response) = response
            && response.description.is_empty()
        {
            let reason = status.parse::<u16>().ok().and_then(|s| axum::http::StatusCode::from_u16(s).ok());
            response.description = reason.and_then(|r| r.canonical_reason()).unwrap_or("Response").to_string();
        }
    }
}

/// Operation ids are the handlers' names, and two modules may name a handler alike
/// (`list_configs` for consent and for provider configs); OpenAPI wants them unique, so a shared
/// name gets the operation's tag in front (`provider_configs_list_configs`).
fn unique_operation_id(op: &mut Operation, seen: &std::collections::HashMap<String, usize>) {
    let Some(id) = op.operation_id.as_ref() else { return };
    if seen.get(id).copied().unwrap_or(0) < 2 {
        return;
    }
    let tag = op.tags.as_ref().and_then(|t| t.first()).cloned().unwrap_or_default();
    let prefix: String =
        tag.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    op.operation_id = Some(format!("{prefix}_{id}"));
}

/// A provider config body is one provider's shape, chosen by the `{provider}` in the path: the
/// common fields and the provider's settings. Generated as `allOf` of two closed objects (the
/// settings refuse unknown fields), no value satisfies both halves; stated as one object per
/// provider, it says what the gateway accepts. `anyOf`, not `oneOf`: the path picks the branch.
pub fn flatten_provider_input(doc: &mut serde_json::Value) {
    use serde_json::{Map, Value};
    let Some(input) = doc.pointer_mut("/components/schemas/ProviderConfigInput") else { return };
    let Some(Value::Array(branches)) = input.as_object_mut().and_then(|o| o.remove("oneOf")) else { return };
    let flattened: Vec<Value> = branches
        .into_iter()
        .map(|branch| {
            let Some(Value::Array(parts)) = branch.get("allOf").cloned() else { return branch };
            let mut properties = Map::new();
            let mut required = Vec::new();
            for part in parts {
                if let Some(Value::Object(p)) = part.get("properties") {
                    properties.extend(p.clone());
                }
                if let Some(Value::Array(r)) = part.get("required") {
                    required.extend(r.iter().cloned());
                }
            }
            let mut object = Map::new();
            object.insert("type".into(), "object".into());
            if let Some(title) = branch.get("title") {
                object.insert("title".into(), title.clone());
            }
            object.insert("required".into(), Value::Array(required));
            object.insert("properties".into(), Value::Object(properties));
            object.insert("additionalProperties".into(), Value::Bool(false));
            Value::Object(object)
        })
        .collect();
    input.as_object_mut().map(|o| o.insert("anyOf".into(), Value::Array(flattened)));
}

/// `%00` anywhere in the URL is refused (400) before routing (`refuse_nul_in_uri`): every string
/// path and query parameter says so with a pattern, unless it has a stricter one (or an enum or
/// format) already.
pub fn forbid_nul_in_url_parameters(doc: &mut serde_json::Value) {
    use serde_json::Value;
    let Some(Value::Object(paths)) = doc.get_mut("paths") else { return };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for op in item.values_mut() {
            let Some(Value::Array(params)) = op.get_mut("parameters") else { continue };
            for param in params {
                let Some(schema) = param.get_mut("schema").and_then(Value::as_object_mut) else { continue };
                let is_string = match schema.get("type") {
                    Some(Value::String(t)) => t == "string",
                    Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
                    _ => false,
                };
                let constrained = ["pattern", "enum", "format"].iter().any(|k| schema.contains_key(*k));
                if is_string && !constrained {
                    schema.insert("pattern".into(), Value::String("^[^\\u0000]*$".into()));
                }
            }
        }
    }
}

/// A provider config as the API shows it is the shared fields plus one provider's settings, side
/// by side in one object. Generated as `allOf` of the shared fields and a `oneOf` of the
/// providers' (closed) settings objects, no response could match; the settings branches are
/// opened (the shared fields sit beside them) and joined with `anyOf`.
pub fn open_provider_view(doc: &mut serde_json::Value) {
    use serde_json::Value;
    fn open(v: &mut Value) {
        match v {
            Value::Object(o) => {
                if o.get("additionalProperties") == Some(&Value::Bool(false)) {
                    o.remove("additionalProperties");
                }
                if let Some(branches) = o.remove("oneOf") {
                    o.insert("anyOf".into(), branches);
                }
                o.values_mut().for_each(open);
            }
            Value::Array(a) => a.iter_mut().for_each(open),
            _ => {}
        }
    }
    if let Some(view) = doc.pointer_mut("/components/schemas/ProviderConfigView") {
        open(view);
    }
}
