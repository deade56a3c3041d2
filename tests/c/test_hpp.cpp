// test_hpp.cpp: include/grpc_failover.hpp, the header-only C++17 interface, used as a C++
// program would: RAII clients, the throwing and the non-throwing forms, futures and callbacks,
// move semantics, shutdown racing calls, and a failover with one of three instances killed.
// Runs against real gf-testserver processes; see tests/c/README.md.
// Usage: test_hpp [case-name-substring...]
#include "harness.h"
#include "latch.hpp"

#include <grpc_failover.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace gf = grpc_failover;
using namespace std::chrono_literals;

namespace {

std::string echo_addr, nf_addr, slow_addr, stall_addr;
const std::string kEcho = "/gf.test.Echo/Echo";

std::string static_target(const std::string &addrs) { return "static:///" + addrs; }

const char *code_name(gf::StatusCode c) { return gf::status_code_name(c); }

#define CHECK_STATUS(status, want)                                                               \
    CHECKF((status).code() == (want), "got %s, want %s", (status).to_string().c_str(),          \
           code_name(want))

// Runs `f`, which must throw gf::Error with `want`; returns the error's message.
template <class F> std::string expect_error(F &&f, gf::StatusCode want, const char *what)
{
    try {
        f();
        CHECKF(false, "%s: no exception, want %s", what, code_name(want));
    } catch (const gf::Error &e) {
        CHECKF(e.code() == want, "%s: %s, want %s", what, e.what(), code_name(want));
        CHECKF(e.status().to_string() == e.what(), "%s: what() is not the status", what);
        return e.status().message();
    }
    return {};
}

void test_version_and_abi()
{
    CHECK(gf::abi_compatible());
    CHECK(!gf::version().empty());
    CHECK(gf::version() == gf_version());
    CHECK(std::string(gf::status_code_name(gf::StatusCode::UNAVAILABLE)) == "UNAVAILABLE");
    CHECK(std::string(gf::status_code_name(static_cast<gf::StatusCode>(99))) == "UNKNOWN_CODE");
    CHECK(gf::Status().ok() && gf::Status().to_string() == "OK");
    CHECK(gf::Status(gf::StatusCode::NOT_FOUND, "x").to_string() == "NOT_FOUND: x");
}

void test_connect_errors()
{
    std::string msg = expect_error([] { gf::Client c("bogus:///x"); }, gf::StatusCode::INVALID_ARGUMENT,
                                   "unknown scheme");
    CHECKF(msg.find("bogus") != std::string::npos, "message does not name the scheme: %s", msg.c_str());
    expect_error([] { gf::Client c(static_target(echo_addr), "{not json"); }, gf::StatusCode::INVALID_ARGUMENT,
                 "malformed options");

    gf::Status status;
    gf::Client c = gf::Client::connect("bogus:///x", "", status);
    CHECK_STATUS(status, gf::StatusCode::INVALID_ARGUMENT);
    CHECK(!c);
    c = gf::Client::connect(static_target(echo_addr), "", status);
    CHECK(status.ok() && c);
    c = gf::Client::connect(std::string("static:///\xff"), "", status);
    CHECK_STATUS(status, gf::StatusCode::INVALID_ARGUMENT);
    CHECK(!c);
}

void test_echo_round_trip()
{
    gf::Client client(static_target(echo_addr));
    for (size_t size : {size_t(0), size_t(1), size_t(1) << 20}) {
        std::string req(size, '\0');
        for (size_t i = 0; i < size; i++) {
            req[i] = static_cast<char>(i * 131 % 256); // NULs and high bytes included
        }
        gf::Result r = client.call(kEcho, req, gf::CallOptions().set_timeout(10s));
        CHECK(r.ok());
        CHECKF(r.response() == req, "%zu bytes: the echo differs (%zu bytes back)", size, r.response().size());
    }
    gf::Result who = client.call("/gf.test.Echo/Whoami", "");
    CHECK(who.response() == "echo");
}

void test_status_to_error()
{
    gf::Client nf(static_target(nf_addr));
    std::string msg = expect_error([&] { nf.call(kEcho, "x"); }, gf::StatusCode::NOT_FOUND, "call on nf");
    gf::Result r = nf.try_call(kEcho, "x");
    CHECK_STATUS(r.status(), gf::StatusCode::NOT_FOUND);
    CHECK(!r.ok() && r.response().empty());
    CHECK(r.status().message() == msg);

    gf::Client echo(static_target(echo_addr));
    expect_error([&] { echo.call("/gf.test.Echo/NoSuchMethod", "x"); }, gf::StatusCode::UNIMPLEMENTED,
                 "unknown method");
    CHECK_STATUS(echo.try_call("no-slash", "x").status(), gf::StatusCode::INVALID_ARGUMENT);
    CHECK_STATUS(echo.try_call(std::string("/a/\xff"), "x").status(), gf::StatusCode::INVALID_ARGUMENT);

    // An Error keeps the failed call's result, and copies share it.
    try {
        nf.call(kEcho, "x", gf::CallOptions().add_metadata("x-echo-why", "kept"));
        CHECK(false);
    } catch (const gf::Error &e) {
        gf::Error copy = e;
        CHECK(&copy.result() == &e.result());
        auto why = e.result().trailer("x-echo-why");
        CHECKF(why && *why == "kept", "the error lost the trailers");
    }
}

void test_metadata()
{
    gf::Client client(static_target(echo_addr));
    const std::string raw_bin("\x00\xff\x00\x80z", 5);
    gf::CallOptions opts;
    opts.add_metadata("x-echo-foo", "bar").add_metadata("x-echo-raw-bin", raw_bin).add_metadata("x-other", "no");
    CHECK(opts.metadata().size() == 3);
    gf::Result r = client.call(kEcho, "m", opts);
    CHECK(r.response() == "m");
    auto foo = r.trailer("x-echo-foo");
    auto bin = r.trailer("x-echo-raw-bin");
    CHECKF(foo && *foo == "bar", "x-echo-foo: bar missing");
    CHECKF(bin && *bin == raw_bin, "x-echo-raw-bin missing or altered");
    CHECK(!r.trailer("x-other"));
    CHECK(!r.trailer("grpc-status")); // the status, not a trailer
    int echoed = 0;
    for (const auto &kv : r.trailers()) {
        echoed += kv.first.rfind("x-echo-", 0) == 0;
    }
    CHECK(echoed == 2);
    CHECK(!r.header("x-echo-foo")); // echoed in the trailers only
    // The server's response headers (hyper adds `date`), found both ways.
    auto date = r.header("date");
    CHECK(date && !date->empty());
    bool listed = false;
    for (const auto &kv : r.headers()) {
        listed |= kv.first == "date" && date && kv.second == *date;
    }
    CHECK(listed);

    // A bad key fails the call with INVALID_ARGUMENT, in every form, before anything is sent.
    gf::CallOptions bad;
    bad.add_metadata("X-Upper", "v");
    CHECK_STATUS(client.try_call(kEcho, "x", bad).status(), gf::StatusCode::INVALID_ARGUMENT);
    std::string msg = expect_error([&] { client.call(kEcho, "x", bad); }, gf::StatusCode::INVALID_ARGUMENT,
                                   "bad key");
    CHECKF(msg.find("X-Upper") != std::string::npos, "message does not name the key: %s", msg.c_str());
    auto fut = client.call_async(kEcho, "x", bad);
    expect_error([&] { fut.get(); }, gf::StatusCode::INVALID_ARGUMENT, "bad key, future");
    std::atomic<int> ran{0};
    gf::Status st = client.call_async(kEcho, "x", bad, [&](gf::Result) { ran++; });
    CHECK_STATUS(st, gf::StatusCode::INVALID_ARGUMENT);
    gft_sleep_ms(50);
    CHECK(ran.load() == 0);
}

void test_compression()
{
    gf::Client client(static_target(echo_addr));
    const std::string req(10000, 'c');
    gf::Result r = client.call(kEcho, req, gf::CallOptions().set_compression("gzip"));
    CHECK(r.response() == req);
    auto enc = r.trailer("x-gf-request-encoding");
    CHECKF(enc && *enc == "gzip", "the server did not get a gzip request");
    r = client.call(kEcho, req, gf::CallOptions().set_compression("identity"));
    CHECK(r.response() == req && !r.trailer("x-gf-request-encoding"));
    CHECK(!gf::CallOptions().set_compression("gzip").clear_compression().compression());
    CHECK_STATUS(client.try_call(kEcho, req, gf::CallOptions().set_compression(std::string("gzip\0x", 6))).status(),
                 gf::StatusCode::INVALID_ARGUMENT);
    CHECK_STATUS(client.try_call(kEcho, req, gf::CallOptions().set_compression("")).status(),
                 gf::StatusCode::INVALID_ARGUMENT);
    gf::Result bad = client.try_call(kEcho, req, gf::CallOptions().set_compression("brotli"));
    CHECK_STATUS(bad.status(), gf::StatusCode::INVALID_ARGUMENT);
    CHECKF(bad.status().message().find("brotli") != std::string::npos, "%s", bad.status().message().c_str());
    char *err = nullptr;
    CHECK(gf_call_options_set_compression(nullptr, "gzip", &err) == GF_INVALID_ARGUMENT && err);
    gf_string_free(err);
}

void test_deadline_and_timeouts()
{
    gf::Client slow(static_target(slow_addr));
    auto t0 = std::chrono::steady_clock::now();
    gf::Result r = slow.try_call(kEcho, "x", gf::CallOptions().set_timeout(100ms));
    CHECK_STATUS(r.status(), gf::StatusCode::DEADLINE_EXCEEDED);
    CHECK(std::chrono::steady_clock::now() - t0 < 1900ms); // not the server's 2 s
    CHECK(gf::CallOptions().set_timeout(1500us).timeout_ms() == 2);
    CHECK(gf::CallOptions().set_timeout(std::chrono::duration<double>(0.25)).timeout_ms() == 250);
    CHECK(gf::CallOptions().set_timeout(-5s).timeout_ms() == 0 && gf::CallOptions().set_timeout(-5s).expired());
    CHECK(!gf::CallOptions().set_timeout(-5s).clear_timeout().expired());
    // A deadline already passed fails the call at once, in every form, and never waits.
    gf::Client stall(static_target(stall_addr));
    for (auto passed : {gf::CallOptions().set_timeout(-5s), gf::CallOptions().set_timeout(0ms),
                        gf::CallOptions().set_timeout(std::chrono::duration<double>(std::nan("")))}) {
        CHECK(passed.expired());
        CHECK_STATUS(stall.try_call(kEcho, "x", passed).status(), gf::StatusCode::DEADLINE_EXCEEDED);
        expect_error([&] { stall.call_async(kEcho, "x", passed).get(); }, gf::StatusCode::DEADLINE_EXCEEDED,
                     "future with a passed deadline");
    }
    CHECK(gf::CallOptions().set_timeout(std::chrono::hours::max()).timeout_ms() == 0);
    CHECK(gf::CallOptions().set_timeout(std::chrono::hours(24 * 50)).timeout_ms() == 0);
    CHECK(gf::CallOptions().set_timeout(std::chrono::hours(24 * 40)).timeout_ms() == 3456000000u);
    gf::CallOptions w;
    CHECK(!w.wait_for_ready());
    CHECK(*w.set_wait_for_ready(false).wait_for_ready() == false);
    CHECK(!w.clear_wait_for_ready().wait_for_ready());
}

void test_futures()
{
    gf::Client client(static_target(echo_addr));
    std::vector<std::pair<std::string, std::future<gf::Result>>> calls;
    for (int i = 0; i < 256; i++) {
        std::string req = "future-" + std::to_string(i);
        calls.emplace_back(req, client.call_async(kEcho, req, gf::CallOptions().set_timeout(10s)));
    }
    int good = 0;
    for (auto &c : calls) {
        gf::Result r = c.second.get();
        good += r.response() == c.first;
    }
    CHECKF(good == 256, "%d of 256 futures echoed their request", good);

    gf::Client nf(static_target(nf_addr));
    auto f = nf.call_async(kEcho, "x");
    expect_error([&] { f.get(); }, gf::StatusCode::NOT_FOUND, "future of a failing call");

    // Cancelled through the AsyncCall handle.
    gf::Client stall(static_target(stall_addr));
    gf::AsyncCall handle;
    auto s = stall.call_async(kEcho, "x", gf::CallOptions(), &handle);
    CHECK(static_cast<bool>(handle));
    CHECK(s.wait_for(100ms) == std::future_status::timeout);
    handle.cancel();
    handle.cancel(); // twice is fine
    expect_error([&] { s.get(); }, gf::StatusCode::CANCELLED, "cancelled future");
}

void test_callbacks()
{
    gf::Client client(static_target(echo_addr));
    Latch done;
    std::mutex mu;
    std::vector<std::string> got;
    const int n = 200;
    for (int i = 0; i < n; i++) {
        gf::Status st = client.call_async(kEcho, std::to_string(i), gf::CallOptions(), [&](gf::Result r) {
            {
                std::lock_guard<std::mutex> lock(mu);
                got.emplace_back(r.ok() ? std::string(r.response()) : r.status().to_string());
            }
            done.add();
        });
        CHECK(st.ok());
    }
    CHECK(done.wait_for(n, 20s));
    gft_sleep_ms(50);
    CHECK(done.count() == n); // exactly once each
    {
        std::lock_guard<std::mutex> lock(mu);
        std::vector<bool> seen(n);
        for (const auto &s : got) {
            int i = std::atoi(s.c_str());
            if (i >= 0 && i < n && std::to_string(i) == s) {
                seen[static_cast<size_t>(i)] = true;
            }
        }
        CHECK(std::count(seen.begin(), seen.end(), true) == n);
    }

    // Inside a callback: another async call works, a blocking one fails at once.
    Latch inner;
    gf::StatusCode blocking = gf::StatusCode::OK;
    std::string nested;
    gf::Status st = client.call_async(kEcho, "outer", gf::CallOptions(), [&](gf::Result) {
        blocking = client.try_call(kEcho, "x").status().code();
        gf::Status s2 = client.call_async(kEcho, "inner", gf::CallOptions(), [&](gf::Result r) {
            nested = std::string(r.response());
            inner.add();
        });
        if (!s2.ok()) {
            inner.add();
        }
    });
    CHECK(st.ok());
    CHECK(inner.wait_for(1, 10s));
    CHECK(blocking == gf::StatusCode::FAILED_PRECONDITION);
    CHECK(nested == "inner");

    // Cancelled: the callback sees CANCELLED.
    gf::Client stall(static_target(stall_addr));
    Latch cancelled;
    gf::StatusCode code = gf::StatusCode::OK;
    gf::AsyncCall handle;
    st = stall.call_async(
        kEcho, "x", gf::CallOptions(),
        [&](gf::Result r) {
            code = r.status().code();
            cancelled.add();
        },
        &handle);
    CHECK(st.ok());
    gf::AsyncCall moved = std::move(handle);
    CHECK(!handle && moved);
    moved.cancel();
    CHECK(cancelled.wait_for(1, 10s));
    CHECK(code == gf::StatusCode::CANCELLED);

    CHECK_STATUS(client.call_async(kEcho, "x", gf::CallOptions(), std::function<void(gf::Result)>()),
                 gf::StatusCode::INVALID_ARGUMENT);
}

void test_move_and_close()
{
    gf::Client a(static_target(echo_addr));
    gf::Client b = std::move(a);
    CHECK(!a && b);
    CHECK_STATUS(a.try_call(kEcho, "x").status(), gf::StatusCode::FAILED_PRECONDITION);
    expect_error([&] { a.call(kEcho, "x"); }, gf::StatusCode::FAILED_PRECONDITION, "moved-from client");
    expect_error([&] { a.stats(); }, gf::StatusCode::FAILED_PRECONDITION, "stats of an empty client");
    expect_error([&] { a.call_async(kEcho, "x").get(); }, gf::StatusCode::FAILED_PRECONDITION,
                 "future on an empty client");
    CHECK(b.call(kEcho, "b").response() == "b");
    std::string stats = b.stats();
    CHECKF(stats.find("\"calls\"") != std::string::npos, "stats: %s", stats.c_str());

    // Move-assigning closes the client that was there: its in-flight call ends CANCELLED.
    gf::Client stall(static_target(stall_addr));
    auto pending = stall.call_async(kEcho, "x");
    stall = gf::Client(static_target(echo_addr));
    expect_error([&] { pending.get(); }, gf::StatusCode::CANCELLED, "call on a replaced client");
    CHECK(stall.call(kEcho, "new").response() == "new");

    gf_client *raw = b.release();
    CHECK(!b && raw);
    gf::Client adopted(raw);
    CHECK(adopted.call(kEcho, "adopted").response() == "adopted");
    adopted.close();
    CHECK(!adopted);
    adopted.close(); // twice is fine
}

void test_shutdown_racing_calls()
{
    gf::Client client(static_target(echo_addr));
    std::atomic<bool> stop{false};
    std::atomic<long> ok{0}, cancelled{0}, closed{0}, other{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; t++) {
        threads.emplace_back([&] {
            while (!stop.load()) {
                gf::Result r = client.try_call(kEcho, "race");
                switch (r.status().code()) {
                case gf::StatusCode::OK: ok++; break;
                case gf::StatusCode::CANCELLED: cancelled++; break;
                case gf::StatusCode::FAILED_PRECONDITION: closed++; break;
                default: other++; break;
                }
                if (r.status().code() == gf::StatusCode::FAILED_PRECONDITION) {
                    return;
                }
            }
        });
    }
    gft_sleep_ms(200);
    client.shutdown();
    client.shutdown(); // idempotent
    gft_sleep_ms(100);
    stop = true;
    for (auto &t : threads) {
        t.join();
    }
    CHECKF(ok > 0 && other == 0, "ok %ld, other %ld", ok.load(), other.load());
    CHECKF(closed == 8, "%ld of 8 threads saw FAILED_PRECONDITION after shutdown", closed.load());
    CHECK_STATUS(client.try_call(kEcho, "x").status(), gf::StatusCode::FAILED_PRECONDITION);
    expect_error([&] { client.stats(); }, gf::StatusCode::FAILED_PRECONDITION, "stats after shutdown");
    CHECK(static_cast<bool>(client)); // the handle stays until the destructor
}

void test_failover_one_of_three_killed()
{
    const gft_server *s[3];
    for (int i = 0; i < 3; i++) {
        s[i] = gft_start_server(("fo-" + std::to_string(i)).c_str(), nullptr);
    }
    const std::string options = R"({"connect_backoff": {"base_delay_ms": 200, "max_delay_ms": 1000},
        "service_config": {"loadBalancingConfig": [{"round_robin": {}}],
          "methodConfig": [{"name": [{"service": "gf.test.Echo"}], "retryPolicy": {"maxAttempts": 4,
            "initialBackoff": "0.01s", "maxBackoff": "0.1s", "backoffMultiplier": 2.0,
            "retryableStatusCodes": ["UNAVAILABLE"]}}]}})";
    gf::Client client(static_target(std::string(s[0]->addr) + "," + s[1]->addr + "," + s[2]->addr), options);
    std::atomic<bool> stop{false};
    std::atomic<long> sent{0}, good{0};
    std::mutex mu;
    std::vector<std::string> errors;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++) {
        threads.emplace_back([&, t] {
            for (long i = 0; !stop.load(); i++) {
                std::string req = std::to_string(t) + ":" + std::to_string(i);
                sent++;
                try {
                    if (client.call(kEcho, req, gf::CallOptions().set_timeout(5s)).response() == req) {
                        good++;
                    }
                } catch (const gf::Error &e) {
                    std::lock_guard<std::mutex> lock(mu);
                    errors.emplace_back(e.what());
                }
            }
        });
    }
    gft_sleep_ms(gft_scaled(500));
    gft_kill_server(s[1]);
    gft_sleep_ms(gft_scaled(1000));
    stop = true;
    for (auto &t : threads) {
        t.join();
    }
    CHECKF(errors.empty(), "%zu caller-visible errors, first: %s", errors.size(),
           errors.empty() ? "" : errors[0].c_str());
    CHECKF(sent == good && good > 0, "sent %ld, echoed %ld", sent.load(), good.load());
}

void test_registration_errors()
{
    gf::Status status;
    gf::Registration r = gf::Registration::create("svc", "127.0.0.1:1", "", 0s, "", status);
    CHECK_STATUS(status, gf::StatusCode::INVALID_ARGUMENT);
    CHECK(!r);
    r = gf::Registration::create("svc", "127.0.0.1:1", "{bad", 5s, "", status);
    CHECK_STATUS(status, gf::StatusCode::INVALID_ARGUMENT);
    expect_error(
        [] {
            gf::Registration dead("svc", "127.0.0.1:1", R"({"weight": 1})", 5s,
                                  R"({"etcd": {"endpoints": ["127.0.0.1:1"], "dial_timeout_ms": 300}})");
        },
        gf::StatusCode::UNAVAILABLE, "etcd unreachable");
    CHECK(r.deregister().ok()); // an empty one
}

// set_log_handler: a failing call's DEBUG records reach the handler on the log thread; a
// handler cannot replace itself; once replaced it never runs again.
void test_log_handler()
{
    struct Seen {
        std::mutex lock;
        std::vector<std::string> messages;
        bool bad_level = false, on_caller = false, inside_threw = false;
    };
    auto seen = std::make_shared<Seen>();
    const std::thread::id caller = std::this_thread::get_id();
    const std::string addr = "127.0.0.1:" + std::to_string(gft_closed_port());
    const std::string want = "subchannel " + addr + ": connecting";
    gf::set_log_handler(gf::LogLevel::Debug, [seen, caller, want](gf::LogLevel level, std::string_view target,
                                                                  std::string_view message) {
        bool first = false;
        {
            std::lock_guard<std::mutex> g(seen->lock);
            const bool ours = message.find(want) != std::string_view::npos;
            seen->bad_level = seen->bad_level || level < gf::LogLevel::Error || level > gf::LogLevel::Trace ||
                              (ours && target.substr(0, 15) != "grpc_failover::");
            seen->on_caller = seen->on_caller || std::this_thread::get_id() == caller;
            first = message.find(want) != std::string_view::npos && seen->messages.empty();
            if (message.find(want) != std::string_view::npos) {
                seen->messages.emplace_back(message);
            }
        }
        if (first) {
            try {
                gf::set_log_handler(gf::LogLevel::Warn, {});
            } catch (const gf::Error &e) {
                std::lock_guard<std::mutex> g(seen->lock);
                seen->inside_threw = e.code() == gf::StatusCode::FAILED_PRECONDITION;
            }
        }
    });
    {
        gf::Client c(static_target(addr), R"({"connect_backoff": {"base_delay_ms": 50}})");
        gf::Result r = c.try_call(kEcho, "x", gf::CallOptions().set_timeout(300ms));
        CHECKF(!r.ok(), "a call to a closed port succeeded");
        const int64_t deadline = gft_now_ms() + gft_scaled(10000);
        for (;;) {
            {
                std::lock_guard<std::mutex> g(seen->lock);
                if (!seen->messages.empty() || gft_now_ms() > deadline) {
                    break;
                }
            }
            gft_sleep_ms(10);
        }
    }
    gf::set_log_handler(gf::LogLevel::Warn, {}); // stderr again; the handler is destroyed
    std::lock_guard<std::mutex> g(seen->lock);
    CHECKF(!seen->messages.empty(), "no record \"%s\" reached the handler", want.c_str());
    CHECK(seen->inside_threw);
    CHECK(!seen->bad_level);
    CHECK(!seen->on_caller);
    expect_error([] { gf::set_log_level(static_cast<gf::LogLevel>(9)); }, gf::StatusCode::INVALID_ARGUMENT,
                 "log level 9");
    gf::set_log_level(gf::LogLevel::Warn);
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
    std::printf("grpc-failover %s, grpc_failover.hpp tests, GF_TEST_SCALE=%g\n", gf_version(), g_gft_scale);

    const std::pair<const char *, gft_case_fn> cases[] = {
        {"version_and_abi", test_version_and_abi},
        {"connect_errors", test_connect_errors},
        {"echo_round_trip", test_echo_round_trip},
        {"status_to_error", test_status_to_error},
        {"metadata", test_metadata},
        {"deadline_and_timeouts", test_deadline_and_timeouts},
        {"compression", test_compression},
        {"futures", test_futures},
        {"callbacks", test_callbacks},
        {"move_and_close", test_move_and_close},
        {"shutdown_racing_calls", test_shutdown_racing_calls},
        {"failover_one_of_three_killed", test_failover_one_of_three_killed},
        {"registration_errors", test_registration_errors},
        {"log_handler", test_log_handler},
    };
    for (const auto &c : cases) {
        gft_run(c.first, c.second, argc, argv);
    }
    return gft_finish("test_hpp");
}
