//! `hoist verify REF`: the signatures an image has and which requirements of the trust policy
//! they satisfy; and the trust options (`--policy`, `--insecure-policy`) of every command
//! that brings images in.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use hoist_transport::transports::any::{AnySource, OpenOptions};
use hoist_transport::transports::{ImageRef, ImageSource as _, ManifestRef, Transport};
use hoist_transport::trust::{SignOptions, TrustCheck, find_signatures_in};
use hoist_trust::Named;
use hoist_trust::policy::default_policy_paths;
use hoist_trust::registries_d::RegistriesD;
use hoist_trust::sigstore::PrivateKey;
use hoist_trust::{ImageSignature, Policy};
use serde::Serialize;

use crate::opts::{Format, GlobalArgs, RegistryArgs};

/// Which trust policy applies: `--policy FILE` (or `$HOIST_POLICY`), else the first of
/// `$XDG_CONFIG_HOME/containers/policy.json` (`~/.config/containers/policy.json`) and
/// `/etc/containers/policy.json` that exists; with none, every image is accepted.
#[derive(Debug, Clone, clap::Args)]
pub struct TrustArgs {
    /// The trust policy (containers-policy.json) [default: ~/.config/containers/policy.json,
    /// then /etc/containers/policy.json; with neither, every image is accepted].
    #[arg(long, env = "HOIST_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Apply no trust policy: accept every image (skopeo's --insecure-policy).
    #[arg(long)]
    pub insecure_policy: bool,
    /// registries.d: where simple signatures of registry images are looked up (lookaside)
    /// [default: ~/.config/containers/registries.d if it exists, else
    /// /etc/containers/registries.d].
    #[arg(long = "registries.d", env = "HOIST_REGISTRIES_D", value_name = "DIR")]
    pub registries_d: Option<PathBuf>,
}

impl TrustArgs {
    /// The policy to apply and the file it came from, or `None` (accept anything).
    pub fn load(&self) -> anyhow::Result<Option<(Arc<Policy>, PathBuf)>> {
        if self.insecure_policy {
            return Ok(None);
        }
        if let Some(p) = &self.policy {
            return Ok(Some((Arc::new(Policy::from_file(p)?), p.clone())));
        }
        for p in default_policy_paths(config_home().as_deref()) {
            if p.exists() {
                return Ok(Some((Arc::new(Policy::from_file(&p)?), p)));
            }
        }
        Ok(None)
    }

    /// The check the copy engine runs for the image `source` names (`None`: no policy).
    pub fn check_for(&self, source: &ImageRef) -> anyhow::Result<Option<TrustCheck>> {
        match self.load()? {
            Some((p, _)) => Ok(Some(
                TrustCheck::new(p, source).with_registries_d(Some(self.registries_d()?)),
            )),
            None => Ok(None),
        }
    }

    /// The registries.d configuration: `--registries.d` (or `$HOIST_REGISTRIES_D`), else
    /// the user's directory if it exists, else the system's (missing: empty).
    pub fn registries_d(&self) -> anyhow::Result<Arc<RegistriesD>> {
        let dir = match &self.registries_d {
            Some(d) => d.clone(),
            None => config_home()
                .map(|h| h.join("containers/registries.d"))
                .filter(|d| d.is_dir())
                .unwrap_or_else(|| PathBuf::from("/etc/containers/registries.d")),
        };
        Ok(Arc::new(
            RegistriesD::load_dir(&dir).map_err(|e| anyhow::anyhow!("registries.d: {e}"))?,
        ))
    }

    /// What a pull needs: the policy and, with one, registries.d.
    pub fn for_pull(&self) -> anyhow::Result<PullTrust> {
        match self.load()? {
            Some((p, _)) => Ok((Some(p), Some(self.registries_d()?))),
            None => Ok((None, None)),
        }
    }
}

/// Signing what a copy writes (skopeo's options).
#[derive(Debug, Clone, clap::Args)]
pub struct SignArgs {
    /// Sign with this GnuPG key (simple signing; gpg signs, from `$GNUPGHOME`), into the
    /// destination's signature store (`dir:` `signature-N`).
    #[arg(long, value_name = "FINGERPRINT")]
    pub sign_by: Option<String>,
    /// Sign with this cosign private key (encrypted PEM), as a `sha256-HEX.sig` tag.
    #[arg(long, value_name = "FILE")]
    pub sign_by_sigstore_private_key: Option<PathBuf>,
    /// The passphrase of the signing key (first line of FILE).
    #[arg(long, value_name = "FILE")]
    pub sign_passphrase_file: Option<PathBuf>,
    /// The Docker reference signed [default: the destination's, for docker://].
    #[arg(long, value_name = "REF")]
    pub sign_identity: Option<String>,
}

impl SignArgs {
    /// What the copy engine signs with, for the destination `dst` (`None`: no signing).
    pub fn options(
        &self,
        dst: &ImageRef,
        registries_d: impl FnOnce() -> anyhow::Result<Arc<RegistriesD>>,
    ) -> anyhow::Result<Option<SignOptions>> {
        if self.sign_by.is_none() && self.sign_by_sigstore_private_key.is_none() {
            anyhow::ensure!(
                self.sign_identity.is_none() && self.sign_passphrase_file.is_none(),
                "--sign-identity and --sign-passphrase-file need --sign-by or \
                 --sign-by-sigstore-private-key"
            );
            return Ok(None);
        }
        let identity = match (&self.sign_identity, dst) {
            (Some(s), _) => {
                let n = Named::parse(s)?;
                anyhow::ensure!(
                    !n.is_name_only(),
                    "--sign-identity {s} names neither a tag nor a digest"
                );
                n
            }
            (None, ImageRef::Docker(r)) => Named::from_reference(r),
            (None, other) => anyhow::bail!(
                "signing a {} destination needs --sign-identity (the Docker reference signed)",
                other.transport()
            ),
        };
        let passphrase = match &self.sign_passphrase_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            ),
            None => None,
        };
        let sigstore_key = match &self.sign_by_sigstore_private_key {
            Some(p) => {
                let pem = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                let key = PrivateKey::from_encrypted_pem(
                    &pem,
                    passphrase.as_deref().unwrap_or("").as_bytes(),
                )
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                Some(Arc::new(key))
            }
            None => None,
        };
        let lookaside = match dst {
            ImageRef::Docker(r) if self.sign_by.is_some() => {
                let (image, config) = (Named::from_reference(r), registries_d()?);
                // Checked before anything is copied: where the signature will go.
                let e = config.entry_for(&image);
                match e.lookaside_staging.or(e.lookaside) {
                    Some(u) if u.starts_with("file://") => {}
                    Some(u) => anyhow::bail!(
                        "--sign-by to {r}: lookaside store {u}: only file:// stores are \
                         written by this version"
                    ),
                    None => anyhow::bail!(
                        "--sign-by to {r}: a registry keeps simple signatures only in a \
                         lookaside store, and registries.d configures none for it \
                         (lookaside-staging)"
                    ),
                }
                Some((image, config))
            }
            _ => None,
        };
        let mut sign = SignOptions::new(identity);
        sign.gpg_key = self.sign_by.clone();
        sign.gpg_passphrase_file = self.sign_passphrase_file.clone();
        sign.sigstore_key = sigstore_key;
        sign.lookaside = lookaside;
        Ok(Some(sign))
    }
}

/// A pull's trust settings: the policy and, with one, registries.d.
pub type PullTrust = (Option<Arc<Policy>>, Option<Arc<RegistriesD>>);

/// `$XDG_CONFIG_HOME`, else `$HOME/.config` (as containers' tools resolve it).
fn config_home() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config")))
}

/// Arguments of `hoist verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: `docker://HOST/REPO:TAG`, `dir:DIR`, `oci:DIR[:REF]`, `hoist:REF`, archives.
    pub image: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Serialize)]
struct SignatureInfo {
    index: usize,
    kind: &'static str,
    bytes: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    image: String,
    digest: String,
    policy: Option<PathBuf>,
    allowed: bool,
    scope: Option<String>,
    signatures: Vec<SignatureInfo>,
    notes: Vec<String>,
    requirements: Vec<hoist_trust::evaluate::RequirementOutcome>,
}

/// Run it: exit status 0 when the policy accepts the image, else an error naming why.
pub async fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    let image = ImageRef::parse(&a.image)?;
    let policy = a.trust.load()?;
    let store = if image.transport() == Transport::Hoist {
        Some(g.open_store()?)
    } else {
        None
    };
    let mut open = OpenOptions::default();
    open.store = store;
    open.pull.registry = a.registry.client_options()?;
    let src = AnySource::open(&image, &open)
        .await
        .with_context(|| format!("opening {image}"))?;
    let top = src
        .get_manifest(&ManifestRef::Top)
        .await
        .with_context(|| format!("reading the manifest of {image}"))?;
    let registries_d = a.trust.registries_d()?;
    let lookaside = match (&image, &src) {
        (ImageRef::Docker(r), AnySource::Docker(_)) => Some(Named::from_reference(r)),
        _ => None,
    };
    let found = find_signatures_in(
        &src,
        &top.digest,
        true,
        true,
        lookaside.as_ref().map(|n| (registries_d.as_ref(), n)),
    )
    .await?;
    let (eval, path) = match &policy {
        Some((p, path)) => {
            let check = TrustCheck::new(p.clone(), &image);
            let mut eval = hoist_trust::evaluate(p, &check.target, &top.bytes, &found.signatures);
            if !eval.allowed() {
                for r in eval.requirements.iter_mut().filter(|r| !r.satisfied) {
                    r.problems.extend(found.notes.iter().cloned());
                }
            }
            (Some(eval), Some(path.clone()))
        }
        None => (None, None),
    };
    let report = Report {
        image: image.to_string(),
        digest: top.digest.to_string(),
        policy: path,
        allowed: eval.as_ref().is_none_or(|e| e.allowed()),
        scope: eval.as_ref().map(|e| e.scope.clone()),
        signatures: found
            .signatures
            .iter()
            .enumerate()
            .map(|(i, s)| SignatureInfo {
                index: i + 1,
                kind: s.kind(),
                bytes: match s {
                    ImageSignature::SimpleSigning(b) => b.len(),
                    ImageSignature::Cosign { payload, .. } => payload.len(),
                },
            })
            .collect(),
        notes: found.notes.clone(),
        requirements: eval
            .as_ref()
            .map(|e| e.requirements.clone())
            .unwrap_or_default(),
    };
    match a.format {
        Format::Json => crate::cmd::print_json(&report)?,
        Format::Table => print_text(&report),
    }
    if let Some(e) = &eval {
        e.check(&report.image)?;
    }
    Ok(())
}

fn print_text(r: &Report) {
    println!("image:      {}", r.image);
    println!("digest:     {}", r.digest);
    if r.signatures.is_empty() {
        println!("signatures: none found");
    } else {
        println!("signatures:");
        for s in &r.signatures {
            println!("  {}. {} ({} bytes)", s.index, s.kind, s.bytes);
        }
    }
    for n in &r.notes {
        println!("  note: {n}");
    }
    match (&r.policy, &r.scope) {
        (Some(p), Some(scope)) => {
            println!("policy:     {} (scope {scope})", p.display());
            for q in &r.requirements {
                let mark = if q.satisfied {
                    "satisfied"
                } else {
                    "NOT satisfied"
                };
                println!("  {}: {mark}", q.requirement);
                for m in &q.satisfied_by {
                    println!(
                        "    by signature {} ({}, identity {})",
                        m.index + 1,
                        m.signer,
                        m.docker_reference
                    );
                }
                if !q.satisfied {
                    for p in &q.problems {
                        println!("    {p}");
                    }
                }
            }
        }
        _ => println!("policy:     none (no policy file, or --insecure-policy): accepted"),
    }
    println!(
        "verdict:    {}",
        if r.allowed { "accepted" } else { "REFUSED" }
    );
}
