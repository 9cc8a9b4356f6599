//! Bearer JWTs: `sub` is the caller, `role: "admin"` grants admin, `exp` is required and `nbf`
//! is honoured. Tokens are HS256 with `JWT_SECRET` (development), or RS256 / ES256 verified
//! with the public keys of a JWKS file (`JWT_JWKS_PATH`; the token's `kid` picks the key), as
//! identity providers issue them. With `JWT_ISSUER` / `JWT_AUDIENCE` set, `iss` / `aud` must
//! match.
//!
//! This is token verification only; reading the header is `api::auth`'s.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::Caller;
use crate::error::Error;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub exp: u64,
}

/// Where `iss` and `aud` must point, when set.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("JWT_JWKS_PATH: cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("JWT_JWKS_PATH: not a JWKS document: {0}")]
    Parse(serde_json::Error),
    #[error("JWT_JWKS_PATH: key {kid:?}: {reason}")]
    Key { kid: String, reason: String },
    #[error("JWT_JWKS_PATH: no usable RS256 or ES256 key with a kid")]
    Empty,
}

pub struct JwtKeys {
    /// HS256 (JWT_SECRET): minting for development and tests, and verification.
    hs256: Option<(EncodingKey, DecodingKey)>,
    /// Public keys by `kid`, each with the one algorithm it may verify.
    public: HashMap<String, (Algorithm, DecodingKey)>,
    expect: Expectations,
}

impl JwtKeys {
    /// HS256 only, no issuer or audience (development, tests, `holdfast token`).
    pub fn new(secret: &str) -> Self {
        Self::with(Some(secret), HashMap::new(), Expectations::default())
    }

    fn with(secret: Option<&str>, public: HashMap<String, (Algorithm, DecodingKey)>, expect: Expectations) -> Self {
        let hs256 = secret.map(|s| (EncodingKey::from_secret(s.as_bytes()), DecodingKey::from_secret(s.as_bytes())));
        Self { hs256, public, expect }
    }

    /// The keys the configuration names: the HS256 secret, the JWKS file, or both.
    pub fn from_config(
        secret: Option<&str>,
        jwks_path: Option<&std::path::Path>,
        expect: Expectations,
    ) -> Result<Self, KeysError> {
        let public = match jwks_path {
            Some(path) => read_jwks(path)?,
            None => HashMap::new(),
        };
        Ok(Self::with(secret, public, expect))
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = 5;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.expect.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.expect.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// Mints an HS256 token (for `holdfast token` and tests).
    pub fn mint(&self, sub: &str, admin: bool, ttl: Duration) -> Result<String, jsonwebtoken::errors::Error> {
        let Some((encoding, _)) = &self.hs256 else {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into());
        };
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + ttl;
        let claims = Claims { sub: sub.to_owned(), role: admin.then(|| "admin".to_owned()), exp: exp.as_secs() };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding)
    }

    pub fn verify(&self, token: &str) -> Result<Caller, Error> {
        let invalid = || Error::Unauthenticated("The bearer token is invalid or expired.");
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        let (algorithm, key) = match header.alg {
            Algorithm::HS256 => (Algorithm::HS256, &self.hs256.as_ref().ok_or_else(invalid)?.1),
            Algorithm::RS256 | Algorithm::ES256 => {
                let (algorithm, key) =
                    header.kid.as_deref().and_then(|kid| self.public.get(kid)).ok_or_else(invalid)?;
                // A key verifies only the algorithm it was published for.
                if *algorithm != header.alg {
                    return Err(invalid());
                }
                (*algorithm, key)
            }
            _ => return Err(invalid()),
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation(algorithm)).map_err(|_| invalid())?;
        let sub = data.claims.sub;
        if sub.is_empty() || sub.len() > 255 || sub.contains('\0') {
            return Err(Error::Unauthenticated("The token's subject must be 1 to 255 characters."));
        }
        Ok(Caller { user_id: sub, admin: data.claims.role.as_deref() == Some("admin"), request_id: None })
    }
}

/// The RS256 and ES256 keys of a JWKS file, by `kid`.
fn read_jwks(path: &std::path::Path) -> Result<HashMap<String, (Algorithm, DecodingKey)>, KeysError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| KeysError::Read { path: path.display().to_string(), source })?;
    let set: JwkSet = serde_json::from_str(&text).map_err(KeysError::Parse)?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else { continue };
        let algorithm = match (&jwk.algorithm, &jwk.common.key_algorithm) {
            (jsonwebtoken::jwk::AlgorithmParameters::RSA(_), None | Some(jsonwebtoken::jwk::KeyAlgorithm::RS256)) => {
                Algorithm::RS256
            }
            (
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_),
                None | Some(jsonwebtoken::jwk::KeyAlgorithm::ES256),
            ) => Algorithm::ES256,
            _ => continue, // another algorithm or key type: not for us
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| KeysError::Key { kid: kid.clone(), reason: e.to_string() })?;
        keys.insert(kid, (algorithm, key));
    }
    if keys.is_empty() {
        return Err(KeysError::Empty);
    }
    Ok(keys)
}
