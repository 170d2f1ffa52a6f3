//! The exported hooks and Envoy's callbacks: the only unsafe code of the module.
//!
//! Every exported hook runs inside [`guard`]: a panic is caught at the boundary (one that
//! crossed it would abort Envoy), logged, and the stream fails closed, 503
//! `resolver_unavailable`, while Envoy and every other stream live on. Hooks this filter has no
//! use for pass the stream on, guarded all the same.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::abi::*;
use crate::config::ModuleConfig;
use crate::embedded::{self, Embedded};
use crate::filter::{Filter, Flow, refuse, unavailable_deny};
use crate::host::{Headers, Host, Wake};

/// Runs a hook's `body`; on a panic logs it and returns `fallback()` (itself guarded: a panic
/// there returns `last`).
fn guard<T>(hook: &str, body: impl FnOnce() -> T, fallback: impl FnOnce() -> T, last: T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log(
                LOG_LEVEL_ERROR,
                &format!("panic in {hook} (failed closed): {why}"),
            );
            catch_unwind(AssertUnwindSafe(fallback)).unwrap_or(last)
        }
    }
}

/// The stream's 503, sent from a hook that panicked.
fn fail_closed(filter: FilterEnvoyPtr, hook: &str) {
    let deny = unavailable_deny(&format!("the gateway failed in {hook}"));
    refuse(&EnvoyHost { filter }, &deny);
}

/// Envoy's log, under its `[dynamic_modules]` logger.
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: callable from any thread; the buffer outlives the call.
    unsafe {
        if envoy_dynamic_module_callback_log_enabled(level) {
            envoy_dynamic_module_callback_log(level, buffer(message.as_bytes()));
        }
    }
}

fn buffer(bytes: &[u8]) -> ModuleBuffer {
    ModuleBuffer {
        ptr: bytes.as_ptr(),
        length: bytes.len(),
    }
}

/// # Safety
/// `ptr` is null with `len` 0, or valid for `len` bytes for the returned lifetime.
unsafe fn slice<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// One stream's callbacks. Only used on its worker thread, inside one of its hooks.
struct EnvoyHost {
    filter: FilterEnvoyPtr,
}

impl Host for EnvoyHost {
    fn request_headers(&self) -> Headers {
        // SAFETY: the stream's own pointer, on its worker, inside a hook; `raw` has room for
        // the size Envoy reported and is read only as far as Envoy filled it.
        unsafe {
            let n = envoy_dynamic_module_callback_http_get_headers_size(
                self.filter,
                HTTP_HEADER_TYPE_REQUEST_HEADER,
            );
            let mut raw: Vec<EnvoyHttpHeader> = Vec::with_capacity(n);
            if n == 0
                || !envoy_dynamic_module_callback_http_get_headers(
                    self.filter,
                    HTTP_HEADER_TYPE_REQUEST_HEADER,
                    raw.as_mut_ptr(),
                )
            {
                return Headers::default();
            }
            raw.set_len(n);
            let bytes = raw.iter().map(|h| h.key_length + h.value_length).sum();
            let mut headers = Headers::with_capacity(n, bytes);
            for h in &raw {
                headers.push(
                    slice(h.key_ptr, h.key_length),
                    slice(h.value_ptr, h.value_length),
                );
            }
            headers
        }
    }

    fn set_header(&self, name: &str, value: &str) -> bool {
        // Envoy removes a header set to "": say so rather than write nothing by accident.
        if value.is_empty() {
            return self.remove_header(name.as_bytes());
        }
        // SAFETY: as for request_headers; the buffers outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.filter,
                HTTP_HEADER_TYPE_REQUEST_HEADER,
                buffer(name.as_bytes()),
                buffer(value.as_bytes()),
            )
        }
    }

    fn remove_header(&self, name: &[u8]) -> bool {
        // SAFETY: as for set_header; a null value removes.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.filter,
                HTTP_HEADER_TYPE_REQUEST_HEADER,
                buffer(name),
                ModuleBuffer {
                    ptr: std::ptr::null(),
                    length: 0,
                },
            )
        }
    }

    fn set_destination(&self, destination: &str) -> bool {
        // SAFETY: as for set_header.
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_typed(
                self.filter,
                buffer(b"envoy.network.transport_socket.original_dst_address"),
                buffer(destination.as_bytes()),
            )
        }
    }

    fn clear_route_cache(&self) {
        // SAFETY: as for set_header.
        unsafe { envoy_dynamic_module_callback_http_clear_route_cache(self.filter) }
    }

    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8], details: &str) {
        let mut raw: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader {
                key_ptr: k.as_ptr(),
                key_length: k.len(),
                value_ptr: v.as_ptr(),
                value_length: v.len(),
            })
            .collect();
        // SAFETY: as for set_header; Envoy only reads the headers.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.filter,
                u32::from(status),
                raw.as_mut_ptr(),
                raw.len(),
                buffer(body),
                buffer(details.as_bytes()),
            )
        }
    }

    fn continue_decoding(&self) {
        // SAFETY: as for set_header.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.filter) }
    }

    fn source_address(&self) -> Option<String> {
        let mut out = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        // SAFETY: as for set_header; `out` points into Envoy's memory for this hook and is
        // copied before it returns.
        unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.filter,
                ATTRIBUTE_ID_SOURCE_ADDRESS,
                &mut out,
            )
            .then(|| String::from_utf8(slice(out.ptr, out.length).to_vec()).ok())
            .flatten()
        }
    }

    fn waker(&self) -> Option<Box<dyn Wake>> {
        // SAFETY: as for set_header (the worker, inside a hook).
        let scheduler =
            unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.filter) };
        (!scheduler.is_null()).then(|| Box::new(Scheduler(scheduler)) as Box<dyn Wake>)
    }
}

/// Envoy's scheduler for one stream, owned by the task that decides it: committed once from
/// the runtime, deleted with it. A commit after the stream ended does nothing (the scheduler
/// holds the stream weakly).
struct Scheduler(FilterSchedulerPtr);

// SAFETY: commit and delete may be called from any thread, never concurrently on one
// scheduler: this owner is the only one and is used by one thread at a time.
unsafe impl Send for Scheduler {}

impl Wake for Scheduler {
    fn wake(self: Box<Self>) {
        // SAFETY: not yet deleted (Drop deletes it, after this).
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(self.0, 0) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: deleted exactly once, here.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(self.0) }
    }
}

/// A filter configuration: the process's gateway (none for `noop`) and how to fail.
struct FilterConfig {
    embedded: Option<&'static Embedded>,
    fail_closed: bool,
    noop: bool,
}

/// One stream's object: its filter and, in the panic test's build, the hook a request asked to
/// panic in (read with the request's headers, which later hooks cannot see).
struct Stream {
    filter: Filter,
    #[cfg(feature = "forced-panic")]
    panic_in: Option<String>,
}

impl Stream {
    fn new(filter: Filter) -> Stream {
        Stream {
            filter,
            #[cfg(feature = "forced-panic")]
            panic_in: None,
        }
    }
}

/// # Safety
/// `module` is a pointer [`envoy_dynamic_module_on_http_filter_new`] returned and Envoy has
/// not destroyed yet; Envoy calls a stream's hooks on one thread, one at a time.
unsafe fn stream<'a>(module: FilterModulePtr) -> Option<&'a mut Stream> {
    // SAFETY: the caller's promise.
    unsafe { (module as *mut Stream).as_mut() }
}

/// The panic test's build: panics in `hook` when the stream's request asked for it
/// (`x-sandgate-panic: <hook>`).
#[cfg(feature = "forced-panic")]
fn forced_panic(host: &EnvoyHost, stream: Option<&mut Stream>, hook: &str) {
    let Some(stream) = stream else { return };
    if hook == "request_headers" {
        stream.panic_in = host
            .request_headers()
            .pairs()
            .iter()
            .find(|(k, _)| *k == b"x-sandgate-panic")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    }
    if stream.panic_in.as_deref() == Some(hook) {
        #[allow(clippy::panic)]
        {
            panic!("forced in {hook} (x-sandgate-panic)");
        }
    }
}

#[cfg(not(feature = "forced-panic"))]
fn forced_panic(_: &EnvoyHost, _: Option<&mut Stream>, _: &str) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> AbiVersionModulePtr {
    guard(
        "on_program_init",
        || {
            crate::logs::init();
            ABI_VERSION.as_ptr()
        },
        || ABI_VERSION.as_ptr(),
        ABI_VERSION.as_ptr(),
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _config_envoy: FilterConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> FilterConfigModulePtr {
    guard(
        "on_http_filter_config_new",
        || {
            // SAFETY: Envoy's buffer, valid during this call.
            let raw = unsafe { slice(config.ptr, config.length) };
            let made = ModuleConfig::parse(raw).and_then(|c| {
                let embedded = if c.noop {
                    None
                } else {
                    embedded::start(&c.args, c.runtime_threads)?
                };
                Ok(FilterConfig {
                    embedded,
                    fail_closed: c.fail_closed,
                    noop: c.noop,
                })
            });
            match made {
                Ok(config) => Box::into_raw(Box::new(config)) as FilterConfigModulePtr,
                // Null refuses the configuration: better than running without a gateway.
                Err(e) => {
                    log(LOG_LEVEL_ERROR, &format!("sandgate: {e}"));
                    std::ptr::null()
                }
            }
        },
        std::ptr::null,
        std::ptr::null(),
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    config: FilterConfigModulePtr,
) {
    guard(
        "on_http_filter_config_destroy",
        || {
            if !config.is_null() {
                // SAFETY: made by config_new with Box::into_raw, destroyed once.
                drop(unsafe { Box::from_raw(config as *mut FilterConfig) });
            }
        },
        || {},
        (),
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: FilterConfigModulePtr,
    _filter_envoy: FilterEnvoyPtr,
) -> FilterModulePtr {
    let new = |config: Option<&FilterConfig>| {
        let filter = match config {
            Some(c) => Filter::new(c.embedded, c.fail_closed, c.noop),
            None => Filter::new(None, true, false),
        };
        Box::into_raw(Box::new(Stream::new(filter))) as FilterModulePtr
    };
    guard(
        "on_http_filter_new",
        // SAFETY: Envoy's configuration pointer, alive while its filters are.
        || new(unsafe { (config as *const FilterConfig).as_ref() }),
        // A filter that refuses every request.
        || new(None),
        std::ptr::null(),
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(module: FilterModulePtr) {
    guard(
        "on_http_filter_destroy",
        || {
            if !module.is_null() {
                // SAFETY: made by filter_new with Box::into_raw, destroyed once, last.
                drop(unsafe { Box::from_raw(module as *mut Stream) });
            }
        },
        || {},
        (),
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: FilterEnvoyPtr,
    module: FilterModulePtr,
    _end_of_stream: bool,
) -> RequestHeadersStatus {
    guard(
        "on_http_filter_request_headers",
        || {
            let host = EnvoyHost {
                filter: filter_envoy,
            };
            // SAFETY: Envoy's per-stream pointer, in one of its hooks.
            let mut stream = unsafe { stream(module) };
            forced_panic(&host, stream.as_deref_mut(), "request_headers");
            let flow = match stream {
                Some(s) => s.filter.on_request_headers(&host),
                None => refuse(&host, &unavailable_deny("no filter for this stream")),
            };
            match flow {
                Flow::Continue => REQUEST_HEADERS_STATUS_CONTINUE,
                Flow::Stop => REQUEST_HEADERS_STATUS_STOP_ITERATION,
            }
        },
        || {
            fail_closed(filter_envoy, "request_headers");
            REQUEST_HEADERS_STATUS_STOP_ITERATION
        },
        REQUEST_HEADERS_STATUS_STOP_ITERATION,
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    filter_envoy: FilterEnvoyPtr,
    module: FilterModulePtr,
    _event: u64,
) {
    guard(
        "on_http_filter_scheduled",
        || {
            // SAFETY: Envoy's per-stream pointer, in one of its hooks.
            if let Some(s) = unsafe { stream(module) } {
                s.filter.on_scheduled(&EnvoyHost {
                    filter: filter_envoy,
                });
            }
        },
        || fail_closed(filter_envoy, "scheduled"),
        (),
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: FilterEnvoyPtr,
    module: FilterModulePtr,
    _end_of_stream: bool,
) -> ResponseHeadersStatus {
    guard(
        "on_http_filter_response_headers",
        || {
            forced_panic(
                &EnvoyHost {
                    filter: filter_envoy,
                },
                // SAFETY: Envoy's per-stream pointer, in one of its hooks.
                unsafe { stream(module) },
                "response_headers",
            );
            RESPONSE_HEADERS_STATUS_CONTINUE
        },
        // Before the response starts a local reply replaces it.
        || {
            fail_closed(filter_envoy, "response_headers");
            RESPONSE_HEADERS_STATUS_STOP_ITERATION
        },
        RESPONSE_HEADERS_STATUS_STOP_ITERATION,
    )
}

/// Hooks the filter has no use for: the stream goes on. Guarded like the others.
macro_rules! pass {
    ($($name:ident($($arg:ty),*) -> $ret:ty = $value:expr;)*) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($(_: $arg),*) -> $ret {
            guard(stringify!($name), || $value, || $value, $value)
        }
    )*};
}

pass! {
    envoy_dynamic_module_on_http_filter_stream_complete(FilterEnvoyPtr, FilterModulePtr) -> () = ();
    envoy_dynamic_module_on_http_filter_request_body(FilterEnvoyPtr, FilterModulePtr, bool)
        -> RequestBodyStatus = REQUEST_BODY_STATUS_CONTINUE;
    envoy_dynamic_module_on_http_filter_request_trailers(FilterEnvoyPtr, FilterModulePtr)
        -> RequestTrailersStatus = REQUEST_TRAILERS_STATUS_CONTINUE;
    envoy_dynamic_module_on_http_filter_response_body(FilterEnvoyPtr, FilterModulePtr, bool)
        -> ResponseBodyStatus = RESPONSE_BODY_STATUS_CONTINUE;
    envoy_dynamic_module_on_http_filter_response_trailers(FilterEnvoyPtr, FilterModulePtr)
        -> ResponseTrailersStatus = RESPONSE_TRAILERS_STATUS_CONTINUE;
    envoy_dynamic_module_on_http_filter_http_callout_done(
        FilterEnvoyPtr, FilterModulePtr, u64, HttpCalloutResult, *mut EnvoyHttpHeader, usize,
        *mut EnvoyBuffer, usize) -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_headers(
        FilterEnvoyPtr, FilterModulePtr, u64, *mut EnvoyHttpHeader, usize, bool) -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_data(
        FilterEnvoyPtr, FilterModulePtr, u64, *const EnvoyBuffer, usize, bool) -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_trailers(
        FilterEnvoyPtr, FilterModulePtr, u64, *mut EnvoyHttpHeader, usize) -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_complete(FilterEnvoyPtr, FilterModulePtr, u64)
        -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_reset(
        FilterEnvoyPtr, FilterModulePtr, u64, HttpStreamResetReason) -> () = ();
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
        FilterEnvoyPtr, FilterModulePtr) -> () = ();
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
        FilterEnvoyPtr, FilterModulePtr) -> () = ();
}

// The exports have exactly the signatures abi.rs declares for them: a change on either side
// fails the build, never the process.
const _: OnProgramInit = envoy_dynamic_module_on_program_init;
const _: OnHttpFilterConfigNew = envoy_dynamic_module_on_http_filter_config_new;
const _: OnHttpFilterConfigDestroy = envoy_dynamic_module_on_http_filter_config_destroy;
const _: OnHttpFilterNew = envoy_dynamic_module_on_http_filter_new;
const _: OnHttpFilterDestroy = envoy_dynamic_module_on_http_filter_destroy;
const _: OnHttpFilterStreamComplete = envoy_dynamic_module_on_http_filter_stream_complete;
const _: OnHttpFilterRequestHeaders = envoy_dynamic_module_on_http_filter_request_headers;
const _: OnHttpFilterRequestBody = envoy_dynamic_module_on_http_filter_request_body;
const _: OnHttpFilterRequestTrailers = envoy_dynamic_module_on_http_filter_request_trailers;
const _: OnHttpFilterResponseHeaders = envoy_dynamic_module_on_http_filter_response_headers;
const _: OnHttpFilterResponseBody = envoy_dynamic_module_on_http_filter_response_body;
const _: OnHttpFilterResponseTrailers = envoy_dynamic_module_on_http_filter_response_trailers;
const _: OnHttpFilterHttpCalloutDone = envoy_dynamic_module_on_http_filter_http_callout_done;
const _: OnHttpFilterHttpStreamHeaders = envoy_dynamic_module_on_http_filter_http_stream_headers;
const _: OnHttpFilterHttpStreamData = envoy_dynamic_module_on_http_filter_http_stream_data;
const _: OnHttpFilterHttpStreamTrailers = envoy_dynamic_module_on_http_filter_http_stream_trailers;
const _: OnHttpFilterHttpStreamComplete = envoy_dynamic_module_on_http_filter_http_stream_complete;
const _: OnHttpFilterHttpStreamReset = envoy_dynamic_module_on_http_filter_http_stream_reset;
const _: OnHttpFilterScheduled = envoy_dynamic_module_on_http_filter_scheduled;
const _: OnHttpFilterDownstreamAboveWriteBufferHighWatermark =
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark;
const _: OnHttpFilterDownstreamBelowWriteBufferLowWatermark =
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark;
