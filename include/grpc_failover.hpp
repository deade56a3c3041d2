/*
 * grpc_failover.hpp: the C++17 interface of grpc-failover, header-only, over the C ABI of
 * grpc_failover.h (which it includes). Nothing here needs more than the C library: link with
 * `-lgrpc_failover` (pkg-config grpc_failover) as a C program does.
 *
 *     grpc_failover::Client client("etcd:///service/user", R"({"etcd": {"endpoints": ["127.0.0.1:2379"]}})");
 *     grpc_failover::Result r = client.call("/UserService/Echo", request_bytes,
 *                                           grpc_failover::CallOptions().set_timeout(std::chrono::seconds(1)));
 *     use(r.response());
 *
 * Error style. Calls that can fail come in two forms:
 * - the throwing form (`Client` constructor, `call`, `call_async`'s future, `stats`,
 *   `Registration` constructor) throws `grpc_failover::Error`, which carries the `Status` and,
 *   for a call that reached a server, its headers and trailers;
 * - the non-throwing form (`Client::connect`, `try_call`, `call_async` with a callback,
 *   `Registration::create`) reports the `Status` instead and never throws for a gRPC failure.
 * Both may throw `std::bad_alloc` when memory runs out, as the standard library does.
 *
 * Ownership. Every type that owns a library handle is move-only and frees it in its destructor
 * (`Client` closes, `Registration` deregisters, `AsyncCall` frees the call handle, `Result`
 * frees the result). `get()` lends the raw handle to C ABI functions; `release()` hands it over.
 *
 * Threading. A `Client` may be used from any number of threads at once (its call methods are
 * const); moving, assigning or destroying it must not race with a call on it: call `shutdown()`
 * first when other threads may still be calling (grpc_failover.h, `gf_client_shutdown`).
 * Blocking calls (`call`, `try_call`, waiting on a future, `Registration`) must not run on a
 * library thread, i.e. not inside a completion callback: there they fail with
 * FAILED_PRECONDITION (and a future's `get()` there would wait forever). Callbacks run on a
 * library thread and must not throw: an exception escaping one calls `std::terminate`, as an
 * exception escaping a `std::thread`'s function does.
 */
#ifndef GRPC_FAILOVER_HPP
#define GRPC_FAILOVER_HPP

#if !defined(__cplusplus) || (__cplusplus < 201703L && !(defined(_MSVC_LANG) && _MSVC_LANG >= 201703L))
#error "grpc_failover.hpp needs C++17 or later (C programs include grpc_failover.h)"
#endif

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "grpc_failover.h"

namespace grpc_failover {

/** The gRPC status codes, with the values of the GF_* constants. */
enum class StatusCode : int32_t {
    OK = GF_OK,
    CANCELLED = GF_CANCELLED,
    UNKNOWN = GF_UNKNOWN,
    INVALID_ARGUMENT = GF_INVALID_ARGUMENT,
    DEADLINE_EXCEEDED = GF_DEADLINE_EXCEEDED,
    NOT_FOUND = GF_NOT_FOUND,
    ALREADY_EXISTS = GF_ALREADY_EXISTS,
    PERMISSION_DENIED = GF_PERMISSION_DENIED,
    RESOURCE_EXHAUSTED = GF_RESOURCE_EXHAUSTED,
    FAILED_PRECONDITION = GF_FAILED_PRECONDITION,
    ABORTED = GF_ABORTED,
    OUT_OF_RANGE = GF_OUT_OF_RANGE,
    UNIMPLEMENTED = GF_UNIMPLEMENTED,
    INTERNAL = GF_INTERNAL,
    UNAVAILABLE = GF_UNAVAILABLE,
    DATA_LOSS = GF_DATA_LOSS,
    UNAUTHENTICATED = GF_UNAUTHENTICATED,
};

/** The code's name as gRPC spells it ("UNAVAILABLE"); "UNKNOWN_CODE" for a value outside 0..16. */
inline const char *status_code_name(StatusCode code) noexcept
{
    static const char *const names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    const auto i = static_cast<int32_t>(code);
    return i >= 0 && i <= 16 ? names[i] : "UNKNOWN_CODE";
}

/** A gRPC status: a code and a message ("" when OK). A value type. */
class Status {
  public:
    /** OK. */
    Status() = default;
    Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

    StatusCode code() const noexcept { return code_; }
    const std::string &message() const noexcept { return message_; }
    bool ok() const noexcept { return code_ == StatusCode::OK; }
    /** "OK", or "UNAVAILABLE: <message>". */
    std::string to_string() const
    {
        std::string s = status_code_name(code_);
        if (!message_.empty()) {
            s += ": ";
            s += message_;
        }
        return s;
    }

  private:
    StatusCode code_ = StatusCode::OK;
    std::string message_;
};

/** Metadata entries in order; a key may repeat. Values of "-bin" keys are raw bytes. */
using Metadata = std::vector<std::pair<std::string, std::string>>;

namespace detail {

struct ResultFree {
    void operator()(gf_result *r) const noexcept { gf_result_free(r); }
};
struct OptionsFree {
    void operator()(gf_call_options *o) const noexcept { gf_call_options_free(o); }
};

/** Takes an error string of the library's (NULL is fine) and frees it. */
inline std::string take_message(char *err)
{
    std::unique_ptr<char, void (*)(char *)> owned(err, gf_string_free);
    return err ? std::string(err) : std::string();
}

inline Status status_of(int32_t code, char *err)
{
    return Status(static_cast<StatusCode>(code), take_message(err));
}

inline const uint8_t *bytes(std::string_view s) noexcept
{
    return reinterpret_cast<const uint8_t *>(s.data());
}

} // namespace detail

/**
 * The outcome of a call: its status, the response bytes (empty unless OK), the response headers
 * and the trailers (grpc-status and grpc-message are not among them: they are the status).
 * Move-only; owns the library's result and frees it on destruction. Read-only, so any thread
 * may read it.
 */
class Result {
  public:
    /** An OK result with no response (what a default-constructed Result holds). */
    Result() = default;
    /** A result that carries only a status (a call refused before it started). */
    explicit Result(Status status) : status_(std::move(status)) {}
    /** Takes ownership of a `gf_result` (NULL gives INTERNAL). */
    explicit Result(gf_result *result) : handle_(result)
    {
        if (result) {
            status_ = Status(static_cast<StatusCode>(gf_result_code(result)), gf_result_message(result));
        } else {
            status_ = Status(StatusCode::INTERNAL, "grpc_failover: no result");
        }
    }

    const Status &status() const noexcept { return status_; }
    bool ok() const noexcept { return status_.ok(); }

    /** The response bytes, valid while this Result lives (and is not moved from). */
    std::string_view response() const noexcept
    {
        size_t len = 0;
        const uint8_t *data = handle_ ? gf_result_response(handle_.get(), &len) : nullptr;
        return data ? std::string_view(reinterpret_cast<const char *>(data), len) : std::string_view();
    }

    /** The response headers, copied out, in arrival order. */
    Metadata headers() const { return collect(gf_result_header_count, gf_result_header); }
    /** The trailers, copied out, in arrival order. */
    Metadata trailers() const { return collect(gf_result_trailer_count, gf_result_trailer); }
    /** The first header named `key` (lower case), if any; the view lives as long as this Result. */
    std::optional<std::string_view> header(std::string_view key) const
    {
        return find(gf_result_header_count, gf_result_header, key);
    }
    /** The first trailer named `key` (lower case), if any; the view lives as long as this Result. */
    std::optional<std::string_view> trailer(std::string_view key) const
    {
        return find(gf_result_trailer_count, gf_result_trailer, key);
    }

    /** The `gf_result` this Result owns (NULL for a status-only result), lent. */
    const gf_result *get() const noexcept { return handle_.get(); }

  private:
    using Count = size_t (*)(const gf_result *);
    using Entry = int32_t (*)(const gf_result *, size_t, const char **, const uint8_t **, size_t *);

    Metadata collect(Count count, Entry entry) const
    {
        Metadata md;
        const size_t n = handle_ ? count(handle_.get()) : 0;
        md.reserve(n);
        for (size_t i = 0; i < n; i++) {
            const char *key = nullptr;
            const uint8_t *value = nullptr;
            size_t len = 0;
            if (entry(handle_.get(), i, &key, &value, &len) == GF_OK) {
                md.emplace_back(key, std::string(reinterpret_cast<const char *>(value), len));
            }
        }
        return md;
    }

    std::optional<std::string_view> find(Count count, Entry entry, std::string_view want) const
    {
        const size_t n = handle_ ? count(handle_.get()) : 0;
        for (size_t i = 0; i < n; i++) {
            const char *key = nullptr;
            const uint8_t *value = nullptr;
            size_t len = 0;
            if (entry(handle_.get(), i, &key, &value, &len) == GF_OK && want == key) {
                return std::string_view(reinterpret_cast<const char *>(value), len);
            }
        }
        return std::nullopt;
    }

    Status status_;
    std::unique_ptr<gf_result, detail::ResultFree> handle_;
};

/**
 * What the throwing form throws: `what()` is `status().to_string()`. For a call that reached a
 * server, `result()` keeps its headers and trailers (e.g. grpc-status-details-bin). Copying is
 * cheap and never throws (the result is shared).
 */
class Error : public std::runtime_error {
  public:
    explicit Error(Status status) : Error(std::make_shared<const Result>(std::move(status))) {}
    explicit Error(Result result) : Error(std::make_shared<const Result>(std::move(result))) {}

    const Status &status() const noexcept { return result_->status(); }
    StatusCode code() const noexcept { return result_->status().code(); }
    /** The failed call's result: status, headers and trailers (no response). */
    const Result &result() const noexcept { return *result_; }

  private:
    explicit Error(std::shared_ptr<const Result> result)
        : std::runtime_error(result->status().to_string()), result_(std::move(result))
    {
    }
    std::shared_ptr<const Result> result_;
};

/**
 * Per-call options: a deadline, wait-for-ready, request metadata and compression. A value type; a call
 * copies what it needs before it returns. The setters return *this so they chain:
 * `CallOptions().set_timeout(std::chrono::seconds(2)).add_metadata("x-user", "42")`.
 */
class CallOptions {
  public:
    /** The deadline across all attempts (retries and hedges included), from when the call
     *  starts (a method config `timeout` still applies; the smaller one wins). Rounded up to
     *  whole milliseconds; longer than about 49 days means none. Zero, negative or NaN means
     *  the deadline has passed: the call fails at once with DEADLINE_EXCEEDED, as a deadline
     *  computed as `deadline - now()` that is already over should. No deadline is the default;
     *  clear_timeout() goes back to it. */
    template <class Rep, class Period>
    CallOptions &set_timeout(std::chrono::duration<Rep, Period> timeout)
    {
        // Compared in floating point first: converting hours::max() to milliseconds overflows.
        const double ms = std::chrono::duration<double, std::milli>(timeout).count();
        expired_ = !(ms > 0);
        if (expired_ || ms > static_cast<double>(UINT32_MAX)) {
            timeout_ms_ = 0;
        } else {
            timeout_ms_ = static_cast<uint32_t>(
                std::chrono::ceil<std::chrono::milliseconds>(std::chrono::duration<double, std::milli>(ms)).count());
        }
        return *this;
    }
    /** No deadline (the default). */
    CallOptions &clear_timeout() noexcept
    {
        timeout_ms_ = 0;
        expired_ = false;
        return *this;
    }
    /** Overrides the method config's waitForReady: true waits for a ready instance up to the
     *  deadline, false fails fast. */
    CallOptions &set_wait_for_ready(bool wait)
    {
        wait_for_ready_ = wait;
        return *this;
    }
    /** Back to the service config's waitForReady. */
    CallOptions &clear_wait_for_ready() noexcept
    {
        wait_for_ready_.reset();
        return *this;
    }
    /** How this call's request is compressed: "gzip" or "identity"; clear_compression() goes back
     *  to the client's `compression` option. Checked when the call starts (another name fails
     *  it with INVALID_ARGUMENT). Compressed responses are always accepted. */
    CallOptions &set_compression(std::string name)
    {
        compression_ = std::move(name);
        return *this;
    }
    CallOptions &clear_compression() noexcept
    {
        compression_.reset();
        return *this;
    }
    /** Adds a request metadata entry. The key is checked when the call starts (grpc_failover.h,
     *  `gf_call_options_add_metadata`); a bad one fails the call with INVALID_ARGUMENT. */
    CallOptions &add_metadata(std::string key, std::string value)
    {
        metadata_.emplace_back(std::move(key), std::move(value));
        return *this;
    }

    /** The timeout in milliseconds; 0 when none or already expired (see expired()). */
    uint32_t timeout_ms() const noexcept { return timeout_ms_; }
    /** set_timeout() was given a deadline already passed. */
    bool expired() const noexcept { return expired_; }
    std::optional<bool> wait_for_ready() const noexcept { return wait_for_ready_; }
    const Metadata &metadata() const noexcept { return metadata_; }
    const std::optional<std::string> &compression() const noexcept { return compression_; }

  private:
    friend class Client;

    bool is_default() const noexcept
    {
        return timeout_ms_ == 0 && !expired_ && !wait_for_ready_ && metadata_.empty() && !compression_;
    }
    /** The C options (NULL when all are defaults, so the call takes the cheapest path). */
    std::unique_ptr<gf_call_options, detail::OptionsFree> to_c(Status &status) const
    {
        std::unique_ptr<gf_call_options, detail::OptionsFree> o;
        if (expired_) {
            status = Status(StatusCode::DEADLINE_EXCEEDED, "grpc_failover: the call's deadline had passed before it started");
            return o;
        }
        if (is_default()) {
            return o;
        }
        o.reset(gf_call_options_new());
        if (!o) {
            throw std::bad_alloc();
        }
        gf_call_options_set_timeout_ms(o.get(), timeout_ms_);
        if (wait_for_ready_) {
            gf_call_options_set_wait_for_ready(o.get(), *wait_for_ready_ ? 1 : 0);
        }
        if (compression_ && compression_->find('\0') != std::string::npos) {
            status = Status(StatusCode::INVALID_ARGUMENT, "compression: contains a NUL byte");
            return nullptr;
        }
        if (compression_) {
            char *err = nullptr;
            const int32_t rc = gf_call_options_set_compression(o.get(), compression_->c_str(), &err);
            if (rc != GF_OK) {
                status = detail::status_of(rc, err);
                return nullptr;
            }
        }
        for (const auto &kv : metadata_) {
            char *err = nullptr;
            const int32_t rc = gf_call_options_add_metadata(o.get(), kv.first.c_str(), detail::bytes(kv.second),
                                                            kv.second.size(), &err);
            if (rc != GF_OK) {
                status = detail::status_of(rc, err);
                return nullptr;
            }
        }
        return o;
    }

    uint32_t timeout_ms_ = 0;
    bool expired_ = false;
    std::optional<bool> wait_for_ready_;
    Metadata metadata_;
    std::optional<std::string> compression_;
};

/**
 * The handle of an async call, to cancel it. Move-only; the destructor frees the handle but
 * does not cancel the call (its callback still runs, its future still gets the outcome).
 */
class AsyncCall {
  public:
    AsyncCall() = default;
    AsyncCall(AsyncCall &&other) noexcept : call_(std::exchange(other.call_, nullptr)) {}
    AsyncCall &operator=(AsyncCall &&other) noexcept
    {
        if (this != &other) {
            gf_call_free(call_);
            call_ = std::exchange(other.call_, nullptr);
        }
        return *this;
    }
    AsyncCall(const AsyncCall &) = delete;
    AsyncCall &operator=(const AsyncCall &) = delete;
    ~AsyncCall() { gf_call_free(call_); }

    /** Ends the call with CANCELLED unless it already ended. Any thread, any number of times,
     *  also inside a callback; a no-op on an empty handle. Never blocks. */
    void cancel() const noexcept { gf_call_cancel(call_); }
    explicit operator bool() const noexcept { return call_ != nullptr; }
    gf_call *get() const noexcept { return call_; }

  private:
    friend class Client;
    gf_call *call_ = nullptr;
};

/**
 * A client of one target: `etcd:///<prefix>` or `static:///host:port,...`, with options as the
 * JSON of `gf_connect` (service_config, etcd, tls, ...). Move-only; the destructor closes it,
 * ending calls still in flight with CANCELLED. A default-constructed or moved-from Client is
 * empty: its calls fail with FAILED_PRECONDITION.
 */
class Client {
  public:
    /** An empty client. */
    Client() noexcept = default;

    /** Connects (does not wait for the network: an unreachable etcd shows in the calls'
     *  errors). Throws Error with INVALID_ARGUMENT for a bad target or options. */
    explicit Client(const std::string &target, const std::string &options_json = std::string())
    {
        Status status;
        *this = connect(target, options_json, status);
        if (!status.ok()) {
            throw Error(std::move(status));
        }
    }

    /** The non-throwing constructor: on failure returns an empty Client and sets `status`. */
    static Client connect(const std::string &target, const std::string &options_json, Status &status)
    {
        gf_client *raw = nullptr;
        char *err = nullptr;
        const int32_t rc = gf_connect(target.c_str(), options_json.empty() ? nullptr : options_json.c_str(),
                                      &raw, &err);
        status = detail::status_of(rc, err);
        return Client(rc == GF_OK ? raw : nullptr);
    }

    /** Adopts a handle from `gf_connect` (NULL gives an empty client). */
    explicit Client(gf_client *raw) noexcept : client_(raw) {}

    Client(Client &&other) noexcept : client_(std::exchange(other.client_, nullptr)) {}
    /** Closes the client this one held, then takes `other`'s. */
    Client &operator=(Client &&other) noexcept
    {
        if (this != &other) {
            gf_close(client_);
            client_ = std::exchange(other.client_, nullptr);
        }
        return *this;
    }
    Client(const Client &) = delete;
    Client &operator=(const Client &) = delete;
    ~Client() { gf_close(client_); }

    explicit operator bool() const noexcept { return client_ != nullptr; }
    /** The handle, lent for C ABI calls (gf_client_stats, gf_invoke_queued, ...). */
    gf_client *get() const noexcept { return client_; }
    /** Hands the handle over (the caller then `gf_close`s it); leaves this Client empty. */
    gf_client *release() noexcept { return std::exchange(client_, nullptr); }

    /** Ends calls in flight with CANCELLED and makes later calls fail with FAILED_PRECONDITION,
     *  without freeing the handle: safe while other threads call. Idempotent; never blocks. */
    void shutdown() const noexcept { gf_client_shutdown(client_); }
    /** Closes now (as the destructor does) and leaves this Client empty. Not while other
     *  threads may call on it (use shutdown() first). */
    void close() noexcept { gf_close(std::exchange(client_, nullptr)); }

    /**
     * Calls a unary method ("/package.Service/Method") with the request bytes and waits for the
     * outcome. Returns the Result when the status is OK; throws Error otherwise (the server's
     * status, DEADLINE_EXCEEDED, UNAVAILABLE when no instance could take it, CANCELLED when
     * shutdown() runs meanwhile, FAILED_PRECONDITION once shut down, INVALID_ARGUMENT for a bad
     * method or metadata). Blocks; thread-safe.
     */
    Result call(const std::string &method, std::string_view request,
                const CallOptions &options = CallOptions()) const
    {
        Result r = try_call(method, request, options);
        if (!r.ok()) {
            throw Error(std::move(r));
        }
        return r;
    }

    /** As `call`, but never throws for a failed call: read `status()` of the Result. */
    Result try_call(const std::string &method, std::string_view request,
                    const CallOptions &options = CallOptions()) const
    {
        if (!client_) {
            return Result(empty_status());
        }
        Status bad;
        const auto opts = options.to_c(bad);
        if (!bad.ok()) {
            return Result(std::move(bad));
        }
        gf_result *result = nullptr;
        char *err = nullptr;
        const int32_t rc = gf_invoke_ex(client_, method.c_str(), detail::bytes(request), request.size(),
                                        opts.get(), &result, &err);
        if (!result) {
            return Result(detail::status_of(rc, err));
        }
        gf_string_free(err);
        return Result(result);
    }

    /**
     * Starts a call and returns at once; the future gets the Result, or an Error (from `get()`)
     * when the status is not OK, including a call refused at the start. `call_out`, when given,
     * receives a handle to cancel it (filled after the call started). Never blocks; thread-safe,
     * also inside a callback (but do not wait on the future there).
     */
    std::future<Result> call_async(const std::string &method, std::string_view request,
                                   const CallOptions &options = CallOptions(), AsyncCall *call_out = nullptr) const
    {
        auto promise = std::make_unique<std::promise<Result>>();
        std::future<Result> future = promise->get_future();
        Status refused = start(method, request, options, &fulfil, promise.get(), call_out);
        if (refused.ok()) {
            promise.release(); // fulfil() owns it now
        } else {
            promise->set_exception(std::make_exception_ptr(Error(std::move(refused))));
        }
        return future;
    }

    /**
     * Starts a call and returns at once. When the returned Status is OK, `done` runs exactly
     * once, on a library thread, with the Result (whatever its status); otherwise it never
     * runs and the Status says why (INVALID_ARGUMENT, FAILED_PRECONDITION). `done` must not
     * block for long nor throw (see the top of this file); if memory runs out while the Result
     * for it is built, std::terminate is called. `call_out` as in the future form; it is filled
     * after the call started, so `done` (which may already run) must not use that AsyncCall.
     */
    Status call_async(const std::string &method, std::string_view request, const CallOptions &options,
                      std::function<void(Result)> done, AsyncCall *call_out = nullptr) const
    {
        if (!done) {
            return Status(StatusCode::INVALID_ARGUMENT, "grpc_failover::Client::call_async: done is empty");
        }
        auto fn = std::make_unique<std::function<void(Result)>>(std::move(done));
        Status refused = start(method, request, options, &run_callback, fn.get(), call_out);
        if (refused.ok()) {
            fn.release(); // run_callback() owns it now
        }
        return refused;
    }

    /** The client's counters and instances as JSON (grpc_failover.h, `gf_client_stats`).
     *  Throws Error (FAILED_PRECONDITION after shutdown or on an empty client). */
    std::string stats() const
    {
        if (!client_) {
            throw Error(empty_status());
        }
        char *json = nullptr;
        char *err = nullptr;
        const int32_t rc = gf_client_stats(client_, &json, &err);
        if (rc != GF_OK) {
            throw Error(detail::status_of(rc, err));
        }
        return detail::take_message(json);
    }

  private:
    static Status empty_status()
    {
        return Status(StatusCode::FAILED_PRECONDITION,
                      "grpc_failover::Client is empty (default-constructed, moved from or closed)");
    }

    Status start(const std::string &method, std::string_view request, const CallOptions &options,
                 gf_result_callback callback, void *user_data, AsyncCall *call_out) const
    {
        if (!client_) {
            return empty_status();
        }
        Status bad;
        const auto opts = options.to_c(bad);
        if (!bad.ok()) {
            return bad;
        }
        gf_call *call = nullptr;
        char *err = nullptr;
        const int32_t rc = gf_invoke_async_ex(client_, method.c_str(), detail::bytes(request), request.size(),
                                              opts.get(), callback, user_data, call_out ? &call : nullptr, &err);
        if (rc != GF_OK) {
            return detail::status_of(rc, err);
        }
        if (call_out) {
            *call_out = AsyncCall();
            call_out->call_ = call;
        }
        return Status();
    }

    static void fulfil(void *user_data, gf_result *result) noexcept
    {
        std::unique_ptr<std::promise<Result>> promise(static_cast<std::promise<Result> *>(user_data));
        try {
            Result r(result);
            if (r.ok()) {
                promise->set_value(std::move(r));
            } else {
                promise->set_exception(std::make_exception_ptr(Error(std::move(r))));
            }
        } catch (...) { // out of memory: the future's get() throws it
            promise->set_exception(std::current_exception());
        }
    }

    static void run_callback(void *user_data, gf_result *result) noexcept
    {
        std::unique_ptr<std::function<void(Result)>> fn(static_cast<std::function<void(Result)> *>(user_data));
        (*fn)(Result(result));
    }

    gf_client *client_ = nullptr;
};

/**
 * An instance registered in etcd (grpc_failover.h, `gf_register`), kept alive in the
 * background until the Registration is destroyed or `deregister()` runs. Move-only.
 */
class Registration {
  public:
    Registration() noexcept = default;

    /** Registers `addr` under `prefix` with `metadata_json` ("" = null, e.g. R"({"weight": 10})")
     *  and a lease of `ttl`; `options_json`'s "etcd" part says where etcd is. Blocks until the
     *  record is in etcd; throws Error (UNAVAILABLE when etcd is unreachable, INVALID_ARGUMENT
     *  for bad arguments). Not on a library thread. */
    Registration(const std::string &prefix, const std::string &addr, const std::string &metadata_json = std::string(),
                 std::chrono::seconds ttl = std::chrono::seconds(10), const std::string &options_json = std::string())
    {
        Status status;
        *this = create(prefix, addr, metadata_json, ttl, options_json, status);
        if (!status.ok()) {
            throw Error(std::move(status));
        }
    }

    /** The non-throwing form: on failure returns an empty Registration and sets `status`. */
    static Registration create(const std::string &prefix, const std::string &addr, const std::string &metadata_json,
                               std::chrono::seconds ttl, const std::string &options_json, Status &status)
    {
        const int64_t s = ttl.count();
        if (s < 1 || s > static_cast<int64_t>(UINT32_MAX)) {
            status = Status(StatusCode::INVALID_ARGUMENT, "grpc_failover::Registration: ttl must be at least 1 s");
            return Registration();
        }
        gf_registration *raw = nullptr;
        char *err = nullptr;
        const int32_t rc = gf_register(options_json.empty() ? nullptr : options_json.c_str(), prefix.c_str(),
                                       addr.c_str(), metadata_json.empty() ? nullptr : metadata_json.c_str(),
                                       static_cast<uint32_t>(s), &raw, &err);
        status = detail::status_of(rc, err);
        Registration r;
        r.registration_ = rc == GF_OK ? raw : nullptr;
        return r;
    }

    Registration(Registration &&other) noexcept : registration_(std::exchange(other.registration_, nullptr)) {}
    Registration &operator=(Registration &&other) noexcept
    {
        if (this != &other) {
            deregister();
            registration_ = std::exchange(other.registration_, nullptr);
        }
        return *this;
    }
    Registration(const Registration &) = delete;
    Registration &operator=(const Registration &) = delete;
    /** Deregisters (blocks up to about 5 s; an etcd that cannot be told lets the lease expire). */
    ~Registration() { deregister(); }

    explicit operator bool() const noexcept { return registration_ != nullptr; }

    /** Deletes the record and revokes the lease now; leaves this Registration empty. OK for an
     *  empty one. UNAVAILABLE when etcd could not be told (the lease then expires by itself). */
    Status deregister() noexcept
    {
        char *err = nullptr;
        const int32_t rc = gf_deregister(std::exchange(registration_, nullptr), &err);
        try {
            return detail::status_of(rc, err);
        } catch (...) { // out of memory for the message: the code still tells
            return Status(static_cast<StatusCode>(rc), std::string());
        }
    }

  private:
    gf_registration *registration_ = nullptr;
};

/** The library's version, e.g. "0.1.0". */
inline std::string_view version() noexcept { return gf_version(); }

/** True when the loaded library implements the C ABI this header was written for. */
inline bool abi_compatible() noexcept { return gf_abi_version() == GF_ABI_VERSION; }

/** Log levels (the GF_LOG_* values): a level includes every more severe one. */
enum class LogLevel : int32_t {
    Off = GF_LOG_OFF,
    Error = GF_LOG_ERROR,
    Warn = GF_LOG_WARN,
    Info = GF_LOG_INFO,
    Debug = GF_LOG_DEBUG,
    Trace = GF_LOG_TRACE,
};

/** Receives one log record: its level, the part of the library that logged (a Rust module path
 *  such as "grpc_failover::balancer::subchannel") and the message, both valid only during the
 *  call. Runs on the library's log thread (grpc_failover.h, `gf_log_callback`); it may block,
 *  which holds up only later records. An exception it throws is swallowed (with the record).
 *  The log thread is not joined at exit: reset the handler (`set_log_handler(level, {})`)
 *  before `main` returns when it uses objects that static destructors tear down. */
using LogHandler = std::function<void(LogLevel level, std::string_view target, std::string_view message)>;

namespace detail {
struct LogState {
    std::mutex lock;
    std::unique_ptr<LogHandler> current;
};
inline LogState &log_state()
{
    static LogState *state = new LogState(); // never destroyed: the log thread may outlive main
    return *state;
}
inline thread_local bool in_log_handler = false;
extern "C" inline void log_trampoline(void *user_data, int32_t level, const char *target,
                                      const char *message) noexcept
{
    struct InHandler {
        InHandler() noexcept { in_log_handler = true; }
        ~InHandler() { in_log_handler = false; }
    } in_handler;
    try {
        (*static_cast<LogHandler *>(user_data))(static_cast<LogLevel>(level), target, message);
    } catch (...) { // must not unwind into the library; a throwing handler loses the record
    }
}
} // namespace detail

/** Routes the library's log records at `level` and more severe ones to `handler`, process-wide
 *  (an empty handler: back to stderr, at `level`); `LogLevel::Off` turns them off. Replaces the
 *  handler set before, and returns once that one no longer runs (it is then destroyed). Throws
 *  `Error` INVALID_ARGUMENT for a level out of range, and FAILED_PRECONDITION when called from
 *  inside a handler. Thread-safe; blocks only while a record is being handled. */
inline void set_log_handler(LogLevel level, LogHandler handler)
{
    if (detail::in_log_handler) {
        throw Error(Status(StatusCode::FAILED_PRECONDITION,
                           "set_log_handler cannot be called from inside a log handler"));
    }
    std::unique_ptr<LogHandler> next;
    if (handler) {
        next = std::make_unique<LogHandler>(std::move(handler));
    }
    detail::LogState &state = detail::log_state();
    std::lock_guard<std::mutex> guard(state.lock);
    char *err = nullptr;
    const int32_t rc = gf_set_log_callback(static_cast<int32_t>(level),
                                           next ? detail::log_trampoline : nullptr, next.get(),
                                           &err);
    Status status = detail::status_of(rc, err);
    if (!status.ok()) {
        throw Error(std::move(status));
    }
    state.current = std::move(next); // the old handler is not running any more: freed here
}

/** Sets the most detailed level the library logs, to stderr or the handler alike. Throws
 *  `Error` INVALID_ARGUMENT for a level out of range. Never blocks; thread-safe. */
inline void set_log_level(LogLevel level)
{
    char *err = nullptr;
    const int32_t rc = gf_set_log_level(static_cast<int32_t>(level), &err);
    Status status = detail::status_of(rc, err);
    if (!status.ok()) {
        throw Error(std::move(status));
    }
}

} // namespace grpc_failover

#endif /* GRPC_FAILOVER_HPP */
