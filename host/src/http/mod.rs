//! The surfaces: the HTTP API, the web page, the server that carries them, its TLS and its
//! access log. They turn requests into calls on the activation service and nothing else.

pub mod access;
pub mod api;
pub mod server;
pub mod tls;
pub mod web;
