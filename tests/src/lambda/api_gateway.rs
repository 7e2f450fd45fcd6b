//! [`FakeApiGateway`]: an HTTP/1.1 server that routes like the template, turns each request
//! into an event, invokes the function (buffered or streamed) and answers its response.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::api_events::{
    IncomingRequest, OutgoingBody, OutgoingResponse, gateway_json, http_event, is_hop_header,
    proxy_response, request_id, rest_event,
};
use super::routes::{ApiKind, Integration, Transfer, match_route};

struct Gateway {
    kind: ApiKind,
    integrations: HashMap<&'static str, Integration>,
    http: reqwest::Client,
}

impl Gateway {
    async fn handle(&self, req: IncomingRequest) -> OutgoingResponse {
        let (path, _) = req.path_and_query();
        let path = match &self.kind {
            ApiKind::Rest { stage } => {
                let prefix = format!("/{stage}");
                match path.strip_prefix(&prefix) {
                    Some("") => "/".to_owned(),
                    Some(rest) if rest.starts_with('/') => rest.to_owned(),
                    // execute-api URLs without a deployed stage are refused before any route.
                    _ => return gateway_json(403, "Forbidden"),
                }
            }
            ApiKind::Http => path.to_owned(),
        };
        let Some(route) = match_route(&req.method, &path) else {
            return match self.kind {
                ApiKind::Rest { .. } => gateway_json(403, "Missing Authentication Token"),
                ApiKind::Http => gateway_json(404, "Not Found"),
            };
        };
        let Some(integration) = self.integrations.get(route.function) else {
            return gateway_json(500, "Internal server error");
        };
        let rid = request_id();
        let event = match &self.kind {
            ApiKind::Rest { stage } => rest_event(&req, stage, &route, &rid),
            ApiKind::Http => http_event(&req, &route, &rid),
        };
        let url = format!(
            "{}/2015-03-31/functions/{}/invocations",
            integration.emulator, route.function
        );
        let resp = match self.http.post(&url).body(event.to_string()).send().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("fake API Gateway: invoking {} failed: {e}", route.function);
                return gateway_json(502, "Internal server error");
            }
        };
        let mut out = self
            .convert(integration.transfer, route.function, resp)
            .await;
        out.headers.push(("x-amzn-RequestId".into(), rid));
        out
    }

    async fn convert(
        &self,
        transfer: Transfer,
        function: &str,
        resp: reqwest::Response,
    ) -> OutgoingResponse {
        let streamed = resp
            .headers()
            .get("lambda-runtime-function-response-mode")
            .is_some_and(|v| v == "streaming");
        // A streamed response carries the prelude's status (401, 404, ...); otherwise a
        // non-2xx status means the invocation itself failed.
        if !streamed && !resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            eprintln!("fake API Gateway: {function} failed: {text}");
            return gateway_json(502, "Internal server error");
        }
        match (transfer, streamed) {
            (Transfer::Stream, true) => {
                // The emulator has already split the metadata prelude from the body, as API
                // Gateway does: relay its status and headers, then the body as it comes.
                let headers = resp
                    .headers()
                    .iter()
                    .filter(|(k, _)| !is_hop_header(k.as_str()))
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                OutgoingResponse {
                    status: resp.status().as_u16(),
                    headers,
                    body: OutgoingBody::Stream(resp),
                }
            }
            (Transfer::Buffered, false) => {
                let text = resp.text().await.unwrap_or_default();
                match serde_json::from_str(&text)
                    .ok()
                    .and_then(|v| proxy_response(&self.kind, &v))
                {
                    Some(out) => out,
                    None => {
                        eprintln!(
                            "fake API Gateway: malformed Lambda proxy response from {function}: {text}"
                        );
                        gateway_json(502, "Internal server error")
                    }
                }
            }
            (Transfer::Stream, false) => {
                // API Gateway waits for a JSON prelude and the 8-byte null delimiter; a
                // buffered function never sends them.
                eprintln!(
                    "fake API Gateway: {function} answered a response-streaming integration with a buffered \
                     result (is MCPGW_LAMBDA_STREAMING=1 set on it?)"
                );
                gateway_json(502, "Internal server error")
            }
            (Transfer::Buffered, true) => {
                eprintln!(
                    "fake API Gateway: {function} streamed its response to a buffered integration"
                );
                gateway_json(502, "Internal server error")
            }
        }
    }
}

/// A gateway bound to a loopback port, not serving yet (its URL is needed for
/// `MCPGW_PUBLIC_URL` before the functions start).
pub struct BoundGateway {
    listener: TcpListener,
    kind: ApiKind,
    base: String,
}

impl BoundGateway {
    pub async fn bind(kind: ApiKind) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let base = match &kind {
            ApiKind::Rest { stage } => format!("http://{addr}/{stage}"),
            ApiKind::Http => format!("http://{addr}"),
        };
        Ok(Self {
            listener,
            kind,
            base,
        })
    }

    /// The public base URL clients use (the stage included for REST).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Serves with `integrations` (function name -> integration) until dropped.
    pub fn serve(self, integrations: Vec<(&'static str, Integration)>) -> Result<FakeApiGateway> {
        mcpgw::crypto::install_tls_provider();
        let gateway = Arc::new(Gateway {
            kind: self.kind.clone(),
            integrations: integrations.into_iter().collect(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(600))
                .build()?,
        });
        let listener = self.listener;
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let gateway = gateway.clone();
                tokio::spawn(async move {
                    let local = stream.local_addr().unwrap_or(peer);
                    let (rd, wr) = stream.into_split();
                    if let Err(e) =
                        serve_connection(gateway, BufReader::new(rd), wr, peer, local).await
                    {
                        let gone = e.downcast_ref::<std::io::Error>().is_some_and(|e| {
                            matches!(
                                e.kind(),
                                std::io::ErrorKind::BrokenPipe
                                    | std::io::ErrorKind::ConnectionReset
                            )
                        });
                        if !gone {
                            eprintln!("fake API Gateway: connection from {peer}: {e:#}");
                        }
                    }
                });
            }
        });
        Ok(FakeApiGateway {
            base: self.base,
            kind: self.kind,
            task,
        })
    }
}

/// A fake API Gateway in front of the emulated functions, serving until dropped.
pub struct FakeApiGateway {
    /// Public base URL (`http://127.0.0.1:PORT/prod` for REST).
    pub base: String,
    pub kind: ApiKind,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiGateway {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn mcp_url(&self, endpoint: &str) -> String {
        self.url(&format!("/mcp/{endpoint}"))
    }
}

/// Reads requests off one connection and answers them, keeping it open while the client does.
async fn serve_connection(
    gateway: Arc<Gateway>,
    mut rd: BufReader<OwnedReadHalf>,
    mut wr: OwnedWriteHalf,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<()> {
    loop {
        let Some((req, keep_alive)) = read_request(&mut rd, &mut wr, peer, local).await? else {
            return Ok(());
        };
        let resp = gateway.handle(req).await;
        write_response(&mut wr, resp, keep_alive).await?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// One request, or `None` when the client closed the connection between requests.
async fn read_request(
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Option<(IncomingRequest, bool)>> {
    let mut head = Vec::new();
    loop {
        let n = rd.read_until(b'\n', &mut head).await?;
        if n == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside a request head");
        }
        if head == b"\r\n" {
            head.clear(); // a stray CRLF between requests
        } else if head.ends_with(b"\r\n\r\n") {
            break;
        } else if head.len() > 64 * 1024 {
            bail!("request head over 64 KiB");
        }
    }
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut slots);
    if parsed.parse(&head)?.is_partial() {
        bail!("incomplete request head");
    }
    let method = parsed.method.context("no method")?.to_owned();
    let target = parsed.path.context("no request target")?.to_owned();
    let http10 = parsed.version == Some(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut req = IncomingRequest {
        method,
        target,
        headers,
        body: Vec::new(),
        source_ip: peer.ip().to_string(),
        local,
    };
    let connection = req
        .header("connection")
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let keep_alive = if http10 {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        req.body = read_chunked(rd).await?;
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.trim().parse().context("bad Content-Length")?;
        let mut body = vec![0; len];
        rd.read_exact(&mut body).await?;
        req.body = body;
    }
    Ok(Some((req, keep_alive)))
}

async fn read_chunked(rd: &mut BufReader<OwnedReadHalf>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        rd.read_line(&mut line).await?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or_default(), 16)
            .context("bad chunk size")?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if rd.read_line(&mut line).await? == 0 || line == "\r\n" {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        rd.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        rd.read_exact(&mut crlf).await?;
    }
}

async fn write_response(
    wr: &mut OwnedWriteHalf,
    resp: OutgoingResponse,
    keep_alive: bool,
) -> Result<()> {
    let reason = reqwest::StatusCode::from_u16(resp.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", resp.status);
    for (k, v) in &resp.headers {
        if k.contains(['\r', '\n']) || v.contains(['\r', '\n']) {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    match resp.body {
        OutgoingBody::Full(body) => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            wr.write_all(head.as_bytes()).await?;
            wr.write_all(&body).await?;
        }
        OutgoingBody::Stream(mut upstream) => {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            wr.write_all(head.as_bytes()).await?;
            wr.flush().await?;
            while let Some(chunk) = upstream.chunk().await? {
                if chunk.is_empty() {
                    continue;
                }
                wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                wr.write_all(&chunk).await?;
                wr.write_all(b"\r\n").await?;
                wr.flush().await?;
            }
            wr.write_all(b"0\r\n\r\n").await?;
        }
    }
    wr.flush().await?;
    Ok(())
}
