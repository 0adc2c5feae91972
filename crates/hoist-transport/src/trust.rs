//! Trust at the door: the containers-policy.json decision for a source's top manifest,
//! taken by the copy engine right after it reads that manifest and before anything is
//! copied, so a refused image leaves the store and the destination as they were.
//!
//! The signatures come from the source itself: simple-signing signatures its transport
//! keeps (`dir:` `signature-N` files, [`ImageSource::get_signatures`](crate::transports::ImageSource::get_signatures)) and the cosign
//! `sha256-<hex>.sig` tag of its repository (each layer of that manifest is a payload, its
//! `dev.cosignproject.cosign/signature` annotation the signature), and OCI 1.1 referrers of
//! the manifest whose `artifactType` is cosign's signature type (same layers), where the
//! source offers a referrers API. Signatures are only
//! looked for when a requirement of the applicable scope needs them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hoist_trust::payload::MAX_PAYLOAD_SIZE;
use hoist_trust::registries_d::RegistriesD;
use hoist_trust::sigstore::{PAYLOAD_MEDIA_TYPE, SIGNATURE_ANNOTATION};
use hoist_trust::{Evaluation, ImageSignature, Named, Policy, PolicyTarget, Requirement};
use hoist_types::{Descriptor, Digest, ImageManifest, Manifest};

use crate::TransportError;
use crate::transports::any::{AnyDestination, AnySource};
use crate::transports::{
    ImageDestination as _, ImageRef, ImageSource as _, ManifestRef, RawManifest,
};

/// The `artifactType` of a cosign signature stored as an OCI 1.1 referrer.
pub const COSIGN_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// Most layers of a `.sig` manifest looked at.
const MAX_COSIGN_SIGNATURES: usize = 64;

/// A policy, and the image (by its source reference) it is asked about.
#[derive(Debug, Clone)]
pub struct TrustCheck {
    /// The policy.
    pub policy: Arc<Policy>,
    /// The image's transport and scopes.
    pub target: PolicyTarget,
    /// `transport:reference`, for messages.
    pub image: String,
    /// registries.d, for the lookaside stores of `docker://` sources.
    pub registries_d: Option<Arc<RegistriesD>>,
    /// The top manifest already accepted by this check (a caller that checks before it
    /// opens the destination, then the engine): the same digest is not evaluated twice.
    accepted: Arc<Mutex<Option<Digest>>>,
}

impl TrustCheck {
    /// The check of `policy` for the image `source` names.
    pub fn new(policy: Arc<Policy>, source: &ImageRef) -> TrustCheck {
        TrustCheck {
            policy,
            target: policy_target(source),
            image: source.to_string(),
            registries_d: None,
            accepted: Arc::default(),
        }
    }

    /// The same check, reading simple signatures of `docker://` images from the lookaside
    /// stores `registries_d` configures.
    pub fn with_registries_d(mut self, registries_d: Option<Arc<RegistriesD>>) -> TrustCheck {
        self.registries_d = registries_d;
        self
    }

    /// Evaluates the policy for `top`, read from `src`; a refusal is
    /// [`TransportError::Trust`] naming the scope, the requirement and what was wrong.
    /// `Ok(None)`: this check had already accepted the same manifest.
    pub async fn enforce(
        &self,
        src: &AnySource,
        top: &RawManifest,
    ) -> Result<Option<Evaluation>, TransportError> {
        self.enforce_manifest(src, &top.digest, &top.bytes).await
    }

    /// [`TrustCheck::enforce`] for a top manifest known by its digest and exact bytes.
    pub async fn enforce_manifest(
        &self,
        src: &AnySource,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<Option<Evaluation>, TransportError> {
        let lock = || self.accepted.lock().unwrap_or_else(|p| p.into_inner());
        // The bytes hash to `digest` (the source verified them), so an earlier acceptance
        // of the same digest by this check holds for them.
        if lock().as_ref() == Some(digest) && digest.verifies(bytes) {
            return Ok(None);
        }
        let (eval, _) = self.evaluate_with_signatures(src, digest, bytes).await?;
        eval.check(&self.image)?;
        *lock() = Some(digest.clone());
        Ok(Some(eval))
    }

    /// Evaluates the policy for `top`, read from `src`, without refusing: what `hoist verify`
    /// prints. Also returns the signatures found.
    pub async fn evaluate(
        &self,
        src: &AnySource,
        top: &RawManifest,
    ) -> Result<Evaluation, TransportError> {
        Ok(self
            .evaluate_with_signatures(src, &top.digest, &top.bytes)
            .await?
            .0)
    }

    /// [`TrustCheck::evaluate`], with the signatures it looked at and notes on where it
    /// could not look.
    pub async fn evaluate_with_signatures(
        &self,
        src: &AnySource,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(Evaluation, Found), TransportError> {
        let (_, reqs) = self.policy.requirements_for(&self.target);
        let simple = reqs
            .iter()
            .any(|r| matches!(r, Requirement::SignedBy { .. }));
        let cosign = reqs
            .iter()
            .any(|r| matches!(r, Requirement::SigstoreSigned { .. }));
        let lookaside = match (src, &self.registries_d, &self.target.docker_reference) {
            (AnySource::Docker(_), Some(r), Some(n)) => Some((r.as_ref(), n)),
            _ => None,
        };
        let found = find_signatures_in(src, digest, simple, cosign, lookaside).await?;
        let mut eval = hoist_trust::evaluate(&self.policy, &self.target, bytes, &found.signatures);
        if !eval.allowed() {
            for r in eval.requirements.iter_mut().filter(|r| !r.satisfied) {
                r.problems.extend(found.notes.iter().cloned());
            }
        }
        Ok((eval, found))
    }
}

/// The policy decision for loading the archive `file` of transport `transport`
/// (`docker-archive`, `oci-archive`). Archives carry no signatures hoist reads, so only
/// `insecureAcceptAnything` can let one in; a signature requirement is refused as "no
/// signature was found".
pub fn check_archive_load(
    policy: &Policy,
    transport: &str,
    file: &Path,
) -> Result<(), TransportError> {
    let target = PolicyTarget::path(transport, &absolute(file), None);
    let image = format!("{transport}:{}", file.display());
    hoist_trust::evaluate(policy, &target, b"", &[]).check(&image)?;
    Ok(())
}

/// The policy's view of an image reference: transport name, scopes, Docker reference.
pub fn policy_target(r: &ImageRef) -> PolicyTarget {
    match r {
        ImageRef::Docker(reference) => {
            PolicyTarget::docker("docker", &Named::from_reference(reference))
        }
        ImageRef::Hoist { name } => match Named::parse(name) {
            // A name in the store is matched like a Docker reference; an ID or digest has
            // no scope but the transport's default.
            Ok(n) if name.contains(['/', ':']) || !is_hex_prefix(name) => {
                PolicyTarget::docker("hoist", &n)
            }
            _ => PolicyTarget::path("hoist", Path::new(""), None),
        },
        ImageRef::Oci { dir, name } => PolicyTarget::path("oci", &absolute(dir), name.as_deref()),
        ImageRef::OciArchive { file, name } => {
            PolicyTarget::path("oci-archive", &absolute(file), name.as_deref())
        }
        ImageRef::DockerArchive { file, .. } => {
            PolicyTarget::path("docker-archive", &absolute(file), None)
        }
        ImageRef::Dir { dir } => PolicyTarget::path("dir", &absolute(dir), None),
    }
}

fn is_hex_prefix(s: &str) -> bool {
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The canonical absolute path (symlinks resolved) where it exists, else made absolute.
fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    })
}

/// Signatures found for an image, and where looking failed.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// The signatures, simple-signing first, then cosign.
    pub signatures: Vec<ImageSignature>,
    /// Where signatures could not be read (a broken `.sig` manifest or layer), for messages.
    pub notes: Vec<String>,
}

/// Looks for the signatures of the top manifest `digest` in `src`: simple-signing ones when
/// `simple`, the cosign `.sig` tag when `cosign`.
pub async fn find_signatures(
    src: &AnySource,
    digest: &Digest,
    simple: bool,
    cosign: bool,
) -> Result<Found, TransportError> {
    find_signatures_in(src, digest, simple, cosign, None).await
}

/// [`find_signatures`], also reading simple signatures of the image `lookaside.1` from the
/// lookaside store registries.d (`lookaside.0`) configures for it.
pub async fn find_signatures_in(
    src: &AnySource,
    digest: &Digest,
    simple: bool,
    cosign: bool,
    lookaside: Option<(&RegistriesD, &Named)>,
) -> Result<Found, TransportError> {
    let mut found = Found::default();
    if simple {
        for s in src.get_signatures(None).await? {
            found.signatures.push(ImageSignature::SimpleSigning(s));
        }
        if let Some((config, image)) = lookaside
            && let Some(base) = config.entry_for(image).lookaside
            && (base.starts_with("http://") || base.starts_with("https://"))
        {
            let (sigs, notes) = read_http_lookaside(src, &base, image, digest).await;
            found
                .signatures
                .extend(sigs.into_iter().map(ImageSignature::SimpleSigning));
            found.notes.extend(notes);
        } else if let Some((config, image)) = lookaside
            && let Some(base) = config.entry_for(image).lookaside
        {
            let (image, digest) = (image.clone(), digest.clone());
            let (sigs, notes) =
                crate::blocking(move || read_lookaside(&base, &image, &digest)).await?;
            found
                .signatures
                .extend(sigs.into_iter().map(ImageSignature::SimpleSigning));
            found.notes.extend(notes);
        }
    }
    if cosign {
        let tag = format!("{}-{}.sig", digest.algorithm(), digest.hex());
        // No such tag (or a transport without tags) means no cosign signature.
        if let Ok(m) = src.get_manifest(&ManifestRef::Tag(tag.clone())).await {
            match &m.manifest {
                Manifest::Image(ImageManifest { layers, .. }) => {
                    for (i, layer) in layers.iter().take(MAX_COSIGN_SIGNATURES).enumerate() {
                        match cosign_signature(src, layer).await {
                            Ok(Some(s)) => found.signatures.push(s),
                            Ok(None) => {}
                            Err(why) => found.notes.push(format!("{tag} layer {}: {why}", i + 1)),
                        }
                    }
                }
                _ => found.notes.push(format!("{tag} is not an image manifest")),
            }
        }
        // OCI 1.1 referrers of the manifest (cosign's artifact mode), where the source
        // offers them; an unsupported referrers API means none. Asked only when the `.sig`
        // tag gave nothing (one request less on every pull of a tag-signed image; an
        // image signed both ways is judged by its tag signatures).
        let from_tag = found
            .signatures
            .iter()
            .any(|s| matches!(s, ImageSignature::Cosign { .. }));
        if !from_tag {
            match src.referrers(digest).await {
                Ok(refs) => {
                    let sigs = refs
                        .iter()
                        .filter(|d| d.artifact_type.as_deref() == Some(COSIGN_ARTIFACT_TYPE));
                    for r in sigs.take(MAX_COSIGN_SIGNATURES) {
                        let m = match src
                            .get_manifest(&ManifestRef::Digest(r.digest.clone()))
                            .await
                        {
                            Ok(m) => m,
                            Err(e) => {
                                found.notes.push(format!(
                                    "referrer {}: {}",
                                    r.digest,
                                    hoist_types::error_chain(&e)
                                ));
                                continue;
                            }
                        };
                        let Manifest::Image(ImageManifest { layers, .. }) = &m.manifest else {
                            found
                                .notes
                                .push(format!("referrer {} is not an image manifest", r.digest));
                            continue;
                        };
                        for (i, layer) in layers.iter().take(MAX_COSIGN_SIGNATURES).enumerate() {
                            match cosign_signature(src, layer).await {
                                Ok(Some(s)) => found.signatures.push(s),
                                Ok(None) => {}
                                Err(why) => found.notes.push(format!(
                                    "referrer {} layer {}: {why}",
                                    r.digest,
                                    i + 1
                                )),
                            }
                        }
                    }
                }
                Err(e) => found.notes.push(format!(
                    "referrers of {digest}: {}",
                    hoist_types::error_chain(&e)
                )),
            }
        }
    }
    Ok(found)
}

/// Most signatures read from a lookaside store per manifest.
const MAX_LOOKASIDE_SIGNATURES: usize = 64;

/// [`read_lookaside`] for an `http(s)://` store, with the registry client of the `docker://`
/// source (its TLS settings; never its credentials).
async fn read_http_lookaside(
    src: &AnySource,
    base: &str,
    image: &Named,
    digest: &Digest,
) -> (Vec<Vec<u8>>, Vec<String>) {
    let (mut sigs, mut notes) = (Vec::new(), Vec::new());
    let AnySource::Docker(d) = src else {
        return (sigs, notes);
    };
    let client = match d.registry_client().await {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!(
                "lookaside store {base}: {}",
                hoist_types::error_chain(&e)
            ));
            return (sigs, notes);
        }
    };
    for n in 1..=MAX_LOOKASIDE_SIGNATURES {
        let u = hoist_trust::registries_d::signature_url(base, image, digest, n);
        match client
            .get_lookaside(&u, hoist_trust::gpg::MAX_SIGNATURE_SIZE as u64)
            .await
        {
            Ok(Some(b)) => sigs.push(b),
            Ok(None) => break,
            Err(e) => {
                notes.push(format!(
                    "lookaside signature {u}: {}",
                    hoist_types::error_chain(&e)
                ));
                break;
            }
        }
    }
    (sigs, notes)
}

/// Signatures `signature-1`, `signature-2`, … of `digest` under the `file://` lookaside
/// `base`, up to the first missing one.
fn read_lookaside(base: &str, image: &Named, digest: &Digest) -> (Vec<Vec<u8>>, Vec<String>) {
    let (mut sigs, mut notes) = (Vec::new(), Vec::new());
    if !base.starts_with("file://") {
        notes.push(format!("lookaside store {base}: not a file:// URL"));
        return (sigs, notes);
    }
    for n in 1..=MAX_LOOKASIDE_SIGNATURES {
        let u = hoist_trust::registries_d::signature_url(base, image, digest, n);
        let path = match url::Url::parse(&u).ok().and_then(|u| u.to_file_path().ok()) {
            Some(p) => p,
            None => {
                notes.push(format!("lookaside URL {u} is not a local file path"));
                break;
            }
        };
        match std::fs::File::open(&path) {
            Ok(f) => {
                let mut buf = Vec::new();
                let limit = hoist_trust::gpg::MAX_SIGNATURE_SIZE as u64;
                if let Err(e) =
                    std::io::Read::read_to_end(&mut std::io::Read::take(f, limit + 1), &mut buf)
                {
                    notes.push(format!("reading {}: {e}", path.display()));
                    break;
                }
                if buf.len() as u64 > limit {
                    notes.push(format!("{} is larger than {limit} bytes", path.display()));
                    break;
                }
                sigs.push(buf);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => {
                notes.push(format!("reading {}: {e}", path.display()));
                break;
            }
        }
    }
    (sigs, notes)
}

/// One `.sig` layer: its payload (≤ [`MAX_PAYLOAD_SIZE`], digest-checked) and annotation.
async fn cosign_signature(
    src: &AnySource,
    layer: &Descriptor,
) -> Result<Option<ImageSignature>, String> {
    if layer.media_type.as_str() != PAYLOAD_MEDIA_TYPE {
        return Ok(None);
    }
    let Some(signature) = layer
        .annotations
        .as_ref()
        .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        .cloned()
    else {
        return Err(format!("no {SIGNATURE_ANNOTATION} annotation"));
    };
    if layer.size > MAX_PAYLOAD_SIZE as u64 {
        return Err(format!(
            "payload of {} bytes is larger than {MAX_PAYLOAD_SIZE}",
            layer.size
        ));
    }
    let mut stream = src
        .get_blob(layer)
        .await
        .map_err(|e| hoist_types::error_chain(&e))?;
    let payload = crate::blocking(move || {
        let mut out = Vec::new();
        while let Some(c) = stream.blocking_next() {
            let c = c.map_err(|e| hoist_types::error_chain(&e))?;
            out.extend_from_slice(&c);
            if out.len() > MAX_PAYLOAD_SIZE {
                return Err(format!("payload is larger than {MAX_PAYLOAD_SIZE} bytes"));
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| e.to_string())??;
    if !layer.digest.verifies(&payload) {
        return Err(format!(
            "payload does not match its digest {}",
            layer.digest
        ));
    }
    Ok(Some(ImageSignature::Cosign { payload, signature }))
}

/// How to sign what a copy writes: simple signing with a GnuPG key, and/or a cosign
/// signature with an ECDSA P-256 key, both for the top manifest written and `identity`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SignOptions {
    /// `--sign-by`: the GnuPG key fingerprint.
    pub gpg_key: Option<String>,
    /// `--sign-passphrase-file`, for the GnuPG key.
    pub gpg_passphrase_file: Option<PathBuf>,
    /// `--sign-by-sigstore-private-key`, decrypted.
    pub sigstore_key: Option<Arc<hoist_trust::sigstore::PrivateKey>>,
    /// The Docker reference signed (`--sign-identity`, else the destination's).
    pub identity: Named,
    /// For a `docker://` destination: its reference and registries.d, whose
    /// `lookaside-staging` (else `lookaside`) store receives simple signatures.
    pub lookaside: Option<(Named, Arc<RegistriesD>)>,
}

impl SignOptions {
    /// Signs for `identity`, with no key yet: set [`gpg_key`](Self::gpg_key) and/or
    /// [`sigstore_key`](Self::sigstore_key) (with neither, nothing is signed).
    pub fn new(identity: Named) -> SignOptions {
        SignOptions {
            gpg_key: None,
            gpg_passphrase_file: None,
            sigstore_key: None,
            identity,
            lookaside: None,
        }
    }
}

/// Signs `written`, the top manifest a copy wrote to `dst`: a simple-signing signature
/// into the destination's signature store (kept after those `carried` from the source),
/// and a cosign `sha256-HEX.sig` tag next to it. Returns how many signatures were made.
pub async fn sign(
    opts: &SignOptions,
    dst: &AnyDestination,
    written: &RawManifest,
    carried: Vec<Vec<u8>>,
    progress: &dyn hoist_types::Progress,
) -> Result<usize, TransportError> {
    use hoist_trust::payload::{PayloadKind, build};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .ok();
    let mut made = 0;
    if let Some(fpr) = &opts.gpg_key {
        let payload = build(
            PayloadKind::SimpleSigning,
            &written.digest,
            &opts.identity,
            now,
        );
        let (fpr, pass) = (fpr.clone(), opts.gpg_passphrase_file.clone());
        let signed = written.digest.clone();
        let sig = crate::blocking(move || {
            hoist_trust::gpg::sign_with_gpg(&payload, &fpr, pass.as_deref()).map_err(|reason| {
                TransportError::Signing {
                    digest: signed,
                    reason,
                }
            })
        })
        .await??;
        match (dst, &opts.lookaside) {
            (AnyDestination::Docker(_), Some((image, config))) => {
                let (image, config) = (image.clone(), config.clone());
                let digest = written.digest.clone();
                crate::blocking(move || write_lookaside(&config, &image, &digest, &sig)).await??;
            }
            _ => {
                let mut all = carried;
                all.push(sig);
                dst.put_signatures(&written.digest, &all).await?;
            }
        }
        made += 1;
    }
    if let Some(key) = &opts.sigstore_key {
        let payload = build(PayloadKind::Cosign, &written.digest, &opts.identity, now);
        let signature = key.sign(&payload);
        put_sigstore_tag(dst, &written.digest, payload, &signature, progress).await?;
        made += 1;
    }
    Ok(made)
}

/// Writes `sig` as the next free `signature-N` of `digest` for `image` in the
/// `lookaside-staging` (else `lookaside`) store registries.d names (a `file://` one),
/// atomically (temp file, fsync, rename).
fn write_lookaside(
    config: &RegistriesD,
    image: &Named,
    digest: &Digest,
    sig: &[u8],
) -> Result<(), TransportError> {
    let entry = config.entry_for(image);
    let refuse = |reason: String| TransportError::Signing {
        digest: digest.clone(),
        reason,
    };
    let base = entry.lookaside_staging.or(entry.lookaside).ok_or_else(|| {
        refuse(format!(
            "a registry keeps simple signatures only in a lookaside store: registries.d \
             configures none for {image} (lookaside-staging)"
        ))
    })?;
    if !base.starts_with("file://") {
        return Err(refuse(format!(
            "lookaside store {base}: only file:// stores are written by this version"
        )));
    }
    for n in 1..=MAX_LOOKASIDE_SIGNATURES {
        let u = hoist_trust::registries_d::signature_url(&base, image, digest, n);
        let path = url::Url::parse(&u)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .ok_or_else(|| refuse(format!("lookaside URL {u} is not a local file path")))?;
        if path.exists() {
            continue;
        }
        let dir = path.parent().expect("a signature file has a directory");
        let io = |op: &'static str, e: std::io::Error| TransportError::Io {
            op,
            path: Some(path.clone()),
            source: e,
        };
        std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
        let mut tmp = tempfile_in(dir).map_err(|e| io("write", e))?;
        std::io::Write::write_all(&mut tmp.1, sig).map_err(|e| io("write", e))?;
        tmp.1.sync_all().map_err(|e| io("fsync", e))?;
        std::fs::rename(&tmp.0, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp.0);
            io("publish", e)
        })?;
        return Ok(());
    }
    Err(refuse(format!(
        "{image}@{digest} already has {MAX_LOOKASIDE_SIGNATURES} signatures in {base}"
    )))
}

/// A new file with a unique name in `dir`.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    for i in 0..100u32 {
        let p = dir.join(format!(".hoist-signature-{}-{i}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary name"))
}

/// Writes the cosign `.sig` image of `digest` to `dst`: an OCI manifest whose one layer is
/// the payload, with its signature annotation, under the tag `sha256-HEX.sig`.
async fn put_sigstore_tag(
    dst: &AnyDestination,
    digest: &Digest,
    payload: Vec<u8>,
    signature: &str,
    progress: &dyn hoist_types::Progress,
) -> Result<(), TransportError> {
    use hoist_types::MediaType;
    let payload_digest = Digest::sha256_of(&payload);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [payload_digest.to_string()]},
    }))
    .expect("a JSON value serialises");
    let config_digest = Digest::sha256_of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": config.len(),
            "digest": config_digest.to_string(),
        },
        "layers": [{
            "mediaType": PAYLOAD_MEDIA_TYPE,
            "size": payload.len(),
            "digest": payload_digest.to_string(),
            "annotations": {SIGNATURE_ANNOTATION: signature},
        }],
    }))
    .expect("a JSON value serialises");
    for (bytes, media_type) in [
        (config, "application/vnd.oci.image.config.v1+json"),
        (payload, PAYLOAD_MEDIA_TYPE),
    ] {
        let desc: Descriptor = serde_json::from_value(serde_json::json!({
            "mediaType": media_type,
            "size": bytes.len(),
            "digest": Digest::sha256_of(&bytes).to_string(),
        }))
        .map_err(|e| TransportError::Signing {
            digest: digest.clone(),
            reason: format!("building the .sig descriptor: {e}"),
        })?;
        let size = bytes.len() as u64;
        let stream = crate::transports::BlobStream::from_reader(
            Box::new(std::io::Cursor::new(bytes)),
            size,
            "cosign signature",
        );
        dst.put_blob(&desc, stream, progress).await?;
    }
    let oci = MediaType::parse("application/vnd.oci.image.manifest.v1+json");
    let raw = crate::transports::raw_manifest(manifest, Some(&oci), None)?;
    let tag = format!("{}-{}.sig", digest.algorithm(), digest.hex());
    dst.put_manifest(&raw, &crate::transports::ManifestTarget::Tag(tag))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_targets_of_each_transport() {
        let t = |s: &str| policy_target(&ImageRef::parse(s).unwrap());
        let d = t("docker://example.com/ns/app:1");
        assert_eq!(d.transport, "docker");
        assert_eq!(d.scopes[0], "example.com/ns/app:1");
        assert_eq!(
            d.docker_reference.unwrap().to_string(),
            "example.com/ns/app:1"
        );
        let h = t("hoist:example.com/ns/app:1");
        assert_eq!(h.transport, "hoist");
        assert_eq!(h.scopes[1], "example.com/ns/app");
        // An image ID names no repository: only the transport default can apply.
        let id = t("hoist:0123abcd");
        assert!(id.scopes.is_empty() && id.docker_reference.is_none());
        let o = t("oci:/nonexistent-hoist-dir/layout:v1");
        assert_eq!(o.transport, "oci");
        assert_eq!(
            o.scopes,
            vec![
                "/nonexistent-hoist-dir/layout:v1",
                "/nonexistent-hoist-dir/layout",
                "/nonexistent-hoist-dir"
            ]
        );
        // A relative path is made absolute against the working directory.
        let r = t("dir:rel/dir");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(r.scopes[0], cwd.join("rel/dir").to_string_lossy());
        let a = t("docker-archive:/nonexistent-hoist-dir/a.tar:x/y:1");
        assert_eq!(a.transport, "docker-archive");
        assert_eq!(a.scopes[0], "/nonexistent-hoist-dir/a.tar");
    }

    #[test]
    fn archive_load_decisions() {
        let p = Policy::parse(
            br#"{"default": [{"type": "reject"}], "transports": {"docker-archive": {"/srv/ok": [{"type": "insecureAcceptAnything"}]}}}"#,
        )
        .unwrap();
        check_archive_load(&p, "docker-archive", Path::new("/srv/ok/a.tar")).unwrap();
        let e = check_archive_load(&p, "oci-archive", Path::new("/srv/ok/a.tar"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("scope default") && e.contains("reject"), "{e}");
    }
}
