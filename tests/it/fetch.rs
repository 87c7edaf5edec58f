//! Fetching Image Builders end to end: a stand-in mirror (real `sha256sums`, real usign
//! signatures) served over loopback HTTP or `file://`, archives built here with `tar`, xz and
//! zstd, and the real cache directory.

use imagegen::triple::Triple;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use imagegen::ErrorCode;
use imagegen::imagebuilder::download::COMPLETE_MARKER;
use imagegen::imagebuilder::usign::{Keyring, SecretKey};
use imagegen::imagebuilder::{
    FetchOptions, MirrorClient, ProfilesJson, TargetMetadata, fetch_builder, fetch_overview,
    fetch_target, target_dir,
};
use imagegen_standin::mirror::{ArchiveSource, MirrorWriter, TargetFiles, test_secret_key};

use crate::http_server::{Fault, TestServer};

const RELEASE: &str = "23.05.4";
const TARGET: &str = "x86";
const SUBTARGET: &str = "64";
const PROFILES_JSON: &[u8] = br#"{"metadata_version":1,"target":"x86/64","version_code":"r23809-234f1a2efa","version_number":"23.05.4","default_packages":["base-files"],"profiles":{"generic":{"device_packages":[],"image_prefix":"openwrt-23.05.4-x86-64-generic","images":[{"filesystem":"ext4","name":"openwrt-23.05.4-x86-64-generic-ext4-combined.img.gz","sha256":"00","type":"combined"}],"supported_devices":[],"titles":[{"model":"x86/64","vendor":"Generic"}]}}}"#;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Compression {
    Xz,
    Zstd,
}

fn archive_name(compression: Compression) -> String {
    let suffix = match compression {
        Compression::Xz => "tar.xz",
        Compression::Zstd => "tar.zst",
    };
    format!("openwrt-imagebuilder-{RELEASE}-{TARGET}-{SUBTARGET}.Linux-x86_64.{suffix}")
}

fn top_of(name: &str) -> &str {
    name.strip_suffix(".tar.xz")
        .or_else(|| name.strip_suffix(".tar.zst"))
        .unwrap()
}

/// One tar entry, written with raw header fields so tests can build hostile archives.
struct Entry {
    name: String,
    kind: tar::EntryType,
    mode: u32,
    data: Vec<u8>,
    link: String,
}

fn dir(name: &str) -> Entry {
    Entry {
        name: name.into(),
        kind: tar::EntryType::Directory,
        mode: 0o755,
        data: vec![],
        link: String::new(),
    }
}

fn file(name: &str, mode: u32, data: &[u8]) -> Entry {
    Entry {
        name: name.into(),
        kind: tar::EntryType::Regular,
        mode,
        data: data.to_vec(),
        link: String::new(),
    }
}

fn symlink(name: &str, target: &str) -> Entry {
    Entry {
        name: name.into(),
        kind: tar::EntryType::Symlink,
        mode: 0o777,
        data: vec![],
        link: target.into(),
    }
}

fn hardlink(name: &str, target: &str) -> Entry {
    Entry {
        name: name.into(),
        kind: tar::EntryType::Link,
        mode: 0o644,
        data: vec![],
        link: target.into(),
    }
}

fn special(name: &str, kind: tar::EntryType) -> Entry {
    Entry {
        name: name.into(),
        kind,
        mode: 0o644,
        data: vec![],
        link: String::new(),
    }
}

fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_old();
        {
            let old = header.as_old_mut();
            old.name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
            old.linkname[..entry.link.len()].copy_from_slice(entry.link.as_bytes());
        }
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_size(entry.data.len() as u64);
        header.set_mtime(1_700_000_000);
        header.set_uid(1000);
        header.set_gid(1000);
        header.set_cksum();
        builder.append(&header, entry.data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

fn compress(tar: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::Xz => {
            let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 6);
            encoder.write_all(tar).unwrap();
            encoder.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

/// A good little Image Builder: directories, an executable, a symlink, a hardlink, a
/// read-only directory.
fn good_entries(top: &str) -> Vec<Entry> {
    vec![
        dir(&format!("{top}/")),
        file(
            &format!("{top}/Makefile"),
            0o644,
            b"all:\n\t@echo stand-in\n",
        ),
        dir(&format!("{top}/scripts/")),
        file(
            &format!("{top}/scripts/tool.sh"),
            0o755,
            b"#!/bin/sh\necho tool\n",
        ),
        symlink(&format!("{top}/scripts/Makefile.link"), "../Makefile"),
        hardlink(&format!("{top}/Makefile.hard"), &format!("{top}/Makefile")),
        file(
            &format!("{top}/deep/a/b/c.txt"),
            0o600,
            &vec![b'x'; 300_000],
        ),
        file(&format!("{top}/packages/blob.ipk"), 0o644, &noise(100_000)),
        dir(&format!("{top}/readonly/")),
        file(&format!("{top}/readonly/file"), 0o444, b"ro"),
        dir(&format!("{top}/readonly/")),
    ]
}

/// Incompressible bytes (xorshift), so archives are big enough to cut mid-way.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    mirror: MirrorWriter,
    cache: PathBuf,
    tmp: PathBuf,
    key: SecretKey,
    archive_name: String,
}

impl Fixture {
    fn new(compression: Compression) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mirror = MirrorWriter::new(dir.path().join("mirror"));
        Fixture {
            cache: dir.path().join("cache"),
            tmp: dir.path().join("tmp"),
            _dir: dir,
            mirror,
            key: test_secret_key(),
            archive_name: archive_name(compression),
        }
    }

    fn compression(&self) -> Compression {
        if self.archive_name.ends_with(".tar.xz") {
            Compression::Xz
        } else {
            Compression::Zstd
        }
    }

    /// Publishes an archive made of `entries` (hashed and signed correctly).
    fn publish(&self, entries: &[Entry]) -> Vec<u8> {
        let archive = compress(&tar_bytes(entries), self.compression());
        self.publish_bytes(&archive);
        archive
    }

    fn publish_bytes(&self, archive: &[u8]) {
        let files = TargetFiles {
            release: RELEASE,
            target: TARGET,
            subtarget: SUBTARGET,
            archive_name: &self.archive_name,
            archive: ArchiveSource::Bytes(archive),
            profiles_json: PROFILES_JSON,
            extra: vec![
                ("version.buildinfo", b"r23809-234f1a2efa\n"),
                ("packages/Packages", b"Package: x\n"),
            ],
        };
        self.mirror.write_target(&files, Some(&self.key)).unwrap();
    }

    fn publish_good(&self) -> Vec<u8> {
        self.publish(&good_entries(top_of(&self.archive_name)))
    }

    fn target_path(&self) -> PathBuf {
        self.mirror.target_path(RELEASE, TARGET, SUBTARGET)
    }

    fn archive_rel(&self) -> String {
        format!(
            "{}/{}",
            target_dir(&Triple::new(RELEASE, TARGET, SUBTARGET)),
            self.archive_name
        )
    }

    fn keyring(&self) -> Keyring {
        let mut keyring = Keyring::official();
        keyring.add(self.key.public_key());
        keyring
    }

    fn metadata(&self, client: &MirrorClient) -> imagegen::Result<TargetMetadata> {
        fetch_target(
            client,
            &self.keyring(),
            true,
            &Triple::new(RELEASE, TARGET, SUBTARGET),
        )
    }

    fn fetch(&self, client: &MirrorClient) -> imagegen::Result<PathBuf> {
        let metadata = self.metadata(client)?;
        fetch_builder(client, &metadata, &self.cache, &self.tmp, &mut |_| {})
    }

    /// Every path under the cache dir, relative, sorted.
    fn cache_listing(&self) -> Vec<String> {
        let mut out = Vec::new();
        list(&self.cache, &self.cache, &mut out);
        out.sort();
        out
    }
}

fn list(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        out.push(path.strip_prefix(root).unwrap().display().to_string());
        if entry.file_type().unwrap().is_dir() {
            list(root, &path, out);
        }
    }
}

fn options() -> FetchOptions {
    FetchOptions {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        retries: 3,
        backoff_initial: Duration::from_millis(1),
        offline: false,
        ..FetchOptions::default()
    }
}

fn http_client(server: &TestServer) -> MirrorClient {
    MirrorClient::new(&server.url(), options()).unwrap()
}

fn file_client(fixture: &Fixture) -> MirrorClient {
    MirrorClient::new(&fixture.mirror.file_url(), options()).unwrap()
}

fn assert_good_tree(top: &Path) {
    assert_eq!(
        fs::read(top.join("Makefile")).unwrap(),
        b"all:\n\t@echo stand-in\n"
    );
    let tool = fs::metadata(top.join("scripts/tool.sh")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        fs::read_link(top.join("scripts/Makefile.link")).unwrap(),
        Path::new("../Makefile")
    );
    assert_eq!(
        fs::read(top.join("scripts/Makefile.link")).unwrap(),
        fs::read(top.join("Makefile")).unwrap()
    );
    assert_eq!(
        fs::read(top.join("Makefile.hard")).unwrap(),
        fs::read(top.join("Makefile")).unwrap()
    );
    assert_eq!(fs::read(top.join("deep/a/b/c.txt")).unwrap().len(), 300_000);
    assert_eq!(
        fs::read(top.join("packages/blob.ipk")).unwrap(),
        noise(100_000)
    );
    let readonly = fs::metadata(top.join("readonly/file")).unwrap();
    assert_eq!(readonly.permissions().mode() & 0o7777, 0o444);
    assert!(top.parent().unwrap().join(COMPLETE_MARKER).is_file());
}

#[test]
fn fetches_xz_over_http() {
    let fixture = Fixture::new(Compression::Xz);
    let archive = fixture.publish_good();
    let server = TestServer::start(fixture.mirror.root());
    let client = http_client(&server);
    let metadata = fixture.metadata(&client).unwrap();
    assert_eq!(metadata.archive, fixture.archive_name);
    assert_eq!(metadata.key_id, Some(fixture.key.key_id.to_string()));
    assert_eq!(metadata.version_code, "r23809-234f1a2efa");
    assert_eq!(
        metadata.url_of_archive,
        format!("{}/{}", server.url(), fixture.archive_rel())
    );
    let mut reports = Vec::new();
    let top = fetch_builder(&client, &metadata, &fixture.cache, &fixture.tmp, &mut |p| {
        reports.push(p)
    })
    .unwrap();
    let sha16 = &metadata.archive_sha256[..16];
    assert_eq!(
        top,
        fixture.cache.join(format!(
            "{RELEASE}/{TARGET}/{SUBTARGET}/{sha16}/{}",
            top_of(&fixture.archive_name)
        ))
    );
    assert_good_tree(&top);
    let last_download = reports.iter().rev().find(|p| p.downloaded > 0).unwrap();
    assert_eq!(last_download.downloaded, archive.len() as u64);
    assert_eq!(last_download.total, Some(archive.len() as u64));
    // The part file is gone once the tree is installed.
    assert_eq!(
        fs::read_dir(fixture.tmp.join("downloads"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
            .count(),
        0
    );
}

#[test]
fn fetches_zstd_from_a_file_url_and_second_fetch_is_a_cache_hit() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    let client = file_client(&fixture);
    let top = fixture.fetch(&client).unwrap();
    assert_good_tree(&top);
    // Remove the archive from the mirror: a cache hit must not need it.
    fs::remove_file(fixture.target_path().join(&fixture.archive_name)).unwrap();
    assert_eq!(fixture.fetch(&client).unwrap(), top);
}

#[test]
fn fetches_zstd_over_http_once() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    let server = TestServer::start(fixture.mirror.root());
    let client = http_client(&server);
    let top = fixture.fetch(&client).unwrap();
    assert_good_tree(&top);
    fixture.fetch(&client).unwrap();
    assert_eq!(server.requests(&fixture.archive_rel()).len(), 1);
}

#[test]
fn resumes_a_truncated_download_with_a_range_request() {
    let fixture = Fixture::new(Compression::Xz);
    let archive = fixture.publish_good();
    assert!(
        archive.len() > 50_000,
        "archive too small for the test: {}",
        archive.len()
    );
    let server = TestServer::start(fixture.mirror.root());
    server.set_fault(
        &fixture.archive_rel(),
        Fault {
            truncate_after: Some(40_000),
            truncate_times: 1,
            ..Fault::default()
        },
    );
    let top = fixture.fetch(&http_client(&server)).unwrap();
    assert_good_tree(&top);
    let requests = server.requests(&fixture.archive_rel());
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].range, None);
    assert_eq!(requests[1].range.as_deref(), Some("bytes=40000-"));
    assert_eq!(requests[1].status, 206);
}

#[test]
fn resumes_when_the_server_ignores_range() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    let server = TestServer::start(fixture.mirror.root());
    server.set_fault(
        &fixture.archive_rel(),
        Fault {
            truncate_after: Some(30_000),
            truncate_times: 1,
            ignore_range: true,
            ..Fault::default()
        },
    );
    assert_good_tree(&fixture.fetch(&http_client(&server)).unwrap());
    let requests = server.requests(&fixture.archive_rel());
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200]
    );
}

#[test]
fn slow_server_times_out_and_resumes() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    let server = TestServer::start(fixture.mirror.root());
    // Each response sends one 16 KiB chunk, then stalls longer than the read timeout.
    server.set_fault(
        &fixture.archive_rel(),
        Fault {
            chunk_delay: Some(Duration::from_millis(400)),
            ..Fault::default()
        },
    );
    let impatient = FetchOptions {
        read_timeout: Duration::from_millis(100),
        ..options()
    };
    let client = MirrorClient::new(&server.url(), impatient).unwrap();
    assert_good_tree(&fixture.fetch(&client).unwrap());
    let requests = server.requests(&fixture.archive_rel());
    assert!(requests.len() >= 2, "{requests:?}");
    assert_eq!(requests[1].range.as_deref(), Some("bytes=16384-"));
}

#[test]
fn retries_server_errors() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    let server = TestServer::start(fixture.mirror.root());
    let sums = format!(
        "{}/sha256sums",
        target_dir(&Triple::new(RELEASE, TARGET, SUBTARGET))
    );
    server.set_fault(
        &sums,
        Fault {
            fail_first: 2,
            ..Fault::default()
        },
    );
    server.set_fault(
        &fixture.archive_rel(),
        Fault {
            fail_first: 3,
            ..Fault::default()
        },
    );
    assert_good_tree(&fixture.fetch(&http_client(&server)).unwrap());
    let statuses = |path: &str| {
        server
            .requests(path)
            .iter()
            .map(|r| r.status)
            .collect::<Vec<_>>()
    };
    assert_eq!(statuses(&sums), [500, 500, 200]);
    assert_eq!(statuses(&fixture.archive_rel()), [500, 500, 500, 200]);
}

#[test]
fn gives_up_after_the_retry_budget() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    let server = TestServer::start(fixture.mirror.root());
    let sums = format!(
        "{}/sha256sums",
        target_dir(&Triple::new(RELEASE, TARGET, SUBTARGET))
    );
    server.set_fault(
        &sums,
        Fault {
            fail_first: 10,
            ..Fault::default()
        },
    );
    let error = fixture.metadata(&http_client(&server)).unwrap_err();
    assert_eq!(error.code, ErrorCode::DownloadError);
    assert!(
        error
            .message
            .ends_with("HTTP 500 Internal Server Error (gave up after 4 attempts)"),
        "{}",
        error.message
    );
    assert_eq!(server.requests(&sums).len(), 4);
}

#[test]
fn missing_target_is_a_404_without_retries() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    let server = TestServer::start(fixture.mirror.root());
    let client = http_client(&server);
    let error = fetch_target(
        &client,
        &fixture.keyring(),
        true,
        &Triple::new(RELEASE, "nosuch", "target"),
    )
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::DownloadError);
    assert_eq!(
        error.message,
        format!(
            "`{}/releases/23.05.4/targets/nosuch/target/sha256sums` not found (HTTP 404)",
            server.url()
        )
    );
    assert!(
        error
            .help
            .unwrap()
            .contains("release, target and subtarget")
    );
    assert_eq!(server.total_requests(), 1);
}

#[test]
fn offline_refuses_http_but_allows_file_urls() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    let server = TestServer::start(fixture.mirror.root());
    let offline = FetchOptions {
        offline: true,
        ..options()
    };
    let client = MirrorClient::new(&server.url(), offline.clone()).unwrap();
    let error = fixture.metadata(&client).unwrap_err();
    assert_eq!(error.code, ErrorCode::Precondition);
    assert_eq!(
        error.message,
        format!(
            "offline: would fetch `{}/{}/sha256sums`",
            server.url(),
            target_dir(&Triple::new(RELEASE, TARGET, SUBTARGET))
        )
    );
    assert_eq!(server.total_requests(), 0);
    let local = MirrorClient::new(&fixture.mirror.file_url(), offline).unwrap();
    assert_good_tree(&fixture.fetch(&local).unwrap());
}

#[test]
fn wrong_checksum_is_refused_and_caches_nothing() {
    let fixture = Fixture::new(Compression::Xz);
    fixture.publish_good();
    // Replace the archive after sealing: sha256sums (and its signature) no longer match.
    let other = compress(
        &tar_bytes(&[dir(&format!("{}/", top_of(&fixture.archive_name)))]),
        Compression::Xz,
    );
    fs::write(fixture.target_path().join(&fixture.archive_name), &other).unwrap();
    let server = TestServer::start(fixture.mirror.root());
    let client = http_client(&server);
    let metadata = fixture.metadata(&client).unwrap();
    let error = fetch_builder(
        &client,
        &metadata,
        &fixture.cache,
        &fixture.tmp,
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::DownloadError);
    let actual =
        imagegen_standin::mirror::sha256_file(&fixture.target_path().join(&fixture.archive_name))
            .unwrap();
    assert_eq!(
        error.message,
        format!(
            "sha256 mismatch for {}: expected {}, got {actual}",
            fixture.archive_name, metadata.archive_sha256
        )
    );
    assert_eq!(
        fixture.cache_listing(),
        ["23.05.4", "23.05.4/x86", "23.05.4/x86/64"]
    );
    assert!(
        !fixture
            .tmp
            .join(format!("downloads/{}.part", metadata.archive_sha256))
            .exists()
    );
}

#[test]
fn bad_signature_is_refused() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    fs::write(
        fixture.target_path().join("sha256sums.sig"),
        fixture.key.sign(b"something else"),
    )
    .unwrap();
    let error = fixture.metadata(&file_client(&fixture)).unwrap_err();
    assert_eq!(error.code, ErrorCode::SignatureError);
    assert!(error.message.contains("bad signature"), "{}", error.message);
}

#[test]
fn tampered_sha256sums_is_refused() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    let sums_path = fixture.target_path().join("sha256sums");
    let mut sums = fs::read(&sums_path).unwrap();
    sums[0] = if sums[0] == b'0' { b'1' } else { b'0' };
    fs::write(&sums_path, sums).unwrap();
    let error = fixture.metadata(&file_client(&fixture)).unwrap_err();
    assert_eq!(error.code, ErrorCode::SignatureError);
}

#[test]
fn unknown_signing_key_is_refused() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    let client = file_client(&fixture);
    let error = fetch_target(
        &client,
        &Keyring::official(),
        true,
        &Triple::new(RELEASE, TARGET, SUBTARGET),
    )
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::SignatureError);
    assert!(
        error.message.ends_with(&format!(
            "signature made with unknown key `{}`",
            fixture.key.key_id
        )),
        "{}",
        error.message
    );
    assert!(error.help.unwrap().contains("OWRT_IMG_TRUSTED_KEYS"));
}

#[test]
fn trusted_key_file_is_accepted() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    let key_file = fixture.tmp.join("mirror.pub");
    fs::create_dir_all(&fixture.tmp).unwrap();
    fs::write(&key_file, fixture.key.public_key().to_file_text()).unwrap();
    let mut keyring = Keyring::official();
    assert_eq!(keyring.add_file(&key_file).unwrap(), fixture.key.key_id);
    let metadata = fetch_target(
        &file_client(&fixture),
        &keyring,
        true,
        &Triple::new(RELEASE, TARGET, SUBTARGET),
    )
    .unwrap();
    assert_eq!(metadata.key_id, Some(fixture.key.key_id.to_string()));
}

#[test]
fn verification_off_works_without_a_key() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    fs::remove_file(fixture.target_path().join("sha256sums.sig")).unwrap();
    let client = file_client(&fixture);
    let metadata = fetch_target(
        &client,
        &Keyring::empty(),
        false,
        &Triple::new(RELEASE, TARGET, SUBTARGET),
    )
    .unwrap();
    assert_eq!(metadata.key_id, None);
    assert_good_tree(
        &fetch_builder(
            &client,
            &metadata,
            &fixture.cache,
            &fixture.tmp,
            &mut |_| {},
        )
        .unwrap(),
    );
}

#[test]
fn profiles_json_must_match_sha256sums() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    fs::write(fixture.target_path().join("profiles.json"), b"{}").unwrap();
    let error = fixture.metadata(&file_client(&fixture)).unwrap_err();
    assert_eq!(error.code, ErrorCode::DownloadError);
    assert!(
        error
            .message
            .starts_with("sha256 mismatch for profiles.json"),
        "{}",
        error.message
    );
}

#[test]
fn interrupted_fetch_leaves_nothing_complete_and_resumes_later() {
    let fixture = Fixture::new(Compression::Xz);
    fixture.publish_good();
    let server = TestServer::start(fixture.mirror.root());
    server.set_fault(
        &fixture.archive_rel(),
        Fault {
            truncate_after: Some(45_000),
            truncate_times: 1,
            ..Fault::default()
        },
    );
    let fragile = MirrorClient::new(
        &server.url(),
        FetchOptions {
            retries: 0,
            ..options()
        },
    )
    .unwrap();
    let error = fixture.fetch(&fragile).unwrap_err();
    assert_eq!(error.code, ErrorCode::DownloadError, "{}", error.message);
    assert_eq!(
        fixture.cache_listing(),
        ["23.05.4", "23.05.4/x86", "23.05.4/x86/64"]
    );
    let metadata = fixture.metadata(&fragile).unwrap();
    let part = fixture
        .tmp
        .join(format!("downloads/{}.part", metadata.archive_sha256));
    assert_eq!(fs::metadata(&part).unwrap().len(), 45_000);
    // A later run picks up the part file and asks only for the rest.
    let top = fixture.fetch(&http_client(&server)).unwrap();
    assert_good_tree(&top);
    let requests = server.requests(&fixture.archive_rel());
    assert_eq!(
        requests.last().unwrap().range.as_deref(),
        Some("bytes=45000-")
    );
}

#[test]
fn corrupt_part_file_is_discarded_and_downloaded_again() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    let server = TestServer::start(fixture.mirror.root());
    let client = http_client(&server);
    let metadata = fixture.metadata(&client).unwrap();
    let downloads = fixture.tmp.join("downloads");
    fs::create_dir_all(&downloads).unwrap();
    fs::write(
        downloads.join(format!("{}.part", metadata.archive_sha256)),
        b"garbage!",
    )
    .unwrap();
    assert_good_tree(
        &fetch_builder(
            &client,
            &metadata,
            &fixture.cache,
            &fixture.tmp,
            &mut |_| {},
        )
        .unwrap(),
    );
    let ranges: Vec<Option<String>> = server
        .requests(&fixture.archive_rel())
        .into_iter()
        .map(|r| r.range)
        .collect();
    assert_eq!(ranges, [Some("bytes=8-".to_string()), None]);
}

#[test]
fn concurrent_fetches_of_one_archive_download_it_once() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    let server = TestServer::start(fixture.mirror.root());
    let client = http_client(&server);
    let metadata = fixture.metadata(&client).unwrap();
    let tops: Vec<PathBuf> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let client = http_client(&server);
                    fetch_builder(
                        &client,
                        &metadata,
                        &fixture.cache,
                        &fixture.tmp,
                        &mut |_| {},
                    )
                    .unwrap()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    assert!(tops.iter().all(|top| top == &tops[0]));
    assert_good_tree(&tops[0]);
    assert_eq!(server.requests(&fixture.archive_rel()).len(), 1);
}

#[test]
fn plain_download_resumes_into_a_file() {
    let fixture = Fixture::new(Compression::Xz);
    let archive = fixture.publish_good();
    let server = TestServer::start(fixture.mirror.root());
    server.set_fault(
        &fixture.archive_rel(),
        Fault {
            truncate_after: Some(20_000),
            truncate_times: 2,
            ..Fault::default()
        },
    );
    let dest = fixture.tmp.join("archive");
    fs::create_dir_all(&fixture.tmp).unwrap();
    let length = http_client(&server)
        .download(&fixture.archive_rel(), &dest)
        .unwrap();
    assert_eq!(length, archive.len() as u64);
    assert_eq!(fs::read(&dest).unwrap(), archive);
    let ranges: Vec<Option<String>> = server
        .requests(&fixture.archive_rel())
        .into_iter()
        .map(|r| r.range)
        .collect();
    assert_eq!(
        ranges,
        [
            None,
            Some("bytes=20000-".to_string()),
            Some("bytes=40000-".to_string())
        ]
    );
}

#[test]
fn overview_is_fetched_from_the_release_root() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture
        .mirror
        .write_release_index(
            RELEASE,
            &[("x86/64", "x86_64")],
            br#"{"release":"23.05.4","profiles":[]}"#,
        )
        .unwrap();
    fixture
        .mirror
        .write_versions("23.05.4", "22.03.7", &["23.05.4", "22.03.7"])
        .unwrap();
    let overview = fetch_overview(&file_client(&fixture), RELEASE).unwrap();
    assert_eq!(overview, br#"{"release":"23.05.4","profiles":[]}"#);
}

#[test]
fn parses_every_real_23_05_4_profiles_json() {
    let root = imagegen_standin::upstream_data().join("targets");
    let mut count = 0;
    for target in fs::read_dir(&root).unwrap().flatten() {
        for subtarget in fs::read_dir(target.path()).unwrap().flatten() {
            let path = subtarget.path().join("profiles.json");
            let bytes = fs::read(&path).unwrap();
            let parsed = ProfilesJson::parse(&bytes, &path.display().to_string()).unwrap();
            let expected = format!(
                "{}/{}",
                target.file_name().to_string_lossy(),
                subtarget.file_name().to_string_lossy()
            );
            assert_eq!(parsed.target, expected);
            assert_eq!(parsed.version_number, "23.05.4");
            assert!(
                parsed.version_code.starts_with('r'),
                "{}",
                parsed.version_code
            );
            assert!(!parsed.profiles.is_empty(), "{expected}");
            for (name, profile) in &parsed.profiles {
                assert!(
                    !profile.images.is_empty() || !profile.titles.is_empty(),
                    "{expected} {name}"
                );
            }
            count += 1;
        }
    }
    assert_eq!(count, 75);
}

// ---- hostile archives: every rule has its own archive, and each is refused ----

/// Publishes a hostile archive (correctly hashed and signed), fetches it and checks that it
/// is refused naming `entry`, and that nothing was installed or written outside.
fn assert_refused(entries: Vec<Entry>, entry: &str, reason: &str) {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish(&entries);
    let error = fixture.fetch(&file_client(&fixture)).unwrap_err();
    assert_eq!(
        error.code,
        ErrorCode::ImagebuilderError,
        "{}",
        error.message
    );
    assert!(
        error.message.contains(&format!("`{entry}`")),
        "{}",
        error.message
    );
    assert!(error.message.contains(reason), "{}", error.message);
    assert_eq!(
        fixture.cache_listing(),
        ["23.05.4", "23.05.4/x86", "23.05.4/x86/64"]
    );
}

fn top() -> String {
    top_of(&archive_name(Compression::Zstd)).to_string()
}

fn with_top(mut extra: Vec<Entry>) -> Vec<Entry> {
    let top = top();
    let mut entries = vec![
        dir(&format!("{top}/")),
        file(&format!("{top}/Makefile"), 0o644, b"x"),
    ];
    entries.append(&mut extra);
    entries
}

#[test]
fn refuses_absolute_paths() {
    assert_refused(
        with_top(vec![file("/tmp/imagegen-evil", 0o644, b"x")]),
        "/tmp/imagegen-evil",
        "absolute path",
    );
    assert!(!Path::new("/tmp/imagegen-evil").exists());
}

#[test]
fn refuses_parent_components() {
    let name = format!("{}/../evil", top());
    assert_refused(with_top(vec![file(&name, 0o644, b"x")]), &name, "`..`");
}

#[test]
fn refuses_entries_outside_the_top_directory() {
    assert_refused(
        with_top(vec![file("other/file", 0o644, b"x")]),
        "other/file",
        "outside the top directory",
    );
}

#[test]
fn refuses_a_second_top_level_directory() {
    assert_refused(
        with_top(vec![dir("second/")]),
        "second/",
        "outside the top directory",
    );
}

#[test]
fn refuses_absolute_symlinks() {
    let name = format!("{}/passwd", top());
    assert_refused(
        with_top(vec![symlink(&name, "/etc/passwd")]),
        &name,
        "escapes",
    );
}

#[test]
fn refuses_relative_symlinks_that_escape() {
    let name = format!("{}/scripts/up", top());
    assert_refused(
        with_top(vec![symlink(&name, "../../outside")]),
        &name,
        "escapes",
    );
}

#[test]
fn refuses_symlink_chains_that_escape() {
    let top = top();
    // `a/x` -> `..` is the top dir (fine alone); `c` -> `a/x/..` looks like `a` but is `top/..`.
    let chain = format!("{top}/c");
    assert_refused(
        with_top(vec![
            dir(&format!("{top}/a/")),
            symlink(&format!("{top}/a/x"), ".."),
            symlink(&chain, "a/x/.."),
        ]),
        &chain,
        "symlink chain escapes",
    );
}

#[test]
fn refuses_entries_through_a_symlink() {
    let top = top();
    let name = format!("{top}/link/file");
    assert_refused(
        with_top(vec![
            dir(&format!("{top}/real/")),
            symlink(&format!("{top}/link"), "real"),
            file(&name, 0o644, b"x"),
        ]),
        &name,
        "not a directory",
    );
}

#[test]
fn refuses_hardlinks_outside() {
    let name = format!("{}/hard", top());
    assert_refused(
        with_top(vec![hardlink(&name, "../../etc/passwd")]),
        &name,
        "hardlink",
    );
}

#[test]
fn refuses_absolute_hardlinks() {
    let name = format!("{}/hard", top());
    assert_refused(
        with_top(vec![hardlink(&name, "/etc/passwd")]),
        &name,
        "hardlink",
    );
}

#[test]
fn refuses_hardlinks_to_symlinks() {
    let top = top();
    let name = format!("{top}/hard");
    assert_refused(
        with_top(vec![
            symlink(&format!("{top}/soft"), "Makefile"),
            hardlink(&name, &format!("{top}/soft")),
        ]),
        &name,
        "not an extracted regular file",
    );
}

#[test]
fn refuses_character_devices() {
    let name = format!("{}/dev/null", top());
    assert_refused(
        with_top(vec![special(&name, tar::EntryType::Char)]),
        &name,
        "device node",
    );
}

#[test]
fn refuses_block_devices() {
    let name = format!("{}/sda", top());
    assert_refused(
        with_top(vec![special(&name, tar::EntryType::Block)]),
        &name,
        "device node",
    );
}

#[test]
fn refuses_fifos() {
    let name = format!("{}/fifo", top());
    assert_refused(
        with_top(vec![special(&name, tar::EntryType::Fifo)]),
        &name,
        "fifo",
    );
}

#[test]
fn refuses_setuid_files() {
    let name = format!("{}/su", top());
    assert_refused(
        with_top(vec![file(&name, 0o4755, b"x")]),
        &name,
        "setuid or setgid",
    );
}

#[test]
fn refuses_setgid_directories() {
    let name = format!("{}/shared/", top());
    assert_refused(
        with_top(
            vec![dir(&name)]
                .into_iter()
                .map(|mut e| {
                    e.mode = 0o2775;
                    e
                })
                .collect(),
        ),
        &name,
        "setuid or setgid",
    );
}

#[test]
fn refuses_archives_without_the_expected_top_directory() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish(&[]);
    let error = fixture.fetch(&file_client(&fixture)).unwrap_err();
    assert_eq!(error.code, ErrorCode::ImagebuilderError);
    assert!(error.message.contains("has no"), "{}", error.message);
}

// ---- archive caps: bombs stop at their cap while streaming, before the hash is known ----

use imagegen::imagebuilder::unpack::ArchiveLimits;

const MIB: u64 = 1024 * 1024;

fn capped(limits: ArchiveLimits) -> FetchOptions {
    FetchOptions {
        archive_limits: limits,
        ..options()
    }
}

/// Fetches what the fixture publishes under `limits` and returns the error, checking that
/// nothing was installed and no staging dir or part file is left behind.
fn refused_over_cap(fixture: &Fixture, limits: ArchiveLimits) -> imagegen::Error {
    let client = MirrorClient::new(&fixture.mirror.file_url(), capped(limits)).unwrap();
    let metadata = fixture.metadata(&client).unwrap();
    let error = fetch_builder(
        &client,
        &metadata,
        &fixture.cache,
        &fixture.tmp,
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::DownloadError, "{}", error.message);
    assert_eq!(
        fixture.cache_listing(),
        ["23.05.4", "23.05.4/x86", "23.05.4/x86/64"]
    );
    let part = fixture
        .tmp
        .join(format!("downloads/{}.part", metadata.archive_sha256));
    assert!(!part.exists());
    error
}

#[test]
fn zstd_bomb_stops_at_the_unpacked_bytes_cap() {
    let fixture = Fixture::new(Compression::Zstd);
    let top = top();
    // 256 MiB of zeros in four files compress to a few KiB.
    let zeros = vec![0u8; 64 * MIB as usize];
    let entries: Vec<Entry> = std::iter::once(dir(&format!("{top}/")))
        .chain((0..4).map(|index| file(&format!("{top}/zero{index}"), 0o644, &zeros)))
        .collect();
    let archive = fixture.publish(&entries);
    assert!(archive.len() < 100_000, "{}", archive.len());
    let limits = ArchiveLimits {
        max_unpacked_bytes: 100 * MIB,
        ..ArchiveLimits::default()
    };
    let error = refused_over_cap(&fixture, limits);
    assert_eq!(
        error.message,
        format!(
            "fetching {}: the archive is too large: more than {} bytes unpacked",
            fixture.archive_name,
            100 * MIB
        )
    );
    assert!(
        error
            .help
            .unwrap_or_default()
            .contains("Nothing was installed")
    );
}

#[test]
fn one_huge_file_stops_at_the_file_size_cap() {
    let fixture = Fixture::new(Compression::Zstd);
    let top = top();
    let zeros = vec![0u8; 32 * MIB as usize];
    fixture.publish(&[
        dir(&format!("{top}/")),
        file(&format!("{top}/huge"), 0o644, &zeros),
    ]);
    let limits = ArchiveLimits {
        max_file_bytes: 8 * MIB,
        ..ArchiveLimits::default()
    };
    let error = refused_over_cap(&fixture, limits);
    assert!(
        error
            .message
            .ends_with(&format!("`{top}/huge` has more than {} bytes", 8 * MIB)),
        "{}",
        error.message
    );
}

#[test]
fn entry_count_bomb_stops_at_the_entry_cap() {
    let fixture = Fixture::new(Compression::Zstd);
    let top = top();
    let entries: Vec<Entry> = std::iter::once(dir(&format!("{top}/")))
        .chain((0..5_000).map(|index| file(&format!("{top}/f{index}"), 0o644, b"")))
        .collect();
    fixture.publish(&entries);
    let limits = ArchiveLimits {
        max_entries: 1_000,
        ..ArchiveLimits::default()
    };
    let error = refused_over_cap(&fixture, limits);
    assert!(
        error.message.ends_with("more than 1000 entries"),
        "{}",
        error.message
    );
}

#[test]
fn download_over_the_size_cap_is_refused() {
    let fixture = Fixture::new(Compression::Xz);
    let archive = fixture.publish_good();
    let limits = ArchiveLimits {
        max_download_bytes: archive.len() as u64 / 2,
        ..ArchiveLimits::default()
    };
    let error = refused_over_cap(&fixture, limits);
    assert!(
        error.message.ends_with(&format!(
            "the download has more than {} bytes",
            archive.len() / 2
        )),
        "{}",
        error.message
    );
    // Over HTTP the announced length is refused before the body is read.
    let server = TestServer::start(fixture.mirror.root());
    let client = MirrorClient::new(&server.url(), capped(limits)).unwrap();
    let error = fixture.fetch(&client).unwrap_err();
    assert_eq!(error.code, ErrorCode::DownloadError, "{}", error.message);
}

#[test]
fn bomb_with_a_wrong_hash_writes_no_more_than_the_cap() {
    let fixture = Fixture::new(Compression::Zstd);
    fixture.publish_good();
    let top = top();
    let zeros = vec![0u8; 64 * MIB as usize];
    let bomb = compress(
        &tar_bytes(&[
            dir(&format!("{top}/")),
            file(&format!("{top}/z"), 0o644, &zeros),
        ]),
        Compression::Zstd,
    );
    // The listed hash is the good archive's: the bomb's hash is wrong, which only the end
    // of the stream can tell; the cap stops the unpacking long before.
    fs::write(fixture.target_path().join(&fixture.archive_name), &bomb).unwrap();
    let limits = ArchiveLimits {
        max_unpacked_bytes: 4 * MIB,
        ..ArchiveLimits::default()
    };
    let error = refused_over_cap(&fixture, limits);
    assert!(
        error
            .message
            .ends_with(&format!("more than {} bytes unpacked", 4 * MIB)),
        "{}",
        error.message
    );
}

#[test]
fn huge_gnu_long_name_is_refused_without_holding_it_in_memory() {
    let fixture = Fixture::new(Compression::Zstd);
    let top = top();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    builder
        .append_data(&mut header, format!("{top}/"), &[][..])
        .unwrap();
    let long_name = format!("{top}/{}", "a/".repeat(3 * MIB as usize));
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(1);
    builder
        .append_data(&mut header, long_name, &b"x"[..])
        .unwrap();
    let archive = compress(&builder.into_inner().unwrap(), Compression::Zstd);
    fixture.publish_bytes(&archive);
    let error = fixture.fetch(&file_client(&fixture)).unwrap_err();
    assert_eq!(
        error.code,
        ErrorCode::ImagebuilderError,
        "{}",
        error.message
    );
    assert!(
        error.message.contains("is larger than 4 MiB"),
        "{}",
        error.message
    );
}
