//! The declared subset of Envoy's dynamic-module C ABI, as shipped by Envoy 1.40
//! (ABI version string `"v0.2.0"`).
//!
//! This module owns every FFI declaration of the crate: the `#[repr(C)]` types, the
//! enum values, the Envoy callbacks the module imports (`envoy_dynamic_module_callback_*`),
//! and the exact signatures of the event hooks the module exports
//! (`envoy_dynamic_module_on_*`, as function-pointer type aliases). Nothing else in the
//! crate may declare FFI; the rest of the crate goes through what is declared here.
//!
//! It was written by hand from the documentation in Envoy's
//! `source/extensions/dynamic_modules/abi/abi.h`. That header promises that the `v0.1.y`
//! declarations are compatible with `v0.2.x`, which is what Envoy 1.40 reports. Every
//! callback declared below was checked to be exported by the 1.40 release binary
//! (`nm -D --defined-only envoy`), and each was called once from a probe module, built
//! against these declarations and the hook aliases, inside that binary.
//!
//! Envoy does not refuse a module whose ABI version string differs (it only warns), and a
//! changed signature is not detected at load time: it is silent undefined behaviour. So
//! **every Envoy minor upgrade must re-verify this file** against that release's `abi.h`
//! and binary, declaration by declaration.
//!
//! Conventions:
//! * C `const char*` buffer pointers are declared as `*const u8` (same size and ABI).
//! * C enums are `int`-sized. Every enum crossing the boundary is declared as a plain
//!   `u32` alias plus `pub const` values, never as a Rust `enum`, so that a value this
//!   file does not know (from a newer Envoy) can never be undefined behaviour.
//! * C `bool` is Rust `bool` (`_Bool`), C `size_t` is `usize`.

use core::ffi::{CStr, c_char, c_void};

/// The ABI version string returned from `envoy_dynamic_module_on_program_init`.
/// Envoy 1.40 expects exactly this; any other string only logs a warning.
pub const ABI_VERSION: &CStr = c"v0.2.0";

// ============================================================================
// Buffers and headers
// ============================================================================

/// `envoy_dynamic_module_type_envoy_buffer`: a byte range owned by Envoy.
///
/// How long it stays valid depends on the callback that produced it (usually until the end
/// of the current event hook, or until a setter callback is called). `ptr` may be null
/// when `length` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnvoyBuffer {
    /// `const char* ptr`.
    pub ptr: *const u8,
    /// `size_t length`.
    pub length: usize,
}

/// `envoy_dynamic_module_type_module_buffer`: a byte range owned by the module. It only
/// has to stay valid for the duration of the callback it is passed to.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleBuffer {
    /// `const char* ptr`.
    pub ptr: *const u8,
    /// `size_t length`.
    pub length: usize,
}

/// `envoy_dynamic_module_type_envoy_http_header`: one header entry pointing into Envoy's
/// header map (no copy). Valid until the end of the current event hook unless a setter
/// callback changes the map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnvoyHttpHeader {
    /// `const char* key_ptr`.
    pub key_ptr: *const u8,
    /// `size_t key_length`.
    pub key_length: usize,
    /// `const char* value_ptr`.
    pub value_ptr: *const u8,
    /// `size_t value_length`.
    pub value_length: usize,
}

/// `envoy_dynamic_module_type_module_http_header`: one header entry owned by the module.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleHttpHeader {
    /// `const char* key_ptr`.
    pub key_ptr: *const u8,
    /// `size_t key_length`.
    pub key_length: usize,
    /// `const char* value_ptr`.
    pub value_ptr: *const u8,
    /// `size_t value_length`.
    pub value_length: usize,
}

// ============================================================================
// Opaque pointers
// ============================================================================

/// `envoy_dynamic_module_type_abi_version_module_ptr` (`const char*`): a NUL-terminated
/// string owned by the module, valid at least until `on_program_init` returns.
pub type AbiVersionModulePtr = *const c_char;

/// `envoy_dynamic_module_type_http_filter_config_envoy_ptr` (`void*`): Envoy's
/// `DynamicModuleHttpFilterConfig`. Owned by Envoy.
pub type FilterConfigEnvoyPtr = *mut c_void;

/// `envoy_dynamic_module_type_http_filter_config_module_ptr` (`const void*`).
///
/// The module's per-configuration object, returned by `on_http_filter_config_new` and
/// released in `on_http_filter_config_destroy`. Null from `config_new` rejects the
/// configuration.
pub type FilterConfigModulePtr = *const c_void;

/// `envoy_dynamic_module_type_http_filter_envoy_ptr` (`void*`).
///
/// Envoy's `DynamicModuleHttpFilter` for one HTTP stream. Owned by Envoy; usable by the
/// module only until `on_http_filter_destroy` is called, and only on that stream's worker
/// thread.
pub type FilterEnvoyPtr = *mut c_void;

/// `envoy_dynamic_module_type_http_filter_module_ptr` (`const void*`): the module's
/// per-stream object, returned by `on_http_filter_new` and released in
/// `on_http_filter_destroy`.
pub type FilterModulePtr = *const c_void;

/// `envoy_dynamic_module_type_http_filter_scheduler_module_ptr` (`void*`).
///
/// Envoy's `DynamicModuleHttpFilterScheduler`. Allocated by Envoy in `scheduler_new`, but
/// its lifetime is the module's: it must be freed with `scheduler_delete` exactly once.
pub type FilterSchedulerPtr = *mut c_void;

// ============================================================================
// Enums (C enums are int-sized; declared as u32 + constants)
// ============================================================================

/// `envoy_dynamic_module_type_http_header_type`: which header map a header callback uses.
pub type HttpHeaderType = u32;
/// The request headers.
pub const HTTP_HEADER_TYPE_REQUEST_HEADER: HttpHeaderType = 0;
/// The request trailers.
pub const HTTP_HEADER_TYPE_REQUEST_TRAILER: HttpHeaderType = 1;
/// The response headers.
pub const HTTP_HEADER_TYPE_RESPONSE_HEADER: HttpHeaderType = 2;
/// The response trailers.
pub const HTTP_HEADER_TYPE_RESPONSE_TRAILER: HttpHeaderType = 3;

/// `envoy_dynamic_module_type_log_level`, the level passed to `callback_log`
/// (mirrors Envoy's `spdlog` levels).
pub type LogLevel = u32;
/// Trace.
pub const LOG_LEVEL_TRACE: LogLevel = 0;
/// Debug.
pub const LOG_LEVEL_DEBUG: LogLevel = 1;
/// Info.
pub const LOG_LEVEL_INFO: LogLevel = 2;
/// Warn.
pub const LOG_LEVEL_WARN: LogLevel = 3;
/// Error.
pub const LOG_LEVEL_ERROR: LogLevel = 4;
/// Critical.
pub const LOG_LEVEL_CRITICAL: LogLevel = 5;
/// Off.
pub const LOG_LEVEL_OFF: LogLevel = 6;

/// `envoy_dynamic_module_type_attribute_id`, the attribute read by
/// `callback_http_filter_get_attribute_string`. Only the value used is declared.
pub type AttributeId = u32;
/// `source.address`: ordinal 24 of the header's enum (no explicit initialisers; preceded
/// by the 15 `request.*` attributes, 0–14, and the 9 `response.*` attributes, 15–23).
///
/// For the HTTP filter, Envoy 1.40 answers with the downstream remote address as
/// `Address::asStringView()`, i.e. address *and port*: `"1.2.3.4:5678"`, `"[::1]:5678"`.
/// (Observed on 1.40: `"127.0.0.1:58320"`.) That is the remote address after Envoy's XFF /
/// original-IP processing, not necessarily the peer socket address. The buffer points
/// into Envoy's address object.
pub const ATTRIBUTE_ID_SOURCE_ADDRESS: AttributeId = 24;

/// `envoy_dynamic_module_type_on_http_filter_request_headers_status` (Envoy's
/// `FilterHeadersStatus`), returned by `on_http_filter_request_headers`.
pub type RequestHeadersStatus = u32;
/// Continue the filter chain.
pub const REQUEST_HEADERS_STATUS_CONTINUE: RequestHeadersStatus = 0;
/// Stop here; resume later with `callback_http_filter_continue_decoding`.
pub const REQUEST_HEADERS_STATUS_STOP_ITERATION: RequestHeadersStatus = 1;
/// Continue, but do not end the stream even if the headers had end-of-stream.
pub const REQUEST_HEADERS_STATUS_CONTINUE_AND_DONT_END_STREAM: RequestHeadersStatus = 2;
/// Stop iteration of all frames, buffering the body.
pub const REQUEST_HEADERS_STATUS_STOP_ALL_ITERATION_AND_BUFFER: RequestHeadersStatus = 3;
/// Stop iteration of all frames, buffering the body up to the watermark.
pub const REQUEST_HEADERS_STATUS_STOP_ALL_ITERATION_AND_WATERMARK: RequestHeadersStatus = 4;

/// `envoy_dynamic_module_type_on_http_filter_request_body_status` (Envoy's
/// `FilterDataStatus`), returned by `on_http_filter_request_body`.
///
/// Values: `Continue` = 0, `StopIterationAndBuffer` = 1, `StopIterationAndWatermark` = 2,
/// `StopIterationNoBuffer` = 3.
pub type RequestBodyStatus = u32;
/// Continue the filter chain.
pub const REQUEST_BODY_STATUS_CONTINUE: RequestBodyStatus = 0;

/// `envoy_dynamic_module_type_on_http_filter_request_trailers_status` (Envoy's
/// `FilterTrailersStatus`), returned by `on_http_filter_request_trailers`.
///
/// Values: `Continue` = 0, `StopIteration` = 1.
pub type RequestTrailersStatus = u32;
/// Continue the filter chain.
pub const REQUEST_TRAILERS_STATUS_CONTINUE: RequestTrailersStatus = 0;

/// `envoy_dynamic_module_type_on_http_filter_response_headers_status` (Envoy's
/// `FilterHeadersStatus`), returned by `on_http_filter_response_headers`.
///
/// Values as for [`RequestHeadersStatus`]: `Continue` = 0, `StopIteration` = 1,
/// `ContinueAndDontEndStream` = 2, `StopAllIterationAndBuffer` = 3,
/// `StopAllIterationAndWatermark` = 4.
pub type ResponseHeadersStatus = u32;
/// Continue the filter chain.
pub const RESPONSE_HEADERS_STATUS_CONTINUE: ResponseHeadersStatus = 0;
/// Stop the chain here (a local reply was sent).
pub const RESPONSE_HEADERS_STATUS_STOP_ITERATION: ResponseHeadersStatus = 1;

/// `envoy_dynamic_module_type_on_http_filter_response_body_status` (Envoy's
/// `FilterDataStatus`), returned by `on_http_filter_response_body`.
///
/// Values as for [`RequestBodyStatus`].
pub type ResponseBodyStatus = u32;
/// Continue the filter chain.
pub const RESPONSE_BODY_STATUS_CONTINUE: ResponseBodyStatus = 0;

/// `envoy_dynamic_module_type_on_http_filter_response_trailers_status` (Envoy's
/// `FilterTrailersStatus`), returned by `on_http_filter_response_trailers`.
///
/// Values: `Continue` = 0, `StopIteration` = 1.
pub type ResponseTrailersStatus = u32;
/// Continue the filter chain.
pub const RESPONSE_TRAILERS_STATUS_CONTINUE: ResponseTrailersStatus = 0;

/// `envoy_dynamic_module_type_http_callout_result`, passed by Envoy to
/// `on_http_filter_http_callout_done` (Envoy's `AsyncClient::FailureReason` plus Success).
pub type HttpCalloutResult = u32;
/// The callout got a response.
pub const HTTP_CALLOUT_RESULT_SUCCESS: HttpCalloutResult = 0;
/// The callout stream was reset.
pub const HTTP_CALLOUT_RESULT_RESET: HttpCalloutResult = 1;
/// The response exceeded the buffer limit.
pub const HTTP_CALLOUT_RESULT_EXCEED_RESPONSE_BUFFER_LIMIT: HttpCalloutResult = 2;

/// `envoy_dynamic_module_type_http_stream_reset_reason`, passed by Envoy to
/// `on_http_filter_http_stream_reset` (Envoy's `AsyncClient::StreamResetReason`).
///
/// Values: `ConnectionFailure` = 0, `ConnectionTermination` = 1, `LocalReset` = 2,
/// `LocalRefusedStreamReset` = 3, `Overflow` = 4, `RemoteReset` = 5,
/// `RemoteRefusedStreamReset` = 6, `ProtocolError` = 7.
pub type HttpStreamResetReason = u32;

// ============================================================================
// Event hooks the module exports (exact signatures)
// ============================================================================
//
// The implementing crate asserts each export against its alias at compile time:
// `const _: OnHttpFilterNew = envoy_dynamic_module_on_http_filter_new;`.
// Envoy 1.40 rejects the configuration if any of these symbols is missing.

/// `envoy_dynamic_module_on_program_init(void) -> abi_version_module_ptr`.
///
/// Called once per process on the main thread when the module is loaded. Returns
/// [`ABI_VERSION`]; null unloads the module and fails the configuration.
pub type OnProgramInit = unsafe extern "C" fn() -> AbiVersionModulePtr;

/// `envoy_dynamic_module_on_http_filter_config_new(filter_config_envoy_ptr,
/// envoy_buffer name, envoy_buffer config) -> http_filter_config_module_ptr`.
///
/// Main thread. `name` is `filter_name`, `config` is `filter_config` (a `StringValue` or
/// `BytesValue` raw, a `Struct` as JSON); both are valid only during the call. Returning
/// null rejects the configuration.
pub type OnHttpFilterConfigNew =
    unsafe extern "C" fn(FilterConfigEnvoyPtr, EnvoyBuffer, EnvoyBuffer) -> FilterConfigModulePtr;

/// `envoy_dynamic_module_on_http_filter_config_destroy(http_filter_config_module_ptr)`.
pub type OnHttpFilterConfigDestroy = unsafe extern "C" fn(FilterConfigModulePtr);

/// `envoy_dynamic_module_on_http_filter_new(http_filter_config_module_ptr,
/// http_filter_envoy_ptr) -> http_filter_module_ptr`.
///
/// Worker thread, once per stream. Returning null closes the stream.
pub type OnHttpFilterNew =
    unsafe extern "C" fn(FilterConfigModulePtr, FilterEnvoyPtr) -> FilterModulePtr;

/// `envoy_dynamic_module_on_http_filter_destroy(http_filter_module_ptr)`.
///
/// The last hook of a stream; the module frees its per-stream object here. After it,
/// the stream's [`FilterEnvoyPtr`] must not be used again.
pub type OnHttpFilterDestroy = unsafe extern "C" fn(FilterModulePtr);

/// `envoy_dynamic_module_on_http_filter_stream_complete(filter_envoy_ptr,
/// filter_module_ptr)`: called before `destroy` and before access logs are flushed.
pub type OnHttpFilterStreamComplete = unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr);

/// `envoy_dynamic_module_on_http_filter_request_headers(filter_envoy_ptr,
/// filter_module_ptr, bool end_of_stream) -> request_headers_status`.
pub type OnHttpFilterRequestHeaders =
    unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr, bool) -> RequestHeadersStatus;

/// `envoy_dynamic_module_on_http_filter_request_body(filter_envoy_ptr,
/// filter_module_ptr, bool end_of_stream) -> request_body_status`.
pub type OnHttpFilterRequestBody =
    unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr, bool) -> RequestBodyStatus;

/// `envoy_dynamic_module_on_http_filter_request_trailers(filter_envoy_ptr,
/// filter_module_ptr) -> request_trailers_status`.
pub type OnHttpFilterRequestTrailers =
    unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr) -> RequestTrailersStatus;

/// `envoy_dynamic_module_on_http_filter_response_headers(filter_envoy_ptr,
/// filter_module_ptr, bool end_of_stream) -> response_headers_status`.
pub type OnHttpFilterResponseHeaders =
    unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr, bool) -> ResponseHeadersStatus;

/// `envoy_dynamic_module_on_http_filter_response_body(filter_envoy_ptr,
/// filter_module_ptr, bool end_of_stream) -> response_body_status`.
pub type OnHttpFilterResponseBody =
    unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr, bool) -> ResponseBodyStatus;

/// `envoy_dynamic_module_on_http_filter_response_trailers(filter_envoy_ptr,
/// filter_module_ptr) -> response_trailers_status`.
pub type OnHttpFilterResponseTrailers =
    unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr) -> ResponseTrailersStatus;

/// Hook `envoy_dynamic_module_on_http_filter_http_callout_done`:
///
/// ```c
/// void envoy_dynamic_module_on_http_filter_http_callout_done(
///     http_filter_envoy_ptr filter_envoy_ptr, http_filter_module_ptr filter_module_ptr,
///     uint64_t callout_id, http_callout_result result, envoy_http_header* headers,
///     size_t headers_size, envoy_buffer* body_chunks, size_t body_chunks_size);
/// ```
///
/// `headers` and `body_chunks` are owned by Envoy, valid until the hook returns, and may
/// be null (failure or empty response).
pub type OnHttpFilterHttpCalloutDone = unsafe extern "C" fn(
    FilterEnvoyPtr,
    FilterModulePtr,
    u64,
    HttpCalloutResult,
    *mut EnvoyHttpHeader,
    usize,
    *mut EnvoyBuffer,
    usize,
);

/// `envoy_dynamic_module_on_http_filter_http_stream_headers(filter_envoy_ptr,
/// filter_module_ptr, uint64_t stream_id, envoy_http_header* headers,
/// size_t headers_size, bool end_stream)`.
pub type OnHttpFilterHttpStreamHeaders =
    unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr, u64, *mut EnvoyHttpHeader, usize, bool);

/// `envoy_dynamic_module_on_http_filter_http_stream_data(filter_envoy_ptr,
/// filter_module_ptr, uint64_t stream_id, const envoy_buffer* data, size_t data_count,
/// bool end_stream)`.
pub type OnHttpFilterHttpStreamData =
    unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr, u64, *const EnvoyBuffer, usize, bool);

/// `envoy_dynamic_module_on_http_filter_http_stream_trailers(filter_envoy_ptr,
/// filter_module_ptr, uint64_t stream_id, envoy_http_header* trailers,
/// size_t trailers_size)`.
pub type OnHttpFilterHttpStreamTrailers =
    unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr, u64, *mut EnvoyHttpHeader, usize);

/// `envoy_dynamic_module_on_http_filter_http_stream_complete(filter_envoy_ptr,
/// filter_module_ptr, uint64_t stream_id)`.
pub type OnHttpFilterHttpStreamComplete =
    unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr, u64);

/// `envoy_dynamic_module_on_http_filter_http_stream_reset(filter_envoy_ptr,
/// filter_module_ptr, uint64_t stream_id, http_stream_reset_reason reason)`.
pub type OnHttpFilterHttpStreamReset =
    unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr, u64, HttpStreamResetReason);

/// `envoy_dynamic_module_on_http_filter_scheduled(filter_envoy_ptr, filter_module_ptr,
/// uint64_t event_id)`.
///
/// Runs on the stream's worker thread for each `callback_http_filter_scheduler_commit`,
/// with the `event_id` that was committed, and only while the module's per-stream object
/// still exists (Envoy skips it once `on_http_filter_destroy` has run).
pub type OnHttpFilterScheduled = unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr, u64);

/// `envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
/// filter_envoy_ptr, filter_module_ptr)`.
pub type OnHttpFilterDownstreamAboveWriteBufferHighWatermark =
    unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr);

/// `envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
/// filter_envoy_ptr, filter_module_ptr)`.
pub type OnHttpFilterDownstreamBelowWriteBufferLowWatermark =
    unsafe extern "C" fn(FilterEnvoyPtr, FilterModulePtr);

// ============================================================================
// Callbacks Envoy exports (imported by the module)
// ============================================================================
//
// Unless stated otherwise, a callback taking a `FilterEnvoyPtr` must be called on that
// stream's worker thread, between `on_http_filter_new` and `on_http_filter_destroy`.

unsafe extern "C" {
    /// `size_t envoy_dynamic_module_callback_http_get_headers_size(
    /// http_filter_envoy_ptr filter_envoy_ptr, http_header_type header_type)`.
    ///
    /// Number of entries in the map (a repeated key counts once per value); 0 if the map
    /// is not available in the current phase.
    pub unsafe fn envoy_dynamic_module_callback_http_get_headers_size(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: HttpHeaderType,
    ) -> usize;

    /// `bool envoy_dynamic_module_callback_http_get_headers(
    /// http_filter_envoy_ptr filter_envoy_ptr, http_header_type header_type,
    /// envoy_http_header* result_headers)`.
    ///
    /// Fills `result_headers`, which must have room for `get_headers_size` entries, with
    /// pointers into Envoy's map (no copy). False if the map is not available.
    pub unsafe fn envoy_dynamic_module_callback_http_get_headers(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: HttpHeaderType,
        result_headers: *mut EnvoyHttpHeader,
    ) -> bool;

    /// `bool envoy_dynamic_module_callback_http_get_header(
    /// http_filter_envoy_ptr filter_envoy_ptr, http_header_type header_type,
    /// module_buffer key, envoy_buffer* result_buffer, size_t index,
    /// size_t* optional_size)`.
    ///
    /// The `index`-th value of `key`. `result_buffer` must be non-null; it is set to a
    /// null buffer when the key or index does not exist (and false is returned).
    /// `optional_size` may be null; otherwise it receives the number of values of `key`.
    pub unsafe fn envoy_dynamic_module_callback_http_get_header(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: HttpHeaderType,
        key: ModuleBuffer,
        result_buffer: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;

    /// `bool envoy_dynamic_module_callback_http_set_header(
    /// http_filter_envoy_ptr filter_envoy_ptr, http_header_type header_type,
    /// module_buffer key, module_buffer value)`.
    ///
    /// Replaces all values of `key` with `value` (the key is lower-cased by Envoy).
    ///
    /// **Removal:** the header documents "a null value removes the header". Envoy's
    /// implementation removes `key` when `value.ptr` is null **or `value.length` is 0**,
    /// so a header cannot be set to the empty string through this callback; pass
    /// `ModuleBuffer { ptr: null, length: 0 }` to remove. Returns false only when the
    /// map is not available in the current phase.
    pub unsafe fn envoy_dynamic_module_callback_http_set_header(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: HttpHeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// `bool envoy_dynamic_module_callback_http_set_filter_state_typed(
    /// http_filter_envoy_ptr filter_envoy_ptr, module_buffer key, module_buffer value)`.
    ///
    /// Builds a typed filter-state object through the `ObjectFactory` registered under
    /// `key` (`createFromBytes(value)`), e.g.
    /// `envoy.network.transport_socket.original_dst_address` with `"ip:port"`. False if
    /// there is no stream info, no factory for `key`, the factory rejects `value`, or
    /// `key` already exists read-only.
    pub unsafe fn envoy_dynamic_module_callback_http_set_filter_state_typed(
        filter_envoy_ptr: FilterEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// `void envoy_dynamic_module_callback_http_clear_route_cache(
    /// http_filter_envoy_ptr filter_envoy_ptr)`.
    ///
    /// Clears the stream's route cache so routing is re-evaluated; a no-op in the wrong
    /// phase.
    pub unsafe fn envoy_dynamic_module_callback_http_clear_route_cache(
        filter_envoy_ptr: FilterEnvoyPtr,
    );

    /// `bool envoy_dynamic_module_callback_http_filter_get_attribute_string(
    /// http_filter_envoy_ptr filter_envoy_ptr, attribute_id attribute_id,
    /// envoy_buffer* result)`.
    ///
    /// False if the attribute is not available or not a string. For
    /// [`ATTRIBUTE_ID_SOURCE_ADDRESS`] the result is `"ip:port"` (see there). `result`
    /// points into Envoy memory valid for the current hook.
    pub unsafe fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter_envoy_ptr: FilterEnvoyPtr,
        attribute_id: AttributeId,
        result: *mut EnvoyBuffer,
    ) -> bool;

    /// `void envoy_dynamic_module_callback_http_send_response(
    /// http_filter_envoy_ptr filter_envoy_ptr, uint32_t status_code,
    /// module_http_header* headers_vector, size_t headers_vector_size,
    /// module_buffer body, module_buffer details)`.
    ///
    /// Sends a local reply downstream. `headers_vector` may be null when the size is 0;
    /// `details` (response code details, for logs) is optional and may be a null buffer.
    /// Envoy reads the headers but declares the pointer non-const.
    pub unsafe fn envoy_dynamic_module_callback_http_send_response(
        filter_envoy_ptr: FilterEnvoyPtr,
        status_code: u32,
        headers_vector: *mut ModuleHttpHeader,
        headers_vector_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );

    /// `void envoy_dynamic_module_callback_http_filter_continue_decoding(
    /// http_filter_envoy_ptr filter_envoy_ptr)`.
    ///
    /// Resumes a request stopped by a non-Continue status. Envoy ignores the call when
    /// the stream is already continuing or its decoder callbacks are gone; the pointer
    /// itself must still be live (worker thread, before `on_http_filter_destroy`).
    pub unsafe fn envoy_dynamic_module_callback_http_filter_continue_decoding(
        filter_envoy_ptr: FilterEnvoyPtr,
    );

    /// `http_filter_scheduler_module_ptr envoy_dynamic_module_callback_http_filter_scheduler_new(
    /// http_filter_envoy_ptr filter_envoy_ptr)`.
    ///
    /// **Thread:** the stream's worker thread, from inside an event hook (it reads the
    /// filter's decoder callbacks to get the worker dispatcher). The scheduler holds a
    /// *weak* reference to Envoy's filter plus a reference to the worker dispatcher. The
    /// caller owns the result and must free it with `scheduler_delete` exactly once.
    pub unsafe fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter_envoy_ptr: FilterEnvoyPtr,
    ) -> FilterSchedulerPtr;

    /// `void envoy_dynamic_module_callback_http_filter_scheduler_commit(
    /// http_filter_scheduler_module_ptr scheduler_module_ptr, uint64_t event_id)`.
    ///
    /// **Thread:** any thread. Posts `event_id` to the stream's worker, which later calls
    /// `on_http_filter_scheduled` with it. If the stream is gone by then, nothing happens:
    /// the posted task only holds a weak reference (and Envoy also skips the hook once
    /// `on_http_filter_destroy` has run). So a commit after the stream ended is safe **as
    /// long as the scheduler itself has not been deleted** (commit dereferences it) and the
    /// worker dispatcher still exists: any module thread that may commit must be joined or
    /// quiesced before Envoy's worker shutdown.
    pub unsafe fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler_module_ptr: FilterSchedulerPtr,
        event_id: u64,
    );

    /// `void envoy_dynamic_module_callback_http_filter_scheduler_delete(
    /// http_filter_scheduler_module_ptr scheduler_module_ptr)`.
    ///
    /// **Thread:** any thread (a plain `delete`; it does not touch the filter or the
    /// dispatcher), but not concurrently with a `commit` on the same scheduler, and never
    /// twice. Events already committed are unaffected; it may be called before or after
    /// the stream is destroyed.
    pub unsafe fn envoy_dynamic_module_callback_http_filter_scheduler_delete(
        scheduler_module_ptr: FilterSchedulerPtr,
    );

    /// `void envoy_dynamic_module_callback_log(log_level level, module_buffer message)`.
    ///
    /// Logs under Envoy's `[dynamic_modules]` logger. Any thread.
    pub unsafe fn envoy_dynamic_module_callback_log(level: LogLevel, message: ModuleBuffer);

    /// `bool envoy_dynamic_module_callback_log_enabled(log_level level)`.
    ///
    /// Whether `level` is enabled for the `[dynamic_modules]` logger; cheap, so check it
    /// before formatting a message.
    pub unsafe fn envoy_dynamic_module_callback_log_enabled(level: LogLevel) -> bool;
}
