//! A small HTTP client for the coordinator's and the nodes' admin APIs, with the query helper
//! every test and the simulator use.

use anyhow::Context;
use serde_json::{Value, json};

/// A small HTTP client for one API and token.
#[derive(Clone)]
pub struct Api {
    /// Base URL.
    pub url: String,
    /// Bearer token.
    pub token: String,
    http: reqwest::Client,
}

impl Api {
    /// A client.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Api {
            url: url.into(),
            token: token.into(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let (status, _, body) = self.send_full(rb).await?;
        Ok((status, body))
    }

    async fn send_full(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> anyhow::Result<(u16, reqwest::header::HeaderMap, Value)> {
        let resp = rb.bearer_auth(&self.token).send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        Ok((
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// GET a path, with the response headers.
    pub async fn get_full(
        &self,
        path: &str,
    ) -> anyhow::Result<(u16, reqwest::header::HeaderMap, Value)> {
        self.send_full(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    /// DELETE a path.
    pub async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.send(self.http.delete(format!("{}{path}", self.url)))
            .await
    }

    /// Sends any request to a path: a raw body with the given content type (none if `None`).
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, reqwest::header::HeaderMap, Value)> {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.url))
            .body(body);
        if let Some(ct) = content_type {
            rb = rb.header(reqwest::header::CONTENT_TYPE, ct);
        }
        self.send_full(rb).await
    }

    /// POST a `multipart/form-data` body: a JSON `declaration` part, then `csv` streamed from
    /// `body`.
    pub async fn upload(
        &self,
        path: &str,
        declaration: &Value,
        body: reqwest::Body,
    ) -> anyhow::Result<(u16, Value)> {
        let form = reqwest::multipart::Form::new()
            .text("declaration", declaration.to_string())
            .part(
                "csv",
                reqwest::multipart::Part::stream(body).file_name("upload.csv"),
            );
        self.send(
            self.http
                .post(format!("{}{path}", self.url))
                .multipart(form),
        )
        .await
    }

    /// GET a path.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    /// POST JSON to a path.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.send(self.http.post(format!("{}{path}", self.url)).json(body))
            .await
    }

    /// PUT JSON to a path.
    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.send(self.http.put(format!("{}{path}", self.url)).json(body))
            .await
    }

    /// PATCH with a JSON body.
    pub async fn send_patch(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.send(self.http.patch(format!("{}{path}", self.url)).json(body))
            .await
    }

    /// Creates a query and executes it, waiting for the run. Returns (query, run-or-error, status).
    pub async fn run_query(
        &self,
        dataset_id: &str,
        sql: &str,
        backend: &str,
        epsilon: Option<f64>,
    ) -> anyhow::Result<(Value, u16, Value)> {
        let mut body = json!({"dataset_id": dataset_id, "sql": sql, "backend": backend});
        if let Some(e) = epsilon {
            body["epsilon"] = json!(e);
        }
        let (status, query) = self.post("/api/v1/queries", &body).await?;
        if status != 201 {
            return Ok((Value::Null, status, query));
        }
        let id = query["id"].as_str().context("query id")?;
        let (mut status, mut run) = self
            .post(
                &format!("/api/v1/queries/{id}/execute?wait=true"),
                &json!({}),
            )
            .await?;
        // The API's wait is bounded (a first HE run generates keys, which on a loaded machine can
        // outlast it): follow the run until it ends.
        let started = std::time::Instant::now();
        while status == 202 && started.elapsed() < std::time::Duration::from_secs(600) {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            let run_id = run["id"].as_str().context("run id")?.to_string();
            let (s, r) = self.get(&format!("/api/v1/runs/{run_id}")).await?;
            if s != 200 {
                return Ok((query, s, r));
            }
            run = r;
            if run["status"] != "running" && run["status"] != "pending" {
                status = 200;
            }
        }
        Ok((query, status, run))
    }
}
