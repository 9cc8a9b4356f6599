/// An `Idempotency-Key` header value: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err("Idempotency-Key must be 1 to 255 characters");
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("Idempotency-Key must be visible ASCII characters without spaces");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_uuids_and_refuses_empty_long_or_spaced_keys() {
        assert!(IdempotencyKey::parse("0b9a6a4e-6b1f-4b7e-9a43-1b1f0c8f3a10").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
    }
}
