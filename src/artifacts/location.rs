//! Where artifacts live: a local directory, a shared file system, or an S3 bucket.
//!
//! The user names the place with one string (`--artifacts`): a path (`artifacts`,
//! `/scratch/runs`), a `file:///shared/path` URL, or `s3://bucket/prefix`. S3
//! credentials, region and endpoint come from the environment only (the usual
//! `AWS_*` variables; `SWEEPER_S3_ENDPOINT` for an S3-compatible server such as MinIO
//! or Ceph), so nothing secret is ever part of the string we print.

use std::collections::HashMap;
use std::path::PathBuf;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

use super::{ArtifactError, ArtifactResult};
use crate::redact::redact_url;

/// The environment variable naming the endpoint of an S3-compatible server.
pub const S3_ENDPOINT_VAR: &str = "SWEEPER_S3_ENDPOINT";

/// A checked artifact location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on this machine, or on a file system every worker mounts.
    Directory(PathBuf),
    /// An S3 bucket (AWS or S3-compatible).
    S3(S3Settings),
    /// A store in this process's memory (tests).
    Memory,
}

/// What an `s3://` location resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`.
    pub prefix: String,
    /// A custom endpoint (`http://minio:9000`); `None` means AWS itself.
    pub endpoint: Option<String>,
}

impl Location {
    /// Parses what the user wrote. Relative paths are taken from the current
    /// directory; they are made absolute when the store is opened.
    pub fn parse(url_or_path: &str, env: &HashMap<String, String>) -> ArtifactResult<Location> {
        let given = url_or_path.trim();
        let bad = |reason: String| ArtifactError::BadLocation {
            location: redact_url(given),
            reason,
        };
        if given.is_empty() {
            return Err(bad(
                "empty; give a directory, file:///path or s3://bucket/prefix".into(),
            ));
        }
        if !given.contains("://") {
            return Ok(Location::Directory(PathBuf::from(given)));
        }
        let url = url::Url::parse(given).map_err(|e| bad(format!("not a valid URL: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "credentials do not belong in the artifact URL; set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY in the environment"
                    .into(),
            ));
        }
        match url.scheme() {
            "file" => {
                if url
                    .host_str()
                    .is_some_and(|h| !h.is_empty() && h != "localhost")
                {
                    return Err(bad(format!(
                        "a file URL names a path on this machine: write file:///{}{} (three \
                         slashes), not a host",
                        url.host_str().unwrap_or_default(),
                        url.path()
                    )));
                }
                let path = url
                    .to_file_path()
                    .map_err(|()| bad("not an absolute file path".into()))?;
                Ok(Location::Directory(path))
            }
            "s3" | "s3a" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| bad("no bucket: write s3://bucket/prefix".into()))?
                    .to_string();
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(bad(
                        "S3 settings come from the environment, not from ?query parameters".into(),
                    ));
                }
                let endpoint = s3_endpoint(env).map_err(bad)?;
                Ok(Location::S3(S3Settings {
                    bucket,
                    prefix: url.path().trim_matches('/').to_string(),
                    endpoint,
                }))
            }
            "memory" => Ok(Location::Memory),
            other => Err(bad(format!(
                "the {other}:// scheme is not supported; give a directory, file:///path or \
                 s3://bucket/prefix"
            ))),
        }
    }
}

/// The endpoint of an S3-compatible server: `SWEEPER_S3_ENDPOINT`, else the AWS
/// SDK's own `AWS_ENDPOINT_URL`. An endpoint must not carry credentials either.
fn s3_endpoint(env: &HashMap<String, String>) -> Result<Option<String>, String> {
    let Some((var, value)) = [S3_ENDPOINT_VAR, "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
        .iter()
        .find_map(|var| {
            env.get(*var)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (*var, v))
        })
    else {
        return Ok(None);
    };
    let url = url::Url::parse(value.trim()).map_err(|e| {
        format!(
            "{var}={} is not a URL ({e}); write http://host:port",
            redact_url(value)
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{var} must be an http:// or https:// URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{var} carries credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead"
        ));
    }
    Ok(Some(value.trim().trim_end_matches('/').to_string()))
}

impl S3Settings {
    /// The S3 client configuration: every `AWS_*` variable the client knows
    /// (credentials, region, session token, web identity, ...), then the bucket and
    /// endpoint from these settings. Talks to nobody: the first request does.
    pub fn builder(&self, env: &HashMap<String, String>) -> AmazonS3Builder {
        let mut builder = AmazonS3Builder::new();
        for (key, value) in env {
            if key.starts_with("AWS_") {
                if let Ok(config_key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(config_key, value.clone());
                }
            }
        }
        builder = builder.with_bucket_name(&self.bucket);
        if let Some(endpoint) = &self.endpoint {
            // S3-compatible servers address buckets by path (`endpoint/bucket/key`),
            // the builder's default; plain http is common on a private network.
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        builder
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Directory(path) => write!(f, "{}", path.display()),
            Location::S3(s3) => {
                write!(f, "s3://{}/{}", s3.bucket, s3.prefix)?;
                if let Some(endpoint) = &s3.endpoint {
                    write!(f, " at {}", redact_url(endpoint))?;
                }
                Ok(())
            }
            Location::Memory => write!(f, "memory://"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn paths_and_file_urls_are_directories() {
        let none = env(&[]);
        assert_eq!(
            Location::parse("artifacts", &none).unwrap(),
            Location::Directory("artifacts".into())
        );
        assert_eq!(
            Location::parse("/scratch/runs", &none).unwrap(),
            Location::Directory("/scratch/runs".into())
        );
        assert_eq!(
            Location::parse("file:///shared/sweeper%20runs", &none).unwrap(),
            Location::Directory("/shared/sweeper runs".into())
        );
        assert_eq!(
            Location::parse("file://localhost/shared", &none).unwrap(),
            Location::Directory("/shared".into())
        );
    }

    #[test]
    fn a_file_url_with_a_host_is_refused_with_the_fix() {
        let err = Location::parse("file://shared/runs", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("file:///shared/runs"), "{err}");
    }

    #[test]
    fn s3_urls_give_bucket_prefix_and_endpoint() {
        let plain = Location::parse("s3://bucket/a/b/", &env(&[])).unwrap();
        assert_eq!(
            plain,
            Location::S3(S3Settings {
                bucket: "bucket".into(),
                prefix: "a/b".into(),
                endpoint: None
            })
        );
        let minio = Location::parse(
            "s3://runs",
            &env(&[
                ("SWEEPER_S3_ENDPOINT", "http://minio:9000/"),
                ("AWS_ENDPOINT_URL", "https://ignored"),
            ]),
        )
        .unwrap();
        let Location::S3(s3) = &minio else {
            panic!("{minio:?}")
        };
        assert_eq!(s3.prefix, "");
        assert_eq!(s3.endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(minio.to_string(), "s3://runs/ at http://minio:9000");
    }

    #[test]
    fn the_aws_sdk_endpoint_variable_is_honoured() {
        let loc =
            Location::parse("s3://b/p", &env(&[("AWS_ENDPOINT_URL", "https://s3.ceph")])).unwrap();
        let Location::S3(s3) = loc else { panic!() };
        assert_eq!(s3.endpoint.as_deref(), Some("https://s3.ceph"));
    }

    #[test]
    fn credentials_in_urls_are_refused_and_never_echoed() {
        for (url, vars) in [
            ("s3://AKIA:topsecret@bucket/p", env(&[])),
            (
                "s3://bucket/p",
                env(&[("SWEEPER_S3_ENDPOINT", "http://admin:topsecret@minio:9000")]),
            ),
        ] {
            let err = Location::parse(url, &vars).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("credentials"), "{msg}");
            assert!(!msg.contains("topsecret"), "{msg}");
        }
    }

    #[test]
    fn unsupported_schemes_and_bad_endpoints_are_refused() {
        for (url, vars) in [
            ("gs://bucket/p", env(&[])),
            ("s3:///no-bucket", env(&[])),
            ("s3://b/p?region=x", env(&[])),
            ("", env(&[])),
            ("s3://b/p", env(&[("SWEEPER_S3_ENDPOINT", "minio:9000")])),
            ("s3://b/p", env(&[("SWEEPER_S3_ENDPOINT", "ftp://minio")])),
        ] {
            assert!(
                matches!(
                    Location::parse(url, &vars),
                    Err(ArtifactError::BadLocation { .. })
                ),
                "{url} {vars:?}"
            );
        }
    }

    #[test]
    fn the_s3_client_takes_credentials_from_aws_variables_only() {
        let vars = env(&[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
            ("AWS_REGION", "eu-west-3"),
            ("AWS_BUCKET", "not-this-one"),
            ("SWEEPER_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("SECRET_ACCESS_KEY", "not-an-aws-variable"),
        ]);
        let Location::S3(s3) = Location::parse("s3://runs/study", &vars).unwrap() else {
            panic!("not s3")
        };
        let builder = s3.builder(&vars);
        let get = |key: &str| builder.get_config_value(&key.parse().unwrap());
        assert_eq!(get("aws_access_key_id").as_deref(), Some("AKIDEXAMPLE"));
        assert_eq!(
            get("aws_secret_access_key").as_deref(),
            Some("wJalrXUtnFEMI")
        );
        assert_eq!(get("aws_region").as_deref(), Some("eu-west-3"));
        assert_eq!(get("aws_bucket").as_deref(), Some("runs"));
        assert_eq!(
            get("aws_endpoint").as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(get("aws_allow_http").as_deref(), Some("true"));
        assert_eq!(
            get("aws_virtual_hosted_style_request").as_deref(),
            Some("false")
        );
        // Building the client contacts nobody.
        builder.build().expect("S3 client builds offline");

        // Without any variable the client still builds (anonymous requests fail
        // later, with the server's message).
        let bare = s3.builder(&env(&[]));
        assert_eq!(
            bare.get_config_value(&"aws_access_key_id".parse().unwrap()),
            None
        );
    }
}
