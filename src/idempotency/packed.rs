//! Stored answers, packed (`IDEMPOTENCY_PACKED_ANSWERS`): the answer's JSON text compressed by
//! zstd against a fixed dictionary of typical answers, behind one format byte, in
//! `response_packed` instead of `response_body` (jsonb). An answer of a hold or a confirm is
//! about 300 bytes of JSON, mostly ids and field names that every answer repeats; packed it is
//! about 120, and the record is written with every request (migration
//! `idempotency_packed_answers`). A replay gives back the very JSON text the first answer sent.
//!
//! The dictionary is raw content (no trained tables): answers as the service writes them, so
//! that zstd finds the field names and the shape of the ids in it. Records packed with a
//! dictionary are read back with it for as long as they are kept: format 1's dictionary never
//! changes; another dictionary is another format byte.

use std::cell::RefCell;
use std::sync::LazyLock;

use serde_json::Value;
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};
use zstd::zstd_safe::CParameter;

/// The first byte of every packed answer: which dictionary it was packed with.
const FORMAT_1: u8 = 1;

/// zstd's level for packing. On answers this short every level finds the same matches in the
/// dictionary (level 19 gave no smaller answers than 3), so the cheapest that does.
const LEVEL: i32 = 3;

/// The largest answer unpacking accepts, a bound on what a damaged record could make it
/// allocate (the largest request body the service takes is 4 MiB; its answers are far smaller).
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Format 1's dictionary: answers of each kind, the commonest last (nearest offsets are the
/// cheapest). Never change it (`tests::format_1s_dictionary_never_changes`).
const DICTIONARY_1: &str = concat!(
    r#"{"code":"IDEMPOTENCY_KEY_REUSED","detail":"","status":422,"title":"","type":"/problems/"}"#,
    r#"{"code":"INSUFFICIENT_INVENTORY","detail":"not enough units on 2027-03-04","night":"2027-03-04","status":409,"title":"Not enough units left","type":"/problems/insufficient-inventory"}"#,
    r#"{"code":"SLOT_UNAVAILABLE","detail":"","status":409,"title":"The slot is not available","type":"/problems/slot-unavailable"}"#,
    r#"{"code":"SEAT_UNAVAILABLE","detail":"seats already held or sold","seat_ids":["01a24fd7-c5fb-7063-9139-79a56626e91e"],"status":409,"title":"Some seats are not available","type":"/problems/seat-unavailable"}"#,
    r#"{"cancelled_at":"2026-12-07T10:00:00.000000Z","created_at":"2026-12-07T09:31:23.271352Z","end":"2027-01-04T10:30:00Z","hold_id":"01a24fd7-f6ff-75d3-b74c-94cbd2a95404","id":"01a24fd7-f707-7164-b190-81910eb69d04","kind":"slot","payment_reference":null,"resource_id":"01a24fd7-c5f2-759f-bcbb-2ebd29a55e56","start":"2027-01-04T10:00:00Z","status":"CANCELLED"}"#,
    r#"{"created_at":"2026-12-07T09:31:11.271205Z","end":"2027-01-04T10:30:00Z","expires_at":"2026-12-07T09:41:11.271205Z","id":"01a24fd7-c821-7424-9353-320fc7c13bf7","kind":"slot","resource_id":"01a24fd7-c5f2-759f-bcbb-2ebd29a55e56","start":"2027-01-04T10:00:00Z","status":"HELD"}"#,
    r#"{"cancelled_at":null,"check_in":"2027-03-03","check_out":"2027-03-06","created_at":"2026-12-07T09:31:23.271352Z","hold_id":"01a24fd7-f6ff-75d3-b74c-94cbd2a95404","id":"01a24fd7-f707-7164-b190-81910eb69d04","inventory_id":"01a24fd7-c5f2-759f-bcbb-2ebd29a55e56","kind":"rooms","payment_reference":"","quantity":1,"status":"CONFIRMED"}"#,
    r#"{"check_in":"2027-03-03","check_out":"2027-03-06","created_at":"2026-12-07T09:31:11.271205Z","expires_at":"2026-12-07T09:41:11.271205Z","id":"01a24fd7-c821-7424-9353-320fc7c13bf7","inventory_id":"01a24fd7-c5f2-759f-bcbb-2ebd29a55e56","kind":"rooms","quantity":1,"status":"HELD"}"#,
    r#"{"created_at":"2026-12-07T09:31:11.271205Z","event_id":"01a24fd7-c5f2-759f-bcbb-2ebd29a55e56","expires_at":"2026-12-07T09:41:11.271205Z","id":"01a24fd7-c821-7424-9353-320fc7c13bf7","kind":"seats","seat_ids":["01a24fd7-c5f6-722a-a5c7-54c4e89c802f"],"status":"RELEASED","total_cents":1000}"#,
    r#"{"cancelled_at":null,"created_at":"2026-12-07T09:31:23.271352Z","event_id":"01a24fd7-c5f2-759f-bcbb-2ebd29a55e56","hold_id":"01a24fd7-f6ff-75d3-b74c-94cbd2a95404","id":"01a24fd7-f707-7164-b190-81910eb69d04","kind":"seats","payment_reference":"","seat_ids":["01a24fd7-c5fb-7063-9139-79a56626e91e","01a24fd7-c5fb-7063-9139-79a56626e91f"],"status":"CONFIRMED","total_cents":1000}"#,
    r#"{"created_at":"2026-12-07T09:31:11.271205Z","event_id":"01a24fd7-c5f2-759f-bcbb-2ebd29a55e56","expires_at":"2026-12-07T09:41:11.271205Z","id":"01a24fd7-c821-7424-9353-320fc7c13bf7","kind":"seats","seat_ids":["01a24fd7-c5f6-722a-a5c7-54c4e89c802f","01a24fd7-c5f6-722a-a5c7-54c4e89c8030"],"status":"HELD","total_cents":1000}"#,
);

static ENCODER_1: LazyLock<EncoderDictionary<'static>> =
    LazyLock::new(|| EncoderDictionary::copy(DICTIONARY_1.as_bytes(), LEVEL));
static DECODER_1: LazyLock<DecoderDictionary<'static>> =
    LazyLock::new(|| DecoderDictionary::copy(DICTIONARY_1.as_bytes()));

thread_local! {
    /// One compression context per thread, kept: creating one costs more than packing an answer.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
}

fn compressor() -> std::io::Result<Compressor<'static>> {
    let mut compressor = Compressor::with_prepared_dictionary(&ENCODER_1)?;
    // The record's primary key and the fingerprint already guard it: no checksum, and a raw
    // dictionary has no id to name.
    compressor.set_parameter(CParameter::ChecksumFlag(false))?;
    compressor.set_parameter(CParameter::DictIdFlag(false))?;
    compressor.set_parameter(CParameter::ContentSizeFlag(true))?;
    Ok(compressor)
}

/// Packs an answer: the format byte, then one zstd frame of its JSON text.
pub fn pack(body: &Value) -> Result<Vec<u8>, sqlx::Error> {
    let json = serde_json::to_vec(body).map_err(|err| sqlx::Error::Encode(err.into()))?;
    COMPRESSOR
        .with(|cell| {
            let mut cell = cell.borrow_mut();
            let compressor = match cell.as_mut() {
                Some(compressor) => compressor,
                None => cell.insert(compressor()?),
            };
            let frame = compressor.compress(&json)?;
            let mut packed = Vec::with_capacity(1 + frame.len());
            packed.push(FORMAT_1);
            packed.extend_from_slice(&frame);
            Ok::<_, std::io::Error>(packed)
        })
        .map_err(|err| sqlx::Error::Encode(err.into()))
}

/// Unpacks what [`pack`] made. A record that does not unpack is an error, never a guess.
pub fn unpack(packed: &[u8]) -> Result<Value, sqlx::Error> {
    let decode = |err: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Decode(err);
    let (&format, frame) = packed.split_first().ok_or_else(|| decode("an empty packed answer".into()))?;
    if format != FORMAT_1 {
        return Err(decode(format!("packed answer of unknown format {format}").into()));
    }
    let json = Decompressor::with_prepared_dictionary(&DECODER_1)
        .and_then(|mut decompressor| decompressor.decompress(frame, MAX_ANSWER_BYTES))
        .map_err(|err| decode(err.into()))?;
    serde_json::from_slice(&json).map_err(|err| decode(err.into()))
}

/// The answer a settled record holds: as JSON (written by a release before packing, or with
/// packing off) or packed.
pub fn stored(body: Option<Value>, packed: Option<&[u8]>) -> Result<Value, sqlx::Error> {
    match (body, packed) {
        (Some(body), _) => Ok(body),
        (None, Some(packed)) => unpack(packed),
        (None, None) => Ok(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn format_1s_dictionary_never_changes() {
        // Records packed with it are kept for the retention period and read back with it: a
        // changed dictionary would unpack them as garbage or not at all. Add a format instead.
        let digest = crate::idempotency::hex(&Sha256::digest(DICTIONARY_1.as_bytes()));
        assert_eq!(digest, "ba85495eb375e29bb3fcfdc6db334da52cc739acbf083c93916e778222df0c81");
    }

    #[test]
    fn answers_unpack_to_the_same_json_and_pack_small() {
        let hold = json!({
            "created_at": "2026-12-07T11:02:03.456789Z", "event_id": "01a25a10-0b6e-7b21-8f3e-2f4c1d2e3a4b",
            "expires_at": "2026-12-07T11:12:03.456789Z", "id": "01a25a10-1c2d-7e3f-9a8b-7c6d5e4f3a2b",
            "kind": "seats", "seat_ids": ["01a25a10-0b70-7aaa-bbbb-cccccccccccc"], "status": "HELD", "total_cents": 2500,
        });
        let packed = pack(&hold).unwrap();
        assert_eq!(packed[0], FORMAT_1);
        assert_eq!(unpack(&packed).unwrap(), hold);
        let text = serde_json::to_vec(&hold).unwrap().len();
        assert!(packed.len() * 2 < text, "{} packed bytes for {text} of JSON", packed.len());
        // Anything JSON packs, whatever its shape, and keeps its text's order.
        let odd = json!({"z": [1, 2.5, null, "\u{1F600}", {"b": true}], "a": "x".repeat(5000)});
        let unpacked = unpack(&pack(&odd).unwrap()).unwrap();
        assert_eq!(serde_json::to_string(&unpacked).unwrap(), serde_json::to_string(&odd).unwrap());
    }

    #[test]
    fn damaged_or_unknown_records_are_errors() {
        let packed = pack(&json!({"id": 1})).unwrap();
        assert!(unpack(&[]).is_err());
        let mut other = packed.clone();
        other[0] = 2;
        assert!(unpack(&other).is_err());
        assert!(unpack(&packed[..packed.len() - 1]).is_err());
        assert!(unpack(&[FORMAT_1, 1, 2, 3]).is_err());
        assert_eq!(stored(None, None).unwrap(), Value::Null);
        assert_eq!(stored(Some(json!(1)), Some(&packed)).unwrap(), json!(1));
        assert_eq!(stored(None, Some(&packed)).unwrap(), json!({"id": 1}));
    }
}
