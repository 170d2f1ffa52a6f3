//! The host calls a request makes, over the proxy-wasm ABI directly, so that no input and no
//! host answer can panic inside the VM.
//!
//! Owns the raw imports and their (de)serialisation; nothing here decides anything. Why not
//! the SDK's `hostcalls`: proxy-wasm 0.2's functions `panic!` on any status they do not list,
//! and its header-map reader converts every name and value with `String::from_utf8(..)
//! .unwrap()` — one header byte 0x80–0xFF from a client trapped the VM, and Envoy then failed
//! every stream on that worker. Here every status is an error value, header values stay bytes,
//! and the map a host hands back is parsed with bounds checks (a malformed one is an error).
//!
//! The SDK still owns the context dispatcher, the gRPC calls (their tokens are registered in
//! it) and the tick; the README's "Hostile input" section says what the audit of those found.

use std::ptr::{null, null_mut};
use std::time::Duration;

/// A proxy-wasm status other than Ok, kept as the number the host returned (an unknown
/// number is never turned into an enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

/// `MapType::HttpRequestHeaders`, `StreamType::HttpRequest`.
const REQUEST_HEADERS: u32 = 0;
const HTTP_REQUEST: u32 = 0;

/// One header as Envoy holds it: the name (lower case, as Envoy stores it) and the value,
/// both bytes.
pub type Header = (Vec<u8>, Vec<u8>);

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_log(level: u32, message: *const u8, size: usize) -> u32;
    fn proxy_call_foreign_function(
        name: *const u8,
        name_size: usize,
        args: *const u8,
        args_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
}

/// Native builds (unit tests of the pure parts, fuzzing) have no host: every call fails.
#[cfg(not(target_arch = "wasm32"))]
mod absent {
    #![allow(clippy::missing_safety_doc, clippy::too_many_arguments)]
    const UNSUPPORTED: u32 = 12;
    pub unsafe fn proxy_get_header_map_pairs(_: u32, _: *mut *mut u8, _: *mut usize) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn proxy_replace_header_map_value(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
    ) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn proxy_remove_header_map_value(_: u32, _: *const u8, _: usize) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn proxy_send_local_response(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: i32,
    ) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn proxy_continue_stream(_: u32) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn proxy_set_effective_context(_: u32) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn proxy_get_property(
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn proxy_get_shared_data(
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
        _: *mut u32,
    ) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn proxy_set_shared_data(
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: u32,
    ) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn proxy_get_buffer_bytes(
        _: u32,
        _: usize,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn proxy_get_current_time_nanoseconds(_: *mut u64) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn proxy_log(_: u32, _: *const u8, _: usize) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn proxy_call_foreign_function(
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        UNSUPPORTED
    }
}
#[cfg(not(target_arch = "wasm32"))]
use absent::*;

fn status(code: u32) -> Result<(), Status> {
    if code == OK {
        Ok(())
    } else {
        Err(Status(code))
    }
}

/// Takes ownership of a buffer the host allocated through the SDK's `proxy_on_memory_allocate`
/// (a `Vec<u8>` of exactly `size` capacity, leaked for the host to fill).
///
/// # Safety
/// `data` must be null or come from that allocator with capacity `size`, filled by the host.
unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        // SAFETY: the caller's contract; the SDK's own readers do the same.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }
}

/// A call that hands back a host-allocated buffer: `Ok(None)` when the host says NotFound.
fn fetch(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let code = call(&mut data, &mut size);
    match code {
        // SAFETY: on Ok the host filled `data`/`size` through the module's allocator.
        OK => Ok(Some(unsafe { owned(data, size) })),
        NOT_FOUND => Ok(None),
        other => Err(Status(other)),
    }
}

/// Every request header, values as bytes, in the order Envoy holds them.
pub fn request_headers() -> Result<Vec<Header>, Status> {
    // SAFETY: the out-pointers are valid locals for the duration of the call.
    let raw = fetch(|d, s| unsafe { proxy_get_header_map_pairs(REQUEST_HEADERS, d, s) })?;
    parse_map(&raw.unwrap_or_default()).ok_or(Status(u32::MAX))
}

/// Replaces every copy of request header `name` with `value`.
pub fn set_request_header(name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths of live slices.
    status(unsafe {
        proxy_replace_header_map_value(
            REQUEST_HEADERS,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes every copy of request header `name` (given as Envoy holds it, so bytes).
pub fn remove_request_header(name: &[u8]) -> Result<(), Status> {
    // SAFETY: pointer and length of a live slice.
    status(unsafe { proxy_remove_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len()) })
}

/// Answers the request locally.
pub fn send_response(code: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), Status> {
    let headers = serialize_map(headers);
    // SAFETY: pointers and lengths of live buffers; no details string.
    status(unsafe {
        proxy_send_local_response(
            code,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// Makes the host calls that follow act on context `id` (a request the root context answers
/// for); a context that is gone is an error, never a call on another request.
pub fn set_effective_context(id: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_effective_context(id) })
}

/// Lets a request paused on the callout go on.
pub fn resume_request() -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_continue_stream(HTTP_REQUEST) })
}

/// A property by its path (`["source", "address"]`), as bytes.
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let path = path.join("\0");
    // SAFETY: live slice and valid out-pointers.
    fetch(|d, s| unsafe { proxy_get_property(path.as_ptr(), path.len(), d, s) })
}

/// The VM-shared value under `key`, if any.
pub fn shared_data(key: &str) -> Result<Option<Vec<u8>>, Status> {
    let mut cas: u32 = 0;
    // SAFETY: live slice and valid out-pointers.
    fetch(|d, s| unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), d, s, &mut cas) })
}

/// Stores `value` under `key` for every VM of this plugin, unconditionally.
pub fn set_shared_data(key: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths of live slices; cas 0 = no compare.
    status(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), 0)
    })
}

/// Up to `size` bytes of a buffer (`buffer` is the ABI's BufferType number).
pub fn buffer(buffer: u32, size: usize) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: valid out-pointers.
    fetch(|d, s| unsafe { proxy_get_buffer_bytes(buffer, 0, size, d, s) })
}

/// The host's clock, since the Unix epoch.
pub fn now() -> Result<Duration, Status> {
    let mut nanos: u64 = 0;
    // SAFETY: valid out-pointer.
    status(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(Duration::from_nanos(nanos))
}

/// Envoy's foreign function `name` with `args`; its result is ignored.
pub fn call_foreign(name: &str, args: &[u8]) -> Result<(), Status> {
    // SAFETY: live slices and valid out-pointers.
    fetch(|d, s| unsafe {
        proxy_call_foreign_function(name.as_ptr(), name.len(), args.as_ptr(), args.len(), d, s)
    })
    .and_then(|found| found.map(drop).ok_or(Status(NOT_FOUND)))
}

/// Logs at `level` (proxy-wasm's numbers: 2 info, 3 warn, 4 error); a failure is dropped.
pub fn log(level: u32, message: &str) {
    // SAFETY: pointer and length of a live str.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// Reads proxy-wasm's serialised map: a u32 count, then a (name size, value size) u32 pair
/// per entry, then each name and value followed by a NUL. `None` for anything malformed.
pub fn parse_map(bytes: &[u8]) -> Option<Vec<Header>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = read_u32(bytes, 0)?;
    let sizes_end = count.checked_mul(8)?.checked_add(4)?;
    let mut at = sizes_end;
    // Each entry takes at least its 8 size bytes and two NULs: a count past that is a lie.
    let mut map = Vec::with_capacity(count.min(bytes.len() / 10));
    for n in 0..count {
        let sizes = 4 + n * 8;
        let name_len = read_u32(bytes, sizes)?;
        let value_len = read_u32(bytes, sizes + 4)?;
        let name = bytes.get(at..at.checked_add(name_len)?)?;
        at = at.checked_add(name_len)?.checked_add(1)?;
        let value = bytes.get(at..at.checked_add(value_len)?)?;
        at = at.checked_add(value_len)?.checked_add(1)?;
        map.push((name.to_vec(), value.to_vec()));
    }
    (at <= bytes.len() || count == 0).then_some(map)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(b)).ok()
}

/// The inverse of [`parse_map`], for local-reply headers.
pub fn serialize_map(map: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    // Header lists here are a handful of short literals: the u32 casts cannot truncate.
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (name, value) in map {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in map {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_map_round_trips_with_any_bytes_in_values() {
        let bytes = serialize_map(&[(":path", "/x"), ("x-note", "v")]);
        let map = parse_map(&bytes).unwrap();
        assert_eq!(
            map,
            vec![
                (b":path".to_vec(), b"/x".to_vec()),
                (b"x-note".to_vec(), b"v".to_vec())
            ]
        );
        // A value byte 0xFF, as Envoy hands over obs-text: kept as it is.
        let mut raw = Vec::new();
        raw.extend_from_slice(&1u32.to_le_bytes());
        raw.extend_from_slice(&1u32.to_le_bytes());
        raw.extend_from_slice(&2u32.to_le_bytes());
        raw.extend_from_slice(b"a\0\xff\xfe\0");
        assert_eq!(
            parse_map(&raw).unwrap(),
            vec![(b"a".to_vec(), vec![0xff, 0xfe])]
        );
        assert_eq!(parse_map(&[]).unwrap(), Vec::<Header>::new());
    }

    #[test]
    fn a_malformed_map_is_refused_not_read_past_its_end() {
        let good = serialize_map(&[("name", "value")]);
        for cut in 1..good.len() {
            assert_eq!(parse_map(&good[..cut]), None, "cut at {cut}");
        }
        // A count that would overflow, and sizes far past the end.
        assert_eq!(parse_map(&u32::MAX.to_le_bytes()), None);
        let mut huge = 1u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(parse_map(&huge), None);
    }

    #[test]
    fn without_a_host_every_call_is_an_error() {
        assert!(request_headers().is_err());
        assert!(set_request_header("a", b"b").is_err());
        assert!(now().is_err());
        assert!(call_foreign("clear_route_cache", &[]).is_err());
    }
}
