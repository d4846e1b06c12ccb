//! The API's contract: `/openapi.json` as a running daemon serves it is a valid OpenAPI 3.1
//! document (checked by an independent validator), and it is complete: every route served is
//! documented and every documented operation is served, with its parameters, an id, a typed
//! success, the error schema and its security.

use std::collections::BTreeSet;
use std::path::PathBuf;

use rolegate_e2e::daemon::{Daemon, call, serve_config};
use rolegate_e2e::{hello_lib, workspace_root, write_private};
use serde_json::Value;

fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rolegate.toml");
    write_private(
        &cfg,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[provider]]\nid = \"hello\"\nlibrary = \"{}\"\nunpinned = true\n",
            hello_lib().display()
        ),
    );
    serve_config(dir, &cfg)
}

/// The two operations that need no token.
const PUBLIC: [&str; 3] = ["/healthz", "/readyz", "/openapi.json"];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Where `scripts/test` installs the validator (`npm install` of
/// `@seriousme/openapi-schema-validator`), or `ROLEGATE_OPENAPI_VALIDATOR`.
fn validator_dir() -> PathBuf {
    std::env::var_os("ROLEGATE_OPENAPI_VALIDATOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/openapi-validator"))
}

/// The validator's verdict on `doc`: `Ok` or its errors. Panics when it cannot be run: a
/// contract that was not checked is not a pass (`scripts/test` installs it).
fn validate_with_node(doc: &Value) -> Result<(), String> {
    let dir = validator_dir();
    let module = dir.join("node_modules/@seriousme/openapi-schema-validator/index.js");
    assert!(
        module.is_file(),
        "the OpenAPI validator is not installed at {} (CI={:?}): run scripts/test, or \
         `npm install --prefix {} @seriousme/openapi-schema-validator`",
        module.display(),
        std::env::var("CI").ok(),
        dir.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("openapi.json");
    std::fs::write(&spec, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let script = tmp.path().join("validate.mjs");
    std::fs::write(
        &script,
        r#"import { pathToFileURL } from "node:url";
import { readFileSync } from "node:fs";
const [moduleFile, specFile] = process.argv.slice(2);
const { Validator } = await import(pathToFileURL(moduleFile).href);
const validator = new Validator();
const spec = JSON.parse(readFileSync(specFile, "utf8"));
const res = await validator.validate(spec);
if (!res.valid) {
  console.log(JSON.stringify(res.errors, null, 2));
  process.exit(1);
}
// Every internal $ref must resolve.
validator.resolveRefs();
console.log(`valid OpenAPI ${validator.version}`);
"#,
    )
    .unwrap();
    let out = std::process::Command::new("node")
        .arg(&script)
        .arg(&module)
        .arg(&spec)
        .output()
        .unwrap_or_else(|e| panic!("node could not be run: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        assert!(said.contains("valid OpenAPI 3.1"), "{said}");
        Ok(())
    } else {
        Err(said)
    }
}

/// `path` with each `{parameter}` filled in.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => inside = true,
            '}' => {
                inside = false;
                out.push_str("x1");
            }
            _ if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

/// The names of a path template's parameters.
fn template_params(path: &str) -> BTreeSet<String> {
    path.split('{')
        .skip(1)
        .filter_map(|p| p.split_once('}').map(|(name, _)| name.to_string()))
        .collect()
}

/// A `$ref` to the error schema somewhere in `v`.
fn refs_error_schema(v: &Value) -> bool {
    v.to_string().contains("\"#/components/schemas/ErrorBody\"")
}

#[tokio::test]
async fn the_served_openapi_document_is_valid_and_complete() {
    let d = start();
    let (s, doc) = call(&d, None, "GET", "/openapi.json", None).await;
    assert_eq!(s, 200, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0");
    // What the library builds is what the daemon serves.
    assert_eq!(doc, rolegate::http::api::openapi_document());

    // 1. An independent validator of the OpenAPI 3.1 schema.
    if let Err(errors) = validate_with_node(&doc) {
        panic!("/openapi.json is not a valid OpenAPI document:\n{errors}");
    }

    // 2. Every operation: parameters, id, success, errors, security.
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert!(schemas.contains_key("ErrorBody"));
    let mut ids = BTreeSet::new();
    let mut documented = BTreeSet::new();
    let mut problems = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let at = format!("{} {path}", method.to_uppercase());
            assert!(METHODS.contains(&method.as_str()), "{at}");
            documented.insert((method.to_uppercase(), path.clone()));
            // Every templated parameter declared, in the path, required.
            let declared: BTreeSet<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .inspect(|p| {
                    if p["required"] != true {
                        problems.push(format!("{at}: path parameter {} not required", p["name"]));
                    }
                })
                .filter_map(|p| p["name"].as_str().map(String::from))
                .collect();
            if declared != template_params(path) {
                problems.push(format!("{at}: path parameters declared {declared:?}"));
            }
            match op["operationId"].as_str() {
                Some(id) if !id.is_empty() => {
                    if !ids.insert(id.to_string()) {
                        problems.push(format!("{at}: operationId `{id}` used twice"));
                    }
                    if id.chars().any(|c| !(c.is_ascii_lowercase() || c == '_')) {
                        problems.push(format!("{at}: operationId `{id}` is not snake_case"));
                    }
                }
                _ => problems.push(format!("{at}: no operationId")),
            }
            for field in ["summary", "description"] {
                if op[field].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("{at}: no {field}"));
                }
            }
            if op["tags"].as_array().is_none_or(Vec::is_empty) {
                problems.push(format!("{at}: no tag"));
            }
            if !op["x-rolegate-admin"].is_boolean() {
                problems.push(format!("{at}: no x-rolegate-admin"));
            }
            let responses = op["responses"].as_object().unwrap();
            // A 2xx with a schema, or an explicit no-content.
            let success = responses.iter().any(|(status, r)| {
                status.starts_with('2')
                    && (status == "204"
                        || r["content"]
                            .as_object()
                            .is_some_and(|c| c.values().all(|m| m["schema"].is_object())))
            });
            if !success {
                problems.push(format!("{at}: no 2xx response with a schema"));
            }
            let public = PUBLIC.contains(&path.as_str());
            let errors_ref = responses
                .iter()
                .filter(|(status, _)| status.starts_with('4') || status.starts_with('5'))
                .any(|(_, r)| refs_error_schema(r));
            if !public && !errors_ref {
                problems.push(format!("{at}: no error response with the error schema"));
            }
            let security = op["security"].as_array();
            match (public, security) {
                (true, None) => {}
                (true, Some(_)) => problems.push(format!("{at}: public, yet has security")),
                (false, Some(s)) if s.iter().any(|r| r.get("bearer").is_some()) => {
                    if !responses.contains_key("401") {
                        problems.push(format!("{at}: secured without a 401"));
                    }
                }
                (false, _) => problems.push(format!("{at}: no bearer security")),
            }
            // Bodies: a schema per media type, and the body limits' errors.
            if let Some(body) = op.get("requestBody") {
                if !body["content"]["application/json"]["schema"].is_object() {
                    problems.push(format!("{at}: request body without a JSON schema"));
                }
                for status in ["408", "413"] {
                    if !responses.contains_key(status) {
                        problems.push(format!("{at}: a body, and no {status}"));
                    }
                }
            }
        }
    }
    // Every $ref names a schema the document has.
    let text = doc.to_string();
    for piece in text.split("\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        if !schemas.contains_key(name) {
            problems.push(format!("$ref to a missing schema `{name}`"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(documented.len() >= 33, "{}", documented.len());

    // 3. The routes served are the routes documented, and the other way round: the router's
    // own list (from the same OpenApiRouter) is the document's, each documented operation is
    // answered by its handler (not axum's 404 or 405), and no other method is served on a
    // documented path.
    let listed: BTreeSet<(String, String)> = rolegate::http::api::routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p))
        .collect();
    assert_eq!(listed, documented);
    let client = reqwest::Client::new();
    let mut wrong = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = format!("{}{}", d.url, concrete(path));
        for method in METHODS {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = client.request(m, &url).send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            let served = !(status == 405 || (status == 404 && body.is_empty()));
            let is_documented = item.get(method).is_some();
            if served != is_documented {
                wrong.push(format!(
                    "{} {path}: {status} {body:?}, documented: {is_documented}",
                    method.to_uppercase()
                ));
            }
            // Without a token, a secured operation is refused in the API's error shape (one
            // that takes a body first refuses a request without one: 415, in plain text).
            let takes_body = item[method]["requestBody"]["required"] == true;
            if is_documented && takes_body {
                if status != 415 {
                    wrong.push(format!("{method} {path} without a body: {status} {body}"));
                }
            } else if is_documented && !PUBLIC.contains(&path.as_str()) {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                if status != 401 || v["error"]["code"] != "unauthorized" {
                    wrong.push(format!("{method} {path} without a token: {status} {body}"));
                }
            }
        }
    }
    // A path that is not documented is not served.
    for path in ["/v1/nothing", "/v1/requests/x1/nothing", "/v2/requests"] {
        let (s, _) = call(&d, None, "GET", path, None).await;
        if s != 404 {
            wrong.push(format!("GET {path}: {s}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
