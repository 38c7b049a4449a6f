use std::io;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, ETAG};
use reqwest::{Body, Response, StatusCode};
use rusty_s3::actions::{CompleteMultipartUploadResponse, CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::io::{ReaderStream, StreamReader};
use url::Url;

use crate::{AccessKey, TenancyError};

const SERVICE: &str = "S3";
/// Requests are signed just before they are sent; a short validity limits the
/// damage of a leaked URL.
const SIGNATURE_VALIDITY: Duration = Duration::from_secs(60);
/// S3 refuses presigned URLs valid for longer than seven days.
const MAX_PRESIGNED_VALIDITY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

const MIB: u64 = 1024 * 1024;
/// Files up to this size go up in one PUT, larger ones in parts of this size:
/// a part is held in memory while it is sent.
const PART_SIZE: u64 = 16 * MIB;
/// S3 numbers the parts of an upload from 1 to 10,000.
const MAX_PARTS: u64 = 10_000;
/// Parts sent at once: enough to keep the link busy while the next part is
/// read, few enough that memory stays at a couple of parts.
const PARTS_IN_FLIGHT: usize = 2;

/// One bucket, reached over S3 with one access key.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    http: reqwest::Client,
    bucket: Bucket,
    credentials: Credentials,
}

/// An object as a listing describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    /// The store's tag of the content, when it gives one.
    pub etag: Option<String>,
}

impl ObjectStore {
    pub fn new(
        endpoint: &str,
        region: &str,
        bucket: &str,
        key: &AccessKey,
    ) -> Result<Self, TenancyError> {
        let invalid = |message: String| TenancyError::Endpoint {
            endpoint: endpoint.to_owned(),
            message,
        };
        let endpoint_url = Url::parse(endpoint).map_err(|err| invalid(err.to_string()))?;
        // Path-style addressing works with every S3 implementation and needs no wildcard DNS.
        let bucket = Bucket::new(
            endpoint_url,
            UrlStyle::Path,
            bucket.to_owned(),
            region.to_owned(),
        )
        .map_err(|err| invalid(err.to_string()))?;
        Ok(ObjectStore {
            http: reqwest::Client::new(),
            bucket,
            credentials: Credentials::new(key.access_key_id.clone(), key.secret_access_key.clone()),
        })
    }

    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), TenancyError> {
        let url = self
            .bucket
            .put_object(Some(&self.credentials), key)
            .sign(SIGNATURE_VALIDITY);
        let response = self.http.put(url).body(body).send().await;
        checked(response, "PutObject").await.map(drop)
    }

    /// Streams the first `size` bytes of `reader` into one object, holding
    /// little of it in memory. A reader that ends sooner fails the upload.
    /// S3 takes at most 5 GiB in one PUT; `put_file` has no such limit.
    pub async fn put_reader(
        &self,
        key: &str,
        size: u64,
        reader: impl AsyncRead + Send + 'static,
    ) -> Result<(), TenancyError> {
        let url = self
            .bucket
            .put_object(Some(&self.credentials), key)
            .sign(SIGNATURE_VALIDITY);
        // S3 refuses a chunked upload, so the length goes in front of the stream.
        let body = Body::wrap_stream(ReaderStream::new(reader.take(size)));
        let response = self
            .http
            .put(url)
            .header(CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await;
        checked(response, "PutObject").await.map(drop)
    }

    /// Uploads a local file and returns its size: in one PUT when it is
    /// small, otherwise as a multipart upload reading one part at a time.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<u64, TenancyError> {
        let unreadable = |source| TenancyError::File {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).await.map_err(unreadable)?;
        let size = file.metadata().await.map_err(unreadable)?.len();
        if size <= PART_SIZE {
            self.put_reader(key, size, file).await?;
            return Ok(size);
        }
        let upload_id = self.create_multipart_upload(key).await?;
        match self.upload_parts(key, &upload_id, file, path, size).await {
            Ok(()) => Ok(size),
            Err(err) => {
                self.abort_multipart_upload(key, &upload_id).await;
                Err(err)
            }
        }
    }

    async fn create_multipart_upload(&self, key: &str) -> Result<String, TenancyError> {
        const OPERATION: &str = "CreateMultipartUpload";
        let url = self
            .bucket
            .create_multipart_upload(Some(&self.credentials), key)
            .sign(SIGNATURE_VALIDITY);
        let response = checked(self.http.post(url).send().await, OPERATION).await?;
        let text = body_text(response).await?;
        CreateMultipartUpload::parse_response(&text)
            .map(|created| created.upload_id().to_owned())
            .map_err(|err| decode(OPERATION, err))
    }

    /// Reads the parts in order from `file` and sends a few at a time, then
    /// joins them into the object.
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        file: File,
        path: &Path,
        size: u64,
    ) -> Result<(), TenancyError> {
        // A plain loop rather than stream combinators: closures borrowing
        // `self` and the key make the future unprovably `Send`.
        let mut file = file;
        let mut in_flight = FuturesOrdered::new();
        let mut etags = Vec::new();
        for part in split_into_parts(size) {
            let mut body = vec![0; part.len];
            file.read_exact(&mut body)
                .await
                .map_err(|source| TenancyError::File {
                    path: path.to_owned(),
                    source,
                })?;
            in_flight.push_back(self.upload_part(key, upload_id, part.number, Bytes::from(body)));
            if in_flight.len() >= PARTS_IN_FLIGHT
                && let Some(etag) = in_flight.next().await
            {
                etags.push(etag?);
            }
        }
        while let Some(etag) = in_flight.next().await {
            etags.push(etag?);
        }
        self.complete_multipart_upload(key, upload_id, &etags).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        body: Bytes,
    ) -> Result<String, TenancyError> {
        const OPERATION: &str = "UploadPart";
        let url = self
            .bucket
            .upload_part(Some(&self.credentials), key, number, upload_id)
            .sign(SIGNATURE_VALIDITY);
        let response = checked(self.http.put(url).body(body).send().await, OPERATION).await?;
        response
            .headers()
            .get(ETAG)
            .and_then(|etag| etag.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                decode(
                    OPERATION,
                    format!("part {number} came back without an ETag"),
                )
            })
    }

    async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<(), TenancyError> {
        const OPERATION: &str = "CompleteMultipartUpload";
        let action = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNATURE_VALIDITY);
        let response = checked(
            self.http.post(url).body(action.body()).send().await,
            OPERATION,
        )
        .await?;
        // S3 may answer 200 and report a failure in the body, as the parts
        // are joined after the status line is sent.
        let text = body_text(response).await?;
        CompleteMultipartUploadResponse::parse(&text)
            .map(drop)
            .map_err(|err| decode(OPERATION, format!("{err}: {text}")))
    }

    /// Best effort: an upload left behind only costs the space of its parts.
    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.credentials), key, upload_id)
            .sign(SIGNATURE_VALIDITY);
        let response = self.http.delete(url).send().await;
        if let Err(err) = checked(response, "AbortMultipartUpload").await {
            tracing::warn!(key, upload_id, error = %err, "could not abort a failed multipart upload");
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, TenancyError> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNATURE_VALIDITY);
        let response = checked(self.http.get(url).send().await, "GetObject").await?;
        response.bytes().await.map_err(transport)
    }

    /// The object's size and a reader of its content, which arrives as it is
    /// read. A missing object or a refusal is an error here, before any byte.
    pub async fn get_reader(
        &self,
        key: &str,
    ) -> Result<(u64, impl AsyncRead + Send + Unpin + use<>), TenancyError> {
        const OPERATION: &str = "GetObject";
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNATURE_VALIDITY);
        let response = checked(self.http.get(url).send().await, OPERATION).await?;
        let size = content_length(&response, OPERATION)?;
        let body = response
            .bytes_stream()
            .map_err(|source| io::Error::other(transport(source)));
        Ok((size, StreamReader::new(body)))
    }

    /// The object's size, or `None` when there is no such object.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, TenancyError> {
        const OPERATION: &str = "HeadObject";
        let url = self
            .bucket
            .head_object(Some(&self.credentials), key)
            .sign(SIGNATURE_VALIDITY);
        let response = self.http.head(url).send().await.map_err(transport)?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = checked(Ok(response), OPERATION).await?;
        content_length(&response, OPERATION).map(Some)
    }

    /// A URL that lets anyone who has it GET the object until `validity`
    /// runs out; S3 accepts at most seven days, so longer is cut to that.
    pub fn presigned_get(&self, key: &str, validity: Duration) -> Url {
        self.bucket
            .get_object(Some(&self.credentials), key)
            .sign(validity.min(MAX_PRESIGNED_VALIDITY))
    }

    pub async fn delete(&self, key: &str) -> Result<(), TenancyError> {
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), key)
            .sign(SIGNATURE_VALIDITY);
        checked(self.http.delete(url).send().await, "DeleteObject")
            .await
            .map(drop)
    }

    /// Deletes every object, so the bucket itself can be deleted. Returns how many went.
    pub async fn empty(&self) -> Result<usize, TenancyError> {
        let keys = self.list("").await?;
        for key in &keys {
            self.delete(key).await?;
        }
        Ok(keys.len())
    }

    /// Every key under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, TenancyError> {
        let objects = self.list_objects(prefix).await?;
        Ok(objects.into_iter().map(|object| object.key).collect())
    }

    /// Every object under `prefix`, following continuation tokens to the end.
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<StoredObject>, TenancyError> {
        const OPERATION: &str = "ListObjectsV2";
        let mut objects = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(prefix);
            if let Some(token) = &continuation {
                action.with_continuation_token(token.clone());
            }
            let response = checked(
                self.http.get(action.sign(SIGNATURE_VALIDITY)).send().await,
                OPERATION,
            )
            .await?;
            let text = body_text(response).await?;
            let page =
                ListObjectsV2::parse_response(&text).map_err(|err| decode(OPERATION, err))?;
            for object in page.contents {
                let size = object.size.ok_or_else(|| {
                    decode(OPERATION, format!("no size given for {}", object.key))
                })?;
                objects.push(StoredObject {
                    key: object.key,
                    size,
                    etag: object.etag,
                });
            }
            match page.next_continuation_token {
                Some(token) => continuation = Some(token),
                None => return Ok(objects),
            }
        }
    }
}

/// One part of a multipart upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Part {
    number: u16,
    len: usize,
}

/// The parts of an object of `size` bytes, in order: `PART_SIZE` each but the
/// last, or larger when that many would not fit in S3's part numbers.
fn split_into_parts(size: u64) -> impl Iterator<Item = Part> {
    let part_size = PART_SIZE.max(size.div_ceil(MAX_PARTS).next_multiple_of(MIB));
    let count = size.div_ceil(part_size);
    (1..=count).map(move |number| Part {
        number: u16::try_from(number).expect("at most MAX_PARTS parts"),
        len: usize::try_from(part_size.min(size - (number - 1) * part_size))
            .expect("a part fits in memory"),
    })
}

async fn checked(
    response: Result<Response, reqwest::Error>,
    operation: &str,
) -> Result<Response, TenancyError> {
    let response = response.map_err(transport)?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(TenancyError::Rejected {
        service: SERVICE,
        operation: operation.to_owned(),
        status: status.as_u16(),
        body,
    })
}

async fn body_text(response: Response) -> Result<String, TenancyError> {
    response.text().await.map_err(transport)
}

/// The length the server announced, read from the header itself: reqwest
/// knows no length for the empty body of a HEAD response.
fn content_length(response: &Response, operation: &str) -> Result<u64, TenancyError> {
    response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok())
        .and_then(|length| length.parse().ok())
        .ok_or_else(|| decode(operation, "no valid Content-Length"))
}

fn transport(source: reqwest::Error) -> TenancyError {
    TenancyError::Transport {
        service: SERVICE,
        source,
    }
}

fn decode(operation: &str, message: impl std::fmt::Display) -> TenancyError {
    TenancyError::Decode {
        service: SERVICE,
        operation: operation.to_owned(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lengths(size: u64) -> Vec<u64> {
        split_into_parts(size).map(|part| part.len as u64).collect()
    }

    #[test]
    fn parts_are_numbered_from_one_and_the_last_takes_the_rest() {
        let parts: Vec<Part> = split_into_parts(40 * MIB).collect();
        assert_eq!(
            parts,
            vec![
                Part {
                    number: 1,
                    len: 16 * MIB as usize
                },
                Part {
                    number: 2,
                    len: 16 * MIB as usize
                },
                Part {
                    number: 3,
                    len: 8 * MIB as usize
                },
            ]
        );
    }

    #[test]
    fn a_size_that_divides_evenly_has_no_empty_last_part() {
        assert_eq!(lengths(32 * MIB), vec![16 * MIB, 16 * MIB]);
        assert_eq!(lengths(16 * MIB + 1), vec![16 * MIB, 1]);
    }

    #[test]
    fn huge_objects_get_larger_parts_within_the_part_numbers() {
        let size = 500 * 1024 * MIB + 3;
        let parts: Vec<Part> = split_into_parts(size).collect();
        assert!(parts.len() as u64 <= MAX_PARTS);
        assert_eq!(
            parts.last().map(|part| usize::from(part.number)),
            Some(parts.len())
        );
        let lengths: Vec<u64> = parts.iter().map(|part| part.len as u64).collect();
        assert_eq!(lengths.iter().sum::<u64>(), size);
        assert!(lengths[0] > PART_SIZE && lengths[0].is_multiple_of(MIB));
        assert!(
            lengths[..lengths.len() - 1]
                .iter()
                .all(|&len| len == lengths[0])
        );
    }

    fn offline_store() -> ObjectStore {
        let key = AccessKey {
            access_key_id: "GK0123".to_owned(),
            secret_access_key: "secret".to_owned(),
        };
        // These tests send no request, so no server needs to answer here.
        ObjectStore::new("http://127.0.0.1:9", "garage", "media", &key).expect("store")
    }

    #[tokio::test]
    async fn a_missing_file_fails_before_any_request() {
        let path = Path::new("/nonexistent/media.tar");
        match offline_store().put_file("media.tar", path).await {
            Err(TenancyError::File { path: failed, .. }) => assert_eq!(failed, path),
            other => panic!("uploading a missing file gave {other:?}"),
        }
    }

    #[test]
    fn presigned_urls_are_signed_for_at_most_seven_days() {
        let store = offline_store();
        let expires = |validity| {
            store
                .presigned_get("a b/c.png", validity)
                .query_pairs()
                .find(|(name, _)| name == "X-Amz-Expires")
                .map(|(_, value)| value.into_owned())
        };
        assert_eq!(expires(Duration::from_secs(90)).as_deref(), Some("90"));
        assert_eq!(
            expires(Duration::from_secs(30 * 24 * 60 * 60)).as_deref(),
            Some("604800")
        );
    }
}
