//! The bearer tokens (JWTs) of auth methods, verified as Consul's `jwt` auth method does with
//! static keys (`JWTValidationPubKeys`): the signature by one of the keys with an accepted
//! algorithm (asymmetric only), `iss` and `aud` against the bound ones, `exp` / `nbf` / `iat`
//! with Consul's leeways; then the claims the method maps, as the `value` and `list` objects
//! binding-rule selectors see. A leaf: it knows neither node nor front-end. Nothing here logs,
//! and no error carries the token.

use std::collections::BTreeMap;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value, json};
use waggle_core::acl::JwtConfig;

/// The algorithms accepted when a method names none.
pub(crate) const DEFAULT_ALGORITHMS: &[&str] = &["RS256", "ES256"];

/// The algorithms a method may accept (public-key ones: a shared secret would let anyone who
/// may read the method forge tokens).
const ASYMMETRIC: &[&str] = &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

/// Longest bearer token accepted.
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Consul's defaults (go-sso): clock skew 60 s; a token lacking `exp` (or `nbf`) is valid 150 s
/// from its start (or before its end).
const DEFAULT_CLOCK_SKEW_MS: i64 = 60_000;
const DEFAULT_CLAIM_LEEWAY_MS: i64 = 150_000;

/// A public key from PEM (`PUBLIC KEY`: RSA, EC P-256 / P-384 or Ed25519; or `RSA PUBLIC KEY`).
fn parse_key(pem: &str) -> Result<DecodingKey, String> {
    let text = pem.trim();
    let label = text
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.split_once("-----"))
        .map(|(label, _)| label)
        .ok_or("not PEM (no -----BEGIN line)")?;
    if !matches!(label, "PUBLIC KEY" | "RSA PUBLIC KEY") {
        return Err(format!("a {label:?} block is not a public key (expected \"PUBLIC KEY\")"));
    }
    let bytes = text.as_bytes();
    DecodingKey::from_rsa_pem(bytes)
        .or_else(|_| DecodingKey::from_ec_pem(bytes))
        .or_else(|_| DecodingKey::from_ed_pem(bytes))
        .map_err(|e| format!("not an RSA, EC or Ed25519 public key: {e}"))
}

/// The algorithms `config` accepts.
fn algorithms(config: &JwtConfig) -> Result<Vec<Algorithm>, String> {
    let names: Vec<&str> = if config.supported_algs.is_empty() {
        DEFAULT_ALGORITHMS.to_vec()
    } else {
        config.supported_algs.iter().map(String::as_str).collect()
    };
    names
        .into_iter()
        .map(|name| {
            if !ASYMMETRIC.contains(&name) {
                return Err(format!("JWTSupportedAlgs: {name:?} is not supported (one of {})", ASYMMETRIC.join(", ")));
            }
            name.parse().map_err(|_| format!("JWTSupportedAlgs: {name:?} is not supported"))
        })
        .collect()
}

/// Checks a method's configuration when it is set: every key parses, every algorithm is
/// accepted, and some key can verify some accepted algorithm.
pub(crate) fn check_config(config: &JwtConfig) -> Result<(), String> {
    if config.validation_pub_keys.is_empty() {
        return Err("JWTValidationPubKeys: at least one key is required".into());
    }
    let algorithms = algorithms(config)?;
    let mut families = Vec::new();
    for (i, pem) in config.validation_pub_keys.iter().enumerate() {
        let key = parse_key(pem).map_err(|e| format!("JWTValidationPubKeys[{i}]: {e}"))?;
        families.push(key.family());
    }
    if !algorithms.iter().any(|a| families.contains(&a.family())) {
        return Err("JWTSupportedAlgs: no algorithm fits any of JWTValidationPubKeys".into());
    }
    Ok(())
}

/// Verifies `token` against `config` at `now_ms` (ms since the Unix epoch): its claims, or why
/// not (never with the token in it).
pub(crate) fn verify(token: &str, config: &JwtConfig, now_ms: i64) -> Result<Map<String, Value>, String> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!("the token is longer than {MAX_TOKEN_LEN} bytes"));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
    if !algorithms(config)?.contains(&header.alg) {
        return Err(format!("algorithm {:?} is not accepted by the auth method", header.alg));
    }
    let mut validation = Validation::new(header.alg);
    // Only the signature here: the claims are checked below as Consul checks them.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let family = header.alg.family();
    let claims = config
        .validation_pub_keys
        .iter()
        .filter_map(|pem| parse_key(pem).ok())
        .filter(|key| key.family() == family && family != AlgorithmFamily::Hmac)
        .find_map(|key| jsonwebtoken::decode::<Value>(token, &key, &validation).ok())
        .ok_or("no key of the auth method verified the token's signature")?
        .claims;
    let Value::Object(claims) = claims else { return Err("the token's claims are not an object".into()) };
    check_claims(&claims, config, now_ms)?;
    Ok(claims)
}

/// A numeric date claim in ms (0 if absent); fractions of a second are kept.
fn date_ms(claims: &Map<String, Value>, name: &str) -> Result<i64, String> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite() && s.abs() < 1e14)
            .map(|s| (s * 1000.0) as i64)
            .ok_or_else(|| format!("the {name} claim is out of range")),
        Some(_) => Err(format!("the {name} claim is not a number")),
    }
}

/// A leeway setting: 0 is the default, negative is none.
fn leeway(configured: i64, default: i64) -> i64 {
    match configured {
        0 => default,
        n if n < 0 => 0,
        n => n,
    }
}

/// The claims Consul's `jwt` method checks (go-sso `verifyVanillaJWT`): at least one of `iat`,
/// `nbf`, `exp`; a missing `exp` or `nbf` derived with the expiration / not-before leeways;
/// then `nbf`, `exp` and `iat` against now with the clock-skew leeway, `iss` against the bound
/// issuer, and `aud` against the bound audiences (strict: a token with an audience needs bound
/// audiences).
pub(crate) fn check_claims(claims: &Map<String, Value>, config: &JwtConfig, now_ms: i64) -> Result<(), String> {
    let (iat, mut nbf, mut exp) = (date_ms(claims, "iat")?, date_ms(claims, "nbf")?, date_ms(claims, "exp")?);
    if iat == 0 && nbf == 0 && exp == 0 {
        return Err("the token has no iat, nbf or exp claim".into());
    }
    if exp == 0 {
        exp = iat.max(nbf).saturating_add(leeway(config.expiration_leeway_ms, DEFAULT_CLAIM_LEEWAY_MS));
    }
    if nbf == 0 {
        nbf = if iat != 0 {
            iat
        } else {
            exp.saturating_sub(leeway(config.not_before_leeway_ms, DEFAULT_CLAIM_LEEWAY_MS))
        };
    }
    let skew = leeway(config.clock_skew_leeway_ms, DEFAULT_CLOCK_SKEW_MS);
    if now_ms.saturating_add(skew) < nbf {
        return Err("the token is not valid yet (nbf)".into());
    }
    if now_ms.saturating_sub(skew) > exp {
        return Err("the token has expired (exp)".into());
    }
    if iat != 0 && now_ms.saturating_add(skew) < iat {
        return Err("the token was issued in the future (iat)".into());
    }
    if !config.bound_issuer.is_empty() && claims.get("iss").and_then(Value::as_str) != Some(&config.bound_issuer) {
        return Err("the iss claim does not match the bound issuer".into());
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().ok_or("the aud claim holds a non-string")).collect::<Result<_, _>>()?
        }
        Some(_) => return Err("the aud claim is not a string or a list".into()),
    };
    if config.bound_audiences.is_empty() {
        if !audiences.is_empty() {
            return Err("the token has an aud claim but the auth method binds no audience".into());
        }
    } else if !config.bound_audiences.iter().any(|bound| audiences.contains(&bound.as_str())) {
        return Err("the aud claim does not match any bound audience".into());
    }
    Ok(())
}

/// What a verified login is: the object binding-rule selectors see (`{"value": {...}, "list":
/// {...}}`, every mapped name present, empty when its claim is absent) and the variables bind
/// names interpolate (`value.<name>`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Identity {
    pub(crate) selectable: Value,
    pub(crate) variables: BTreeMap<String, String>,
}

/// A claim by name, or by a `/`-separated path into nested claims (a JSON pointer, as Consul).
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(path) = name.strip_prefix('/') {
        let mut parts = path.split('/').map(|p| p.replace("~1", "/").replace("~0", "~"));
        let first = parts.next()?;
        let mut at = claims.get(&first)?;
        for part in parts {
            at = match at {
                Value::Object(fields) => fields.get(&part)?,
                Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(at)
    } else {
        claims.get(name)
    }
}

/// A scalar claim as text: strings as they are, booleans, numbers truncated to integers (as
/// go-sso).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => i.to_string(),
            None => (n.as_f64()?.trunc() as i64).to_string(),
        }),
        _ => None,
    }
}

/// The identity `claims` stand for under `config`'s claim mappings.
pub(crate) fn identity(claims: &Map<String, Value>, config: &JwtConfig) -> Result<Identity, String> {
    let mut values: Map<String, Value> = Map::new();
    let mut variables = BTreeMap::new();
    for (source, target) in &config.claim_mappings {
        let value = match claim(claims, source) {
            None | Some(Value::Null) => String::new(),
            Some(raw) => scalar(raw).ok_or_else(|| format!("the claim {source:?} is not a string, number or bool"))?,
        };
        variables.insert(format!("value.{target}"), value.clone());
        values.insert(target.clone(), Value::String(value));
    }
    let mut lists: Map<String, Value> = Map::new();
    for (source, target) in &config.list_claim_mappings {
        let items: Vec<Value> = match claim(claims, source) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(raw)) => {
                let mut items = Vec::with_capacity(raw.len());
                for v in raw {
                    let text = scalar(v).ok_or_else(|| format!("the list claim {source:?} holds a non-scalar"))?;
                    if !text.is_empty() {
                        items.push(Value::String(text));
                    }
                }
                items
            }
            Some(raw) => {
                let one = scalar(raw).ok_or_else(|| format!("the list claim {source:?} is not a list"))?;
                if one.is_empty() { Vec::new() } else { vec![Value::String(one)] }
            }
        };
        lists.insert(target.clone(), Value::Array(items));
    }
    Ok(Identity { selectable: json!({ "value": values, "list": lists }), variables })
}

/// The template of the objects selectors see: any name under `value` and `list`.
pub(crate) fn selector_template() -> (Value, &'static [&'static str]) {
    (json!({ "value": {}, "list": {} }), &["value", "list"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> JwtConfig {
        JwtConfig {
            validation_pub_keys: vec!["unused".into()],
            bound_issuer: "https://issuer".into(),
            bound_audiences: vec!["waggle".into()],
            ..JwtConfig::default()
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("{other}"),
        }
    }

    const NOW: i64 = 1_700_000_000_000;

    fn at(offset_s: i64) -> i64 {
        NOW / 1000 + offset_s
    }

    #[test]
    fn times_are_checked_with_consuls_leeways() {
        let c = config();
        let ok = |v: Value| check_claims(&claims(v), &c, NOW);
        let base = |extra: Value| {
            let mut m = claims(json!({ "iss": "https://issuer", "aud": "waggle" }));
            m.extend(claims(extra));
            Value::Object(m)
        };
        assert!(ok(base(json!({ "exp": at(60) }))).is_ok());
        // Expired, within and beyond the 60 s default skew.
        assert!(ok(base(json!({ "exp": at(-30) }))).is_ok());
        assert!(ok(base(json!({ "exp": at(-90) }))).unwrap_err().contains("expired"));
        assert!(ok(base(json!({ "nbf": at(30), "exp": at(600) }))).is_ok());
        assert!(ok(base(json!({ "nbf": at(90), "exp": at(600) }))).unwrap_err().contains("not valid yet"));
        // Issued in the future: not valid before then (a missing nbf is the iat).
        assert!(ok(base(json!({ "iat": at(90), "exp": at(600) }))).unwrap_err().contains("not valid yet"));
        assert!(ok(base(json!({ "iat": at(90), "nbf": at(-10), "exp": at(600) }))).unwrap_err().contains("future"));
        // Without exp: 150 s after iat (or nbf).
        assert!(ok(base(json!({ "iat": at(-100) }))).is_ok());
        assert!(ok(base(json!({ "iat": at(-300) }))).unwrap_err().contains("expired"));
        // Without any time at all: refused.
        assert!(ok(base(json!({}))).unwrap_err().contains("no iat"));
        assert!(ok(base(json!({ "exp": "soon" }))).is_err());
        // A negative skew is none.
        let strict = JwtConfig { clock_skew_leeway_ms: -1, ..config() };
        let expired = claims(base(json!({ "exp": at(-1) })));
        assert!(check_claims(&expired, &strict, NOW).is_err());
        assert!(check_claims(&expired, &config(), NOW).is_ok());
    }

    #[test]
    fn issuer_and_audience_are_bound() {
        let c = config();
        let check = |v: Value| check_claims(&claims(v), &c, NOW);
        let exp = at(60);
        assert!(check(json!({ "exp": exp, "iss": "https://issuer", "aud": ["x", "waggle"] })).is_ok());
        assert!(check(json!({ "exp": exp, "iss": "https://other", "aud": "waggle" })).unwrap_err().contains("iss"));
        assert!(check(json!({ "exp": exp, "aud": "waggle" })).unwrap_err().contains("iss"));
        assert!(check(json!({ "exp": exp, "iss": "https://issuer", "aud": "x" })).unwrap_err().contains("aud"));
        assert!(check(json!({ "exp": exp, "iss": "https://issuer" })).unwrap_err().contains("aud"));
        // No bound audience: a token with one is refused (Consul's strict check), without passes.
        let open = JwtConfig { bound_audiences: vec![], bound_issuer: String::new(), ..config() };
        assert!(check_claims(&claims(json!({ "exp": exp, "aud": "x" })), &open, NOW).is_err());
        assert!(check_claims(&claims(json!({ "exp": exp })), &open, NOW).is_ok());
    }

    #[test]
    fn mapped_claims_become_values_and_lists() {
        let c = JwtConfig {
            claim_mappings: [
                ("service".into(), "service".into()),
                ("/org/team".into(), "team".into()),
                ("admin".into(), "admin".into()),
                ("n".into(), "n".into()),
                ("absent".into(), "absent".into()),
            ]
            .into(),
            list_claim_mappings: [("groups".into(), "groups".into()), ("one".into(), "one".into())].into(),
            ..config()
        };
        let identity = identity(
            &claims(json!({
                "service": "web", "org": { "team": "core" }, "admin": true, "n": 4.7,
                "groups": ["a", "", 3], "one": "solo",
            })),
            &c,
        )
        .expect("identity");
        assert_eq!(
            identity.selectable,
            json!({
                "value": { "service": "web", "team": "core", "admin": "true", "n": "4", "absent": "" },
                "list": { "groups": ["a", "3"], "one": ["solo"] },
            })
        );
        assert_eq!(identity.variables["value.team"], "core");
        let bad = super::identity(&claims(json!({ "service": { "nested": 1 } })), &c).unwrap_err();
        assert!(bad.contains("service"), "{bad}");
    }

    /// A throwaway RSA key pair made for these tests (openssl genpkey), never used elsewhere.
    const RSA_PRIVATE: &str = include_str!("../tests/fixtures/jwt-test-rsa-private.pem");
    const RSA_PUBLIC: &str = include_str!("../tests/fixtures/jwt-test-rsa-public.pem");

    fn signed(alg: Algorithm, key: &jsonwebtoken::EncodingKey) -> String {
        let claims = json!({ "iss": "https://issuer", "aud": "waggle", "exp": NOW / 1000 + 60, "sub": "x" });
        jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, key).unwrap()
    }

    #[test]
    fn every_key_kind_verifies_its_algorithms() {
        use jsonwebtoken::EncodingKey;
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let p384_signing = EncodingKey::from_ec_pem(p384.serialize_pem().as_bytes()).unwrap();
        let ed_signing = EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap();
        let all = JwtConfig {
            validation_pub_keys: vec![RSA_PUBLIC.into(), p384.public_key_pem(), ed.public_key_pem()],
            supported_algs: ["RS256", "RS512", "PS256", "ES384", "EdDSA"].map(String::from).to_vec(),
            ..config()
        };
        check_config(&all).unwrap();
        for (alg, key) in [
            (Algorithm::RS256, &rsa),
            (Algorithm::RS512, &rsa),
            (Algorithm::PS256, &rsa),
            (Algorithm::ES384, &p384_signing),
            (Algorithm::EdDSA, &ed_signing),
        ] {
            let claims = verify(&signed(alg, key), &all, NOW).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(claims["sub"], "x");
        }
        // The defaults (RS256, ES256) leave the others out.
        let defaults = JwtConfig { supported_algs: vec![], ..all.clone() };
        assert!(verify(&signed(Algorithm::RS256, &rsa), &defaults, NOW).is_ok());
        assert!(verify(&signed(Algorithm::EdDSA, &ed_signing), &defaults, NOW).unwrap_err().contains("not accepted"));
        // A key of another kind does not verify.
        let rsa_only = JwtConfig { validation_pub_keys: vec![RSA_PUBLIC.into()], ..all };
        assert!(verify(&signed(Algorithm::ES384, &p384_signing), &rsa_only, NOW).unwrap_err().contains("signature"));
        // A private key is not a validation key.
        let private = JwtConfig { validation_pub_keys: vec![RSA_PRIVATE.into()], ..config() };
        assert!(check_config(&private).unwrap_err().contains("not a public key"));
    }

    #[test]
    fn configurations_are_checked() {
        let bad = |c: JwtConfig| check_config(&c).unwrap_err();
        assert!(bad(JwtConfig::default()).contains("required"));
        assert!(bad(JwtConfig { validation_pub_keys: vec!["junk".into()], ..config() }).contains("not PEM"));
        let private = "-----BEGIN PRIVATE KEY-----\nMC4CAQ==\n-----END PRIVATE KEY-----\n";
        assert!(bad(JwtConfig { validation_pub_keys: vec![private.into()], ..config() }).contains("not a public key"));
        let garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(bad(JwtConfig { validation_pub_keys: vec![garbage.into()], ..config() }).contains("[0]"));
        let hmac = JwtConfig { supported_algs: vec!["HS256".into()], ..config() };
        assert!(bad(hmac).contains("HS256"));
        assert!(bad(JwtConfig { supported_algs: vec!["none".into()], ..config() }).contains("none"));
    }
}
