//! What a request's filter asks of Envoy, as a trait: the FFI implements it over the module ABI
//! (`ffi`), the unit tests over a recording fake. Nothing here is unsafe.

/// The request's headers, copied out of Envoy's map into one buffer: everything read from them
/// (the sandbox id, the key) stays valid while the filter removes and rewrites Envoy's copies.
#[derive(Debug, Default)]
pub struct Headers {
    bytes: Vec<u8>,
    /// (name start, name end, value end): each value follows its name.
    spans: Vec<(usize, usize, usize)>,
}

impl Headers {
    pub fn with_capacity(headers: usize, bytes: usize) -> Headers {
        Headers {
            bytes: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(headers),
        }
    }

    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        let name_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.spans.push((start, name_end, self.bytes.len()));
    }

    /// (name, value) pairs in Envoy's order, as the shared grammar reads them.
    pub fn pairs(&self) -> Vec<(&[u8], &[u8])> {
        self.spans
            .iter()
            .filter_map(|&(start, name_end, end)| {
                Some((
                    self.bytes.get(start..name_end)?,
                    self.bytes.get(name_end..end)?,
                ))
            })
            .collect()
    }
}

/// One request's view of Envoy. `false` from a write means Envoy refused it.
pub trait Host {
    fn request_headers(&self) -> Headers;
    fn set_header(&self, name: &str, value: &str) -> bool;
    fn remove_header(&self, name: &[u8]) -> bool;
    /// Pins the ORIGINAL_DST destination (`ip:port`) through the filter state.
    fn set_destination(&self, destination: &str) -> bool;
    fn clear_route_cache(&self);
    /// Answers locally; the request never reaches an upstream.
    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8], details: &str);
    /// Resumes a request paused in its headers.
    fn continue_decoding(&self);
    /// Envoy's `source.address` (`ip:port`): the TCP peer, never a client-written header.
    fn source_address(&self) -> Option<String>;
    /// A way to wake this request on its worker from another thread, once.
    fn waker(&self) -> Option<Box<dyn Wake>>;
}

/// Wakes a paused request on its own worker (Envoy's scheduler): the request's
/// `on_scheduled` runs there. Dropping it without waking is allowed.
pub trait Wake: Send {
    fn wake(self: Box<Self>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_come_back_in_order_with_any_bytes() {
        let mut h = Headers::with_capacity(2, 16);
        h.push(b":path", b"/x");
        h.push(b"x-bin", &[0xff, 0x00]);
        h.push(b"empty", b"");
        let want: Vec<(&[u8], &[u8])> = vec![
            (b":path", b"/x"),
            (b"x-bin", &[0xff, 0x00]),
            (b"empty", b""),
        ];
        assert_eq!(h.pairs(), want);
    }
}
