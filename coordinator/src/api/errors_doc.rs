//! The error responses every operation can give, added to the OpenAPI document where an
//! operation's own annotation does not list them, so the document names every status the API
//! answers with (checked by `tests/tests/contract.rs`):
//!
//! - `401 unauthorized` on every operation that needs a token;
//! - `400` on every operation with a query string or a body (a query string or JSON that does
//!   not parse), and `413`, `415`, `422` on every operation with a body (too large, not JSON,
//!   JSON that does not match the request schema).
//!
//! All of them carry the `{"error": {"code", "message"}}` body (`ErrorResponse`).

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

/// Adds the missing error responses to every operation of `doc`.
pub fn document(mut doc: OpenApi) -> OpenApi {
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add(op);
        }
    }
    doc
}

fn add(op: &mut Operation) {
    // `security(())` (public) is an explicit empty requirement; `None` inherits the token.
    let needs_token = op
        .security
        .as_ref()
        .is_none_or(|reqs| reqs.iter().any(|r| r != &Default::default()));
    let has_query = op
        .parameters
        .iter()
        .flatten()
        .any(|p| p.parameter_in == ParameterIn::Query);
    let has_body = op.request_body.is_some();
    let mut errors = Vec::new();
    if needs_token {
        errors.push(("401", "Missing or invalid API token (`unauthorized`)"));
    }
    if has_query || has_body {
        errors.push((
            "400",
            "The query string or the JSON body does not parse (`bad_request`, `invalid_json`)",
        ));
    }
    if has_body {
        errors.push(("413", "The body is too large (`payload_too_large`)"));
        errors.push((
            "415",
            "The body is not sent as `application/json` (`unsupported_media_type`)",
        ));
        errors.push((
            "422",
            "The body does not match the request schema (`invalid_body`), or a value in it is refused",
        ));
    }
    for (status, description) in errors {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorResponse")))
                            .build(),
                    )
                    .build()
                    .into()
            });
    }
}
