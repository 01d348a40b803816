//! An S3 server that does not implement conditional writes (`If-None-Match: *` on PutObject
//! answered 501 NotImplemented, as AWS did before 2024): `put_new` falls back to a plain upload,
//! asks only once per store, and WAL archiving works through it. The server is a real
//! `s3s-fs` behind a small proxy in this file that refuses conditional PUTs and forwards
//! everything else. A missing `s3s-fs` panics with the install hint; nothing is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pgsteward_archive::layout::Compression;
use pgsteward_archive::store::PutNew;
use pgsteward_archive::wal::deadline_in;
use pgsteward_archive::{open, ArchiveOutcome, Layout, StoreOptions, WalArchive, WalFile};
use pgsteward_testkit::fsutil::pseudo_random;
use pgsteward_testkit::s3::{write_credential_files, S3Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NOT_IMPLEMENTED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<Error><Code>NotImplemented</Code>\
<Message>A header you provided implies functionality that is not implemented</Message></Error>";

/// A proxy to `upstream` answering 501 to every PUT with `If-None-Match`; one request per
/// connection (`Connection: close` both ways).
struct NoConditionalPuts {
    port: u16,
    refused: Arc<AtomicUsize>,
}

impl NoConditionalPuts {
    async fn start(upstream: u16) -> NoConditionalPuts {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = refused.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream, counter.clone()));
            }
        });
        NoConditionalPuts { port, refused }
    }
}

/// The request head (through the blank line) and the body after it.
async fn read_request(client: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).ok()?;
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "the proxy only reads Content-Length bodies:\n{head}"
    );
    let length: usize = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

async fn serve(mut client: TcpStream, upstream: u16, refused: Arc<AtomicUsize>) {
    let Some((head, body)) = read_request(&mut client).await else {
        return;
    };
    if head.starts_with("PUT ") && header(&head, "if-none-match").is_some() {
        refused.fetch_add(1, Ordering::SeqCst);
        let response = format!(
            "HTTP/1.1 501 Not Implemented\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{NOT_IMPLEMENTED}",
            NOT_IMPLEMENTED.len()
        );
        let _ = client.write_all(response.as_bytes()).await;
        return;
    }
    let mut forwarded: String = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .map(|line| format!("{line}\r\n"))
        .collect();
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
    server.write_all(forwarded.as_bytes()).await.unwrap();
    server.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    let _ = server.read_to_end(&mut response).await;
    let _ = client.write_all(&response).await;
}

#[tokio::test]
async fn uploads_fall_back_to_plain_puts_where_conditions_are_not_implemented() {
    let server = S3Server::new().await;
    let proxy = NoConditionalPuts::start(server.port()).await;
    let (id_file, secret_file) = write_credential_files(server.scratch());
    let options = StoreOptions {
        endpoint_url: Some(format!("http://127.0.0.1:{}", proxy.port)),
        region: Some("us-east-1".into()),
        force_path_style: true,
        access_key_id_file: Some(id_file),
        secret_access_key_file: Some(secret_file),
        ..StoreOptions::default()
    };
    let store = open(&format!("s3://{}/old", server.bucket()), &options)
        .await
        .unwrap();

    let data = Bytes::from(pseudo_random(100_000, 5));
    assert_eq!(
        store.put_new("a", data.clone()).await.unwrap(),
        PutNew::Stored
    );
    assert_eq!(store.get("a").await.unwrap(), Some(data.clone()));
    assert_eq!(proxy.refused.load(Ordering::SeqCst), 1);
    // Remembered: the next upload does not ask again.
    assert_eq!(
        store.put_new("b", data.clone()).await.unwrap(),
        PutNew::Stored
    );
    assert_eq!(proxy.refused.load(Ordering::SeqCst), 1);

    // WAL archiving through it: stored, then found by its lookup and compared.
    let wal = WalArchive::new(store.clone(), Layout::new("pg"), Compression::Gzip, 6);
    let deadline = deadline_in(Duration::from_secs(30));
    let segment = WalFile::parse("000000010000000000000003").unwrap();
    let content = Bytes::from([pseudo_random(1 << 20, 6), vec![0u8; 15 << 20]].concat());
    let stored = wal
        .archive(&segment, content.clone(), deadline)
        .await
        .unwrap();
    assert!(
        matches!(stored, ArchiveOutcome::Stored { .. }),
        "{stored:?}"
    );
    let again = wal.archive(&segment, content, deadline).await.unwrap();
    assert!(
        matches!(again, ArchiveOutcome::AlreadyArchived { .. }),
        "{again:?}"
    );
    assert_eq!(proxy.refused.load(Ordering::SeqCst), 1);
}
