// test_api.cpp: the C ABI of grpc-failover used from C++17 the way a C++ program would:
// RAII owners for every handle, lambdas as async callbacks (through a noexcept trampoline, so
// no exception ever unwinds into the library), std::thread, std::atomic and
// std::condition_variable. Runs against real gf-testserver processes; see tests/c/README.md.
// Usage: test_api_cpp [case-name-substring...]
#include "harness.h"
#include "latch.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

static_assert(GF_OK == 0 && GF_UNAUTHENTICATED == 16, "status codes are the gRPC codes");
static_assert(sizeof(gf_bytes) == sizeof(uint8_t *) + sizeof(size_t), "gf_bytes is {data, len}");

namespace {

std::string echo_addr, nf_addr, slow_addr, stall_addr;
constexpr const char *kEcho = "/gf.test.Echo/Echo";
constexpr const char *kWhoami = "/gf.test.Echo/Whoami";
constexpr int64_t kSlowServerMs = 2000;

// ---- RAII owners --------------------------------------------------------------------------

struct ClientCloser {
    void operator()(gf_client *c) const noexcept { gf_close(c); }
};
struct ResultFreer {
    void operator()(gf_result *r) const noexcept { gf_result_free(r); }
};
struct OptionsFreer {
    void operator()(gf_call_options *o) const noexcept { gf_call_options_free(o); }
};
struct CallFreer {
    void operator()(gf_call *c) const noexcept { gf_call_free(c); }
};
using Client = std::unique_ptr<gf_client, ClientCloser>;
using Result = std::unique_ptr<gf_result, ResultFreer>;
using Options = std::unique_ptr<gf_call_options, OptionsFreer>;
using Call = std::unique_ptr<gf_call, CallFreer>;

// An error_out string owned by the library; freed on destruction and before each reuse.
class Error {
  public:
    Error() = default;
    Error(const Error &) = delete;
    Error &operator=(const Error &) = delete;
    ~Error() { gf_string_free(p_); }
    char **out()
    {
        gf_string_free(p_);
        p_ = nullptr;
        return &p_;
    }
    bool empty() const { return p_ == nullptr; }
    std::string str() const { return p_ ? p_ : ""; }
    const char *c_str() const { return p_ ? p_ : "(NULL)"; }
    bool contains(const std::string &s) const { return p_ && std::strstr(p_, s.c_str()); }

  private:
    char *p_ = nullptr;
};

// A response buffer owned by the library.
class Bytes {
  public:
    Bytes() = default;
    Bytes(const Bytes &) = delete;
    Bytes &operator=(const Bytes &) = delete;
    ~Bytes() { gf_bytes_free(&b_); }
    gf_bytes *out()
    {
        gf_bytes_free(&b_);
        return &b_;
    }
    std::vector<uint8_t> vec() const { return {b_.data, b_.data + b_.len}; }
    const gf_bytes &raw() const { return b_; }

  private:
    gf_bytes b_{nullptr, 0};
};

Client connect(const std::string &addrs, const char *options = nullptr)
{
    gf_client *c = nullptr;
    Error err;
    std::string target = "static:///" + addrs;
    int32_t rc = gf_connect(target.c_str(), options, &c, err.out());
    if (rc != GF_OK || !c) {
        gft_fatal("gf_connect(%s) = %d: %s", target.c_str(), rc, err.c_str());
    }
    return Client(c);
}

std::vector<uint8_t> to_bytes(const std::string &s) { return {s.begin(), s.end()}; }

std::vector<uint8_t> response_of(const gf_result *r)
{
    size_t len = 0;
    const uint8_t *data = gf_result_response(r, &len);
    return data ? std::vector<uint8_t>(data, data + len) : std::vector<uint8_t>();
}

// What a finished async call reported.
struct Outcome {
    int32_t code = -1;
    std::string message;
    std::vector<uint8_t> response;
};

// Async calls with any callable as the callback. The callable is moved to the heap, handed
// to the library as user_data and deleted by the trampoline after it ran (exactly once), or
// right here if the call was rejected (then the library never calls back).
template <class F>
void plain_trampoline(void *user_data, int32_t code, const uint8_t *response, size_t len,
                      const char *message) noexcept
{
    std::unique_ptr<F> f(static_cast<F *>(user_data));
    try {
        (*f)(code, response, len, message);
    } catch (...) {
        CHECKF(false, "a callback threw");
    }
}

template <class F> void result_trampoline(void *user_data, gf_result *result) noexcept
{
    std::unique_ptr<F> f(static_cast<F *>(user_data));
    try {
        (*f)(Result(result));
    } catch (...) {
        CHECKF(false, "a callback threw");
    }
}

// f(int32_t code, const uint8_t *response, size_t len, const char *message)
template <class F>
int32_t invoke_async(gf_client *client, const char *method, const std::vector<uint8_t> &request,
                     uint32_t timeout_ms, F f, gf_call **call_out = nullptr,
                     char **error_out = nullptr)
{
    auto *heap = new F(std::move(f));
    int32_t rc = gf_invoke_async(client, method, request.data(), request.size(), timeout_ms,
                                 plain_trampoline<F>, heap, call_out, error_out);
    if (rc != GF_OK) {
        delete heap;
    }
    return rc;
}

// f(Result result)
template <class F>
int32_t invoke_async_ex(gf_client *client, const char *method,
                        const std::vector<uint8_t> &request, const gf_call_options *options,
                        F f, gf_call **call_out = nullptr, char **error_out = nullptr)
{
    auto *heap = new F(std::move(f));
    int32_t rc = gf_invoke_async_ex(client, method, request.data(), request.size(), options,
                                    result_trampoline<F>, heap, call_out, error_out);
    if (rc != GF_OK) {
        delete heap;
    }
    return rc;
}

// Starts an async call whose outcome lands in `out`, counted by `done`.
int32_t invoke_into(gf_client *client, const char *method, const std::vector<uint8_t> &request,
                    uint32_t timeout_ms, Outcome *out, Latch *done, gf_call **call_out = nullptr)
{
    return invoke_async(client, method, request, timeout_ms,
                        [out, done](int32_t code, const uint8_t *resp, size_t len,
                                    const char *msg) {
                            out->code = code;
                            out->message = msg;
                            out->response.assign(resp, resp + len);
                            done->add();
                        },
                        call_out);
}

// ---- Cases --------------------------------------------------------------------------------

void test_version_and_abi()
{
    CHECK(gf_version() != nullptr && std::string(gf_version()).size() > 0);
    CHECK(gf_abi_version() == GF_ABI_VERSION);
}

void test_null_is_a_no_op()
{
    gf_close(nullptr);
    gf_bytes_free(nullptr);
    gf_string_free(nullptr);
    gf_call_cancel(nullptr);
    gf_call_free(nullptr);
    gf_result_free(nullptr);
    gf_call_options_free(nullptr);
    gf_bytes empty{nullptr, 0};
    gf_bytes_free(&empty);
    CHECK(gf_result_code(nullptr) == GF_INVALID_ARGUMENT);
    CHECK(gf_result_trailer_count(nullptr) == 0);
}

void test_echo_sizes()
{
    Client client = connect(echo_addr);
    for (size_t size : {size_t(0), size_t(1), size_t(1) << 20}) {
        std::vector<uint8_t> req(size);
        std::mt19937 rng(static_cast<uint32_t>(size));
        std::generate(req.begin(), req.end(), [&] { return uint8_t(rng()); });

        Bytes resp;
        Error err;
        int32_t rc = gf_invoke(client.get(), kEcho, req.data(), req.size(), 10000, resp.out(),
                               err.out());
        CHECK_CODE(rc, GF_OK, err.c_str());
        CHECKF(resp.vec() == req, "sync echo of %zu bytes differs", size);

        Options opts(gf_call_options_new());
        gf_call_options_set_timeout_ms(opts.get(), 10000);
        gf_result *raw = nullptr;
        rc = gf_invoke_ex(client.get(), kEcho, req.data(), req.size(), opts.get(), &raw,
                          err.out());
        Result result(raw);
        CHECK_CODE(rc, GF_OK, err.c_str());
        CHECKF(response_of(result.get()) == req, "gf_invoke_ex echo of %zu bytes differs", size);

        Latch done;
        Outcome out;
        rc = invoke_into(client.get(), kEcho, req, 10000, &out, &done);
        CHECK_CODE(rc, GF_OK, "");
        done.wait_or_die(1, "async echo");
        CHECK_CODE(out.code, GF_OK, out.message.c_str());
        CHECKF(out.response == req, "async echo of %zu bytes differs", size);
    }
}

void test_status_pass_through()
{
    Client client = connect(nf_addr);
    const std::string want = "gf-testserver nf: injected failure";
    Bytes resp;
    Error err;
    int32_t rc = gf_invoke(client.get(), kWhoami, nullptr, 0, 5000, resp.out(), err.out());
    CHECK_CODE(rc, GF_NOT_FOUND, err.c_str());
    CHECKF(err.str() == want, "error_out = \"%s\"", err.c_str());
    CHECK(resp.raw().data == nullptr && resp.raw().len == 0);

    Latch done;
    Outcome out;
    rc = invoke_async_ex(client.get(), kWhoami, {}, nullptr, [&](Result r) {
        out.code = gf_result_code(r.get());
        out.message = gf_result_message(r.get());
        done.add();
    });
    CHECK_CODE(rc, GF_OK, "");
    done.wait_or_die(1, "async status");
    CHECK_CODE(out.code, GF_NOT_FOUND, out.message.c_str());
    CHECKF(out.message == want, "message = \"%s\"", out.message.c_str());
}

void test_deadline_against_a_slow_server()
{
    Client client = connect(slow_addr);
    Bytes resp;
    Error err;
    int64_t start = gft_now_ms();
    int32_t rc = gf_invoke(client.get(), kWhoami, nullptr, 0, 200, resp.out(), err.out());
    CHECK_CODE(rc, GF_DEADLINE_EXCEEDED, err.c_str());
    CHECK(gft_now_ms() - start < kSlowServerMs);

    Latch done;
    Outcome out;
    start = gft_now_ms();
    CHECK_CODE(invoke_into(client.get(), kWhoami, {}, 200, &out, &done), GF_OK, "");
    done.wait_or_die(1, "async deadline");
    CHECK_CODE(out.code, GF_DEADLINE_EXCEEDED, out.message.c_str());
    CHECK(gft_now_ms() - start < kSlowServerMs);
}

void test_bad_arguments()
{
    Client client = connect(echo_addr);
    gf_client *c = client.get();
    const uint8_t req[] = {1, 2, 3};
    struct Case {
        const char *argument;
        std::function<int32_t(char **)> call;
    };
    gf_client *out = nullptr;
    Bytes resp;
    gf_result *result = nullptr;
    std::atomic<int> stray{0};
    auto never = [&stray](int32_t, const uint8_t *, size_t, const char *) { ++stray; };
    const std::vector<Case> cases = {
        {"target", [&](char **e) { return gf_connect(nullptr, nullptr, &out, e); }},
        {"target", [&](char **e) { return gf_connect("dns:///x", nullptr, &out, e); }},
        {"options_json", [&](char **e) { return gf_connect("static:///a:1", "{", &out, e); }},
        {"client_out", [&](char **e) { return gf_connect("static:///a:1", "", nullptr, e); }},
        {"client",
         [&](char **e) { return gf_invoke(nullptr, kEcho, req, 3, 0, resp.out(), e); }},
        {"method", [&](char **e) { return gf_invoke(c, nullptr, req, 3, 0, resp.out(), e); }},
        {"method",
         [&](char **e) { return gf_invoke(c, "/svc/\xff\xfe", req, 3, 0, resp.out(), e); }},
        {"method", [&](char **e) { return gf_invoke(c, "svc.Echo", req, 3, 0, resp.out(), e); }},
        {"method", [&](char **e) { return gf_invoke(c, "/a/b/c", req, 3, 0, resp.out(), e); }},
        {"response_out", [&](char **e) { return gf_invoke(c, kEcho, req, 3, 0, nullptr, e); }},
        {"request", [&](char **e) { return gf_invoke(c, kEcho, nullptr, 3, 0, resp.out(), e); }},
        {"result_out",
         [&](char **e) { return gf_invoke_ex(c, kEcho, req, 3, nullptr, nullptr, e); }},
        {"request",
         [&](char **e) { return gf_invoke_ex(c, kEcho, nullptr, 9, nullptr, &result, e); }},
        {"callback",
         [&](char **e) {
             return gf_invoke_async(c, kEcho, req, 3, 0, nullptr, nullptr, nullptr, e);
         }},
        {"client",
         [&](char **e) { return invoke_async(nullptr, kEcho, {1}, 0, never, nullptr, e); }},
        {"method", [&](char **e) { return invoke_async(c, "nope", {1}, 0, never, nullptr, e); }},
        {"callback",
         [&](char **e) {
             return gf_invoke_async_ex(c, kEcho, req, 3, nullptr, nullptr, nullptr, nullptr, e);
         }},
        {"key",
         [&](char **e) {
             Options o(gf_call_options_new());
             return gf_call_options_add_metadata(o.get(), nullptr, req, 3, e);
         }},
    };
    for (const Case &k : cases) {
        Error err;
        int32_t rc = k.call(err.out());
        CHECKF(rc == GF_INVALID_ARGUMENT && err.contains(k.argument),
               "%s: got %d, message \"%s\"", k.argument, rc, err.c_str());
    }
    CHECK(out == nullptr);
    CHECK(result == nullptr);
    gft_sleep_ms(50);
    CHECKF(stray.load() == 0, "%d callbacks ran for rejected calls", stray.load());
}

void test_threads_32_by_200()
{
    Client client = connect(echo_addr);
    const long per_thread = gft_scaled(200);
    std::atomic<long> ok{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 32; t++) {
        threads.emplace_back([&, t] {
            for (long i = 0; i < per_thread; i++) {
                auto req = to_bytes("thread " + std::to_string(t) + " call " + std::to_string(i));
                Bytes resp;
                Error err;
                int32_t rc = gf_invoke(client.get(), kEcho, req.data(), req.size(), 30000,
                                       resp.out(), err.out());
                if (rc == GF_OK && resp.vec() == req) {
                    ++ok;
                } else {
                    CHECKF(false, "thread %d call %ld: %d %s", t, i, rc, err.c_str());
                }
            }
        });
    }
    for (auto &t : threads) {
        t.join();
    }
    CHECKF(ok == 32 * per_thread, "%ld of %ld calls OK", ok.load(), 32 * per_thread);
}

void test_close_with_sync_calls_in_flight()
{
    Client client = connect(stall_addr);
    constexpr int kCalls = 4;
    std::vector<int32_t> codes(kCalls, -1);
    std::vector<std::string> messages(kCalls);
    std::vector<std::thread> threads;
    for (int i = 0; i < kCalls; i++) {
        threads.emplace_back([&, i] {
            Bytes resp;
            Error err;
            codes[i] = gf_invoke(client.get(), kWhoami, nullptr, 0, 0, resp.out(), err.out());
            messages[i] = err.str();
        });
    }
    gft_wait_calls_started(client.get(), kCalls);
    client.reset(); // gf_close
    for (auto &t : threads) {
        t.join();
    }
    for (int i = 0; i < kCalls; i++) {
        CHECK_CODE(codes[i], GF_CANCELLED, messages[i].c_str());
    }
}

void test_all_addresses_down()
{
    std::string a = "127.0.0.1:" + std::to_string(gft_closed_port());
    std::string b = "127.0.0.1:" + std::to_string(gft_closed_port());
    Client client = connect(a + "," + b);
    Bytes resp;
    Error err;
    int32_t rc = gf_invoke(client.get(), kWhoami, nullptr, 0, 20000, resp.out(), err.out());
    CHECK_CODE(rc, GF_UNAVAILABLE, err.c_str());
    CHECKF(err.contains(a) && err.contains(b), "%s", err.c_str());
}

void test_async_10000_in_flight()
{
    Client client = connect(echo_addr);
    const long n = gft_scaled(10000);
    std::vector<std::atomic<int>> callbacks(static_cast<size_t>(n));
    std::atomic<long> ok{0};
    std::mutex mu;
    std::string first_error;
    Latch done;
    for (long i = 0; i < n; i++) {
        auto req = to_bytes("call-" + std::to_string(i));
        int32_t rc = invoke_async(
            client.get(), kEcho, req, 60000,
            [&, i, req](int32_t code, const uint8_t *resp, size_t len, const char *msg) {
                ++callbacks[size_t(i)];
                if (code == GF_OK && std::vector<uint8_t>(resp, resp + len) == req) {
                    ++ok;
                } else {
                    std::lock_guard<std::mutex> lock(mu);
                    if (first_error.empty()) {
                        first_error = std::to_string(code) + " " + msg;
                    }
                }
                done.add();
            });
        if (rc != GF_OK) {
            CHECK_CODE(rc, GF_OK, "");
            done.add();
        }
    }
    done.wait_or_die(n, "10,000 async calls");
    gft_sleep_ms(100);
    long once = std::count_if(callbacks.begin(), callbacks.end(),
                              [](const std::atomic<int> &c) { return c.load() == 1; });
    CHECKF(once == n, "%ld of %ld callbacks ran exactly once", once, n);
    CHECKF(ok == n, "%ld of %ld calls OK; first failure: %s", ok.load(), n,
           first_error.c_str());
    CHECK(done.count() == n);
}

void test_async_cancel_races()
{
    Client fast = connect(echo_addr);
    Client stalled = connect(stall_addr);
    long rounds = std::max(gft_scaled(600), 12L);
    std::mt19937 rng(42);
    Latch done;
    struct Round {
        std::atomic<int> callbacks{0};
        Outcome out;
    };
    std::vector<Round> all(static_cast<size_t>(rounds));
    for (long i = 0; i < rounds; i++) {
        Round &r = all[size_t(i)];
        const int mode = int(i % 6);
        const bool stalls = mode < 3;
        gf_call *raw = nullptr;
        int32_t rc = invoke_async(
            (stalls ? stalled : fast).get(), kEcho, to_bytes("race"), 0,
            [&r, &done](int32_t code, const uint8_t *, size_t, const char *msg) {
                r.out.code = code;
                r.out.message = msg;
                ++r.callbacks;
                done.add();
            },
            &raw);
        CHECK_CODE(rc, GF_OK, "");
        if (rc != GF_OK) {
            done.add();
            continue;
        }
        Call call(raw);
        switch (mode) {
        case 0: // stalled, cancelled at once
            gf_call_cancel(call.get());
            break;
        case 1: // stalled, cancelled twice from two threads at once
        {
            std::thread t1([&] { gf_call_cancel(call.get()); });
            std::thread t2([&] { gf_call_cancel(call.get()); });
            t1.join();
            t2.join();
            break;
        }
        case 2: // stalled, cancelled and freed at once
            gf_call_cancel(call.get());
            call.reset();
            break;
        case 3: // fast, cancelled after a random short delay
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
            gf_call_cancel(call.get());
            break;
        case 4: // fast, freed before completion (no cancel)
            call.reset();
            break;
        default: // fast, cancelled after completion
            break;
        }
        done.wait_or_die(i + 1, "cancel race");
        gf_call_cancel(call.get()); // after completion: a no-op (NULL when freed)
        call.reset();
    }
    gft_sleep_ms(100);
    CHECK(done.count() == rounds);
    for (long i = 0; i < rounds; i++) {
        const Round &r = all[size_t(i)];
        const int mode = int(i % 6);
        CHECKF(r.callbacks.load() == 1, "round %ld: %d callbacks", i, r.callbacks.load());
        if (mode < 3) {
            CHECK_CODE(r.out.code, GF_CANCELLED, r.out.message.c_str());
        } else if (mode == 3) {
            CHECK(r.out.code == GF_OK || r.out.code == GF_CANCELLED);
        } else {
            CHECK_CODE(r.out.code, GF_OK, r.out.message.c_str());
        }
    }
}

void test_async_callback_starts_calls()
{
    Client client = connect(echo_addr);
    Latch done;
    std::atomic<long> started{0};
    std::function<void(int)> start = [&](int depth) {
        ++started;
        int32_t rc = invoke_async(client.get(), kEcho, to_bytes("tree"), 30000,
                                  [&, depth](int32_t code, const uint8_t *, size_t,
                                             const char *msg) {
                                      CHECK_CODE(code, GF_OK, msg);
                                      if (depth < 7) {
                                          start(depth + 1);
                                          start(depth + 1);
                                      }
                                      done.add();
                                  });
        if (rc != GF_OK) {
            CHECK_CODE(rc, GF_OK, "");
            done.add();
        }
    };
    start(0);
    done.wait_or_die(255, "calls started from callbacks");
    gft_sleep_ms(50);
    CHECK(started == 255 && done.count() == 255);
}

void test_async_sync_call_in_callback_fails()
{
    Client client = connect(echo_addr);
    Latch done;
    int32_t invoke_code = -1;
    int32_t invoke_ex_code = -1;
    std::string message;
    int32_t rc = invoke_async_ex(client.get(), kEcho, to_bytes("x"), nullptr, [&](Result) {
        Bytes resp;
        Error err;
        invoke_code = gf_invoke(client.get(), kEcho, nullptr, 0, 1000, resp.out(), err.out());
        message = err.str();
        gf_result *raw = nullptr;
        invoke_ex_code = gf_invoke_ex(client.get(), kEcho, nullptr, 0, nullptr, &raw, err.out());
        Result owned(raw);
        done.add();
    });
    CHECK_CODE(rc, GF_OK, "");
    done.wait_or_die(1, "gf_invoke inside a callback");
    CHECK_CODE(invoke_code, GF_FAILED_PRECONDITION, message.c_str());
    CHECK_CODE(invoke_ex_code, GF_FAILED_PRECONDITION, "");
}

void test_async_close_with_calls_in_flight()
{
    const long n = std::max(gft_scaled(200), 8L);
    Client client = connect(stall_addr);
    Latch done;
    std::vector<Outcome> outs(static_cast<size_t>(n));
    std::vector<Call> calls;
    for (long i = 0; i < n; i++) {
        gf_call *raw = nullptr;
        int32_t rc = invoke_into(client.get(), kEcho, {}, 0, &outs[size_t(i)], &done,
                                 i % 2 ? &raw : nullptr);
        CHECK_CODE(rc, GF_OK, "");
        if (rc != GF_OK) {
            done.add();
        }
        calls.emplace_back(raw);
    }
    gft_wait_calls_started(client.get(), n);
    client.reset();
    done.wait_or_die(n, "async calls cancelled by gf_close");
    gft_sleep_ms(100);
    CHECK(done.count() == n);
    for (const Outcome &o : outs) {
        CHECK_CODE(o.code, GF_CANCELLED, o.message.c_str());
    }
    for (Call &c : calls) {
        gf_call_cancel(c.get());
    }
}

void test_metadata()
{
    Client client = connect(echo_addr);
    const std::vector<uint8_t> raw_bin = {0x00, 0xff, 0x00, 0x80, 'z'};
    Options opts(gf_call_options_new());
    Error err;
    CHECK_CODE(gf_call_options_add_metadata(opts.get(), "x-echo-foo",
                                            reinterpret_cast<const uint8_t *>("bar"), 3,
                                            err.out()),
               GF_OK, err.c_str());
    CHECK_CODE(gf_call_options_add_metadata(opts.get(), "x-echo-raw-bin", raw_bin.data(),
                                            raw_bin.size(), err.out()),
               GF_OK, err.c_str());
    for (auto bad : {std::make_pair("X-Echo-Foo", "bar"), std::make_pair("grpc-foo", "bar"),
                     std::make_pair("x-echo-ctl", "a\x01")}) {
        int32_t rc = gf_call_options_add_metadata(opts.get(), bad.first,
                                                  reinterpret_cast<const uint8_t *>(bad.second),
                                                  std::strlen(bad.second), err.out());
        CHECKF(rc == GF_INVALID_ARGUMENT && err.contains(bad.first), "%s: %d %s", bad.first, rc,
               err.c_str());
    }

    auto check = [&](const gf_result *r) {
        CHECK_CODE(gf_result_code(r), GF_OK, gf_result_message(r));
        std::vector<std::pair<std::string, std::vector<uint8_t>>> trailers;
        for (size_t i = 0; i < gf_result_trailer_count(r); i++) {
            const char *key = nullptr;
            const uint8_t *value = nullptr;
            size_t len = 0;
            CHECK(gf_result_trailer(r, i, &key, &value, &len) == GF_OK);
            if (!key || std::strncmp(key, "x-echo-", 7) != 0) {
                continue;
            }
            trailers.emplace_back(key, value ? std::vector<uint8_t>(value, value + len)
                                             : std::vector<uint8_t>());
        }
        auto has = [&](const std::string &k, const std::vector<uint8_t> &v) {
            return std::find(trailers.begin(), trailers.end(), std::make_pair(k, v)) !=
                   trailers.end();
        };
        CHECKF(has("x-echo-foo", to_bytes("bar")), "x-echo-foo: bar missing");
        CHECKF(has("x-echo-raw-bin", raw_bin), "x-echo-raw-bin missing or altered");
        CHECKF(trailers.size() == 2, "%zu x-echo- trailers, want exactly the 2 valid entries",
               trailers.size());
    };

    gf_result *raw = nullptr;
    int32_t rc = gf_invoke_ex(client.get(), kEcho, nullptr, 0, opts.get(), &raw, err.out());
    Result result(raw);
    CHECK_CODE(rc, GF_OK, err.c_str());
    if (result) {
        check(result.get());
    }

    Latch done;
    Result kept;
    rc = invoke_async_ex(client.get(), kEcho, {}, opts.get(), [&](Result r) {
        kept = std::move(r); // freed later, on this test's thread
        done.add();
    });
    CHECK_CODE(rc, GF_OK, "");
    opts.reset(); // copied when the call started
    done.wait_or_die(1, "async metadata");
    if (kept) {
        check(kept.get());
    }
}

} // namespace

int main(int argc, char **argv)
{
    gft_init();
    const char *const nf_args[] = {"--fail-rate", "1", "--fail-code", "5", nullptr};
    const char *const slow_args[] = {"--delay-ms", "2000", nullptr};
    const char *const stall_args[] = {"--delay-ms", "600000", nullptr};
    echo_addr = gft_start_server("echo", nullptr)->addr;
    nf_addr = gft_start_server("nf", nf_args)->addr;
    slow_addr = gft_start_server("slow", slow_args)->addr;
    stall_addr = gft_start_server("stall", stall_args)->addr;
    std::printf("grpc-failover %s, C++ tests, GF_TEST_SCALE=%g\n", gf_version(), g_gft_scale);

    const std::pair<const char *, gft_case_fn> cases[] = {
        {"version_and_abi", test_version_and_abi},
        {"null_is_a_no_op", test_null_is_a_no_op},
        {"echo_0_1_1MiB", test_echo_sizes},
        {"status_pass_through", test_status_pass_through},
        {"deadline_against_a_slow_server", test_deadline_against_a_slow_server},
        {"bad_arguments", test_bad_arguments},
        {"threads_32x200", test_threads_32_by_200},
        {"close_with_sync_calls_in_flight", test_close_with_sync_calls_in_flight},
        {"all_addresses_down", test_all_addresses_down},
        {"async_10000_in_flight", test_async_10000_in_flight},
        {"async_cancel_races", test_async_cancel_races},
        {"async_callback_starts_calls", test_async_callback_starts_calls},
        {"async_sync_call_in_callback_fails", test_async_sync_call_in_callback_fails},
        {"async_close_with_calls_in_flight", test_async_close_with_calls_in_flight},
        {"metadata_round_trip_and_invalid_keys", test_metadata},
    };
    for (const auto &c : cases) {
        gft_run(c.first, c.second, argc, argv);
    }
    return gft_finish("test_api_cpp");
}
