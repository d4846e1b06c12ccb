//! The API's decoding of request bodies and query strings, reachable from `fuzz/`: not part of
//! the crate's interface.
//!
//! Each entry decodes bytes exactly as the route's extractor does (`Json::from_bytes`, the
//! `Query` extractor), into the route's own type, then runs what the handler checks before it
//! reads the store, when it can be run without one.

use axum::extract::Query;
use axum::http::Uri;

use super::approvals::Reject;
use super::enrolments::{EnrolContinue, EnrolStart};
use super::events::EventQuery;
use super::requests::{Answer, ListQuery, NewRequest};
use super::roles::changed_settings;
use super::tokens::TokenBody;
use super::users::{Unlock, UserBody, UserPatch};
use super::*;
use crate::records::roles::RoleSpec;

/// The routes whose input is decoded, by the index [`decode`] takes.
pub const ROUTES: &[&str] = &[
    "POST /v1/requests",
    "POST /v1/requests/{id}/answer",
    "POST /v1/enrolments",
    "POST /v1/enrolments/continue",
    "POST /v1/approvals/{id}/reject",
    "POST /v1/users",
    "PATCH /v1/users/{account}",
    "POST /v1/users/{account}/unlock",
    "POST /v1/roles",
    "PUT /v1/roles/{name}",
    "POST /v1/tokens",
    "GET /v1/events?…",
    "GET /v1/requests?…",
];

fn json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    Json::<T>::from_bytes(bytes)
        .map(|Json(t)| t)
        .map_err(|e| e.body_text())
}

fn query<T: serde::de::DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let uri: Uri = format!("{path}?{text}")
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| e.to_string())?;
    Query::<T>::try_from_uri(&uri)
        .map(|Query(t)| t)
        .map_err(|e| e.body_text())
}

/// Decodes `bytes` as the input of route number `route` of [`ROUTES`] (a body, or for the
/// `GET` routes a query string); an error is what the client would be told.
pub fn decode(route: usize, bytes: &[u8]) -> Result<(), String> {
    match route % ROUTES.len() {
        0 => json::<NewRequest>(bytes).map(drop),
        1 => json::<Answer>(bytes).map(drop),
        2 => json::<EnrolStart>(bytes).map(drop),
        3 => json::<EnrolContinue>(bytes).map(drop),
        4 => json::<Reject>(bytes).map(drop),
        5 => json::<UserBody>(bytes).map(drop),
        6 => json::<UserPatch>(bytes).map(drop),
        7 => json::<Unlock>(bytes).map(drop),
        8 | 9 => {
            // What `create_role` and `set_role` store is checked by `to_role`; the event of a
            // change names the settings that differ.
            let spec = json::<RoleSpec>(bytes)?;
            let _ = changed_settings(Some(&spec), &spec);
            spec.to_role().map(drop).map_err(|e| e.to_string())
        }
        10 => json::<TokenBody>(bytes).map(drop),
        11 => query::<EventQuery>("/v1/events", bytes).map(drop),
        _ => query::<ListQuery>("/v1/requests", bytes).map(drop),
    }
}
