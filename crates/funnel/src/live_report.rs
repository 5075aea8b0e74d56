//! `funnel report`: ask a running service, over a minimal HTTP/1.1 GET, with the bearer token
//! in `FUNNEL_TOKEN` if set (an environment variable, so it stays out of `ps` and shell history),
//! or over NATS request/reply (`--via nats`).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::nats_auth::NatsUser;
use crate::offline::ReportArgs;
use crate::{CliError, Connect};

/// Longest answer accepted, in bytes.
const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

pub async fn report(url: &str, args: &ReportArgs) -> Result<(), CliError> {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let path = args.path();
    let fail = |e: std::io::Error| CliError::Failed(format!("GET http://{addr}{path}: {e}"));
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(fail)?;
    let authorization = std::env::var("FUNNEL_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map_or_else(String::new, |t| format!("Authorization: Bearer {}\r\n", t.trim()));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(fail)?;
    let mut response = Vec::new();
    stream
        .take(RESPONSE_BYTES_MAX as u64)
        .read_to_end(&mut response)
        .await
        .map_err(fail)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| CliError::Failed("bad HTTP answer".into()))?;
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let mut body = response[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if status != 200 {
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let message = error["error"]["message"]
            .as_str()
            .map_or_else(|| String::from_utf8_lossy(&body).into_owned(), str::to_owned);
        return Err(CliError::Failed(format!("{status}: {message}")));
    }
    args.print(&body)
}

/// `funnel report --via nats`: the same answer from `funnel.query.<report>`.
pub async fn report_nats(connect: &Connect, args: &ReportArgs) -> Result<(), CliError> {
    let url = crate::publish::nats_url(connect);
    let client = connect
        .auth
        .connect(&url, &connect.data.data_dir, NatsUser::Auditor, "funnel-report")
        .await?;
    let (subject, payload) = args.nats_request();
    let request = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(funnel_query::REQUEST_TIMEOUT + std::time::Duration::from_secs(5)));
    let reply = client
        .send_request(subject.clone(), request)
        .await
        .map_err(|e| CliError::Failed(format!("{subject} at {url}: {e}")))?;
    let error_code = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR_CODE))
        .map(|v| v.as_str().to_owned());
    if let Some(code) = error_code {
        let error: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
        let message = error["error"]["message"]
            .as_str()
            .map_or_else(|| String::from_utf8_lossy(&reply.payload).into_owned(), str::to_owned);
        return Err(CliError::Failed(format!("{code}: {message}")));
    }
    args.print(&reply.payload)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&body[..eol]).trim(), 16).unwrap_or(0);
        let start = eol + 2;
        if size == 0 || body.len() < start + size {
            break;
        }
        out.extend_from_slice(&body[start..start + size]);
        body = body.get(start + size + 2..).unwrap_or_default();
    }
    out
}
