//! The ring-buffer record decoder on arbitrary bytes: it never panics (nor reads out of bounds,
//! which AddressSanitizer would catch in its unaligned reads), and what it accepts round-trips:
//! `to_bytes()` gives back exactly the bytes it read (but for what follows an init's environment
//! value, which reads as zeros), which decode again to the same record.
#![no_main]

use clawtrace::source::decode::{c_str, sized_str, DecodeError, Record};
use libfuzzer_sys::fuzz_target;
use std::mem::offset_of;

use tracer_common::{EnvValue, ExecEnvRecord, Header, Kind, ENV_VALUE_LEN};

fuzz_target!(|data: &[u8]| {
    match Record::decode(data) {
        Ok(record) => {
            let bytes = record.to_bytes();
            // A record is a prefix of the sample (ring-buffer samples may be padded).
            assert!(
                bytes.len() <= data.len(),
                "{} > {}",
                bytes.len(),
                data.len()
            );
            let mut want = data[..bytes.len()].to_vec();
            if let Record::ExecEnv(r) = &record {
                // The decoder keeps only the value's bytes of its window: the rest reads as 0.
                let value_at = offset_of!(ExecEnvRecord, env) + offset_of!(EnvValue, value);
                let kept = (r.env.value_len as usize).min(ENV_VALUE_LEN);
                want[value_at + kept..value_at + ENV_VALUE_LEN].fill(0);
            }
            assert_eq!(bytes, want, "to_bytes differs from the input");
            let again = Record::decode(&bytes).expect("re-decoding to_bytes failed");
            assert_eq!(again.to_bytes(), bytes);
            assert_eq!(again.kind(), record.kind());
            assert_eq!(record.header().kind, header_kind(data));
            touch_strings(&record);
        }
        Err(DecodeError::ShortHeader { got, need }) => {
            assert_eq!(got, data.len());
            assert!(got < need && need == std::mem::size_of::<Header>());
        }
        Err(DecodeError::Short { kind, got, need }) => {
            assert_eq!(got, data.len());
            assert!(got < need);
            assert_eq!(kind, header_kind(data));
        }
        Err(DecodeError::UnknownKind(k)) => {
            assert_eq!(k, header_kind(data));
            assert!(k != Kind::CgroupMkdir as u32 && k != Kind::ProcessExit as u32);
        }
        // A kind of error added later: it is not a panic, which is what this target is about.
        #[allow(unreachable_patterns)]
        Err(_) => {}
    }
});

/// The kind field of the header at the front of `data` (which holds at least a header here).
fn header_kind(data: &[u8]) -> u32 {
    let mut k = [0u8; 4];
    k.copy_from_slice(&data[..4]);
    u32::from_ne_bytes(k)
}

/// The string helpers the model applies to records' text fields, with whatever length field
/// the record carries. (Kinds added later need no case here: decoding them is the point.)
fn touch_strings(record: &Record) {
    match record {
        Record::CgroupMkdir(r) => {
            let path = sized_str(&r.path, r.path_len);
            assert!(path.len() <= 3 * r.path.len());
        }
        Record::Exec(r) => {
            drop(c_str(&r.comm));
            drop(sized_str(&r.filename, r.filename_len));
        }
        Record::Exit(r) => {
            drop(c_str(&r.comm));
        }
        Record::Signal(r) => {
            drop(c_str(&r.sender_comm));
            drop(c_str(&r.target_comm));
        }
        Record::ExecEnv(r) => {
            drop(c_str(&r.exec.comm));
            drop(sized_str(&r.exec.filename, r.exec.filename_len));
            drop(sized_str(&r.env.value, r.env.value_len));
        }
        _ => {}
    }
}
