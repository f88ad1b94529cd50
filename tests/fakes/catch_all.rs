//! What a wrong `instance_url` often reaches: a web server or single-page app that answers every
//! path with `200` and an HTML page (a catch-all route, a maintenance page, a proxy's landing
//! page). Nothing is stored; the request is recorded as provider `catch-all`, outcome `ignored`.

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};

use crate::state::{Fakes, Received, body_value, header_map, now};

pub async fn page(State(fakes): State<Fakes>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    fakes.record(Received {
        provider: "catch-all",
        path: uri.path().to_string(),
        headers: header_map(&headers),
        body: body_value(&body),
        status: 200,
        outcome: "ignored",
        reason: Some("no such route: the catch-all page answered".into()),
        resolved_ip: None,
        at: now(),
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><html><head><title>Welcome</title></head><body>Welcome</body></html>",
    )
        .into_response()
}
