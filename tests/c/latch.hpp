// latch.hpp: a counter that threads can wait on, for the C++ test programs (test_api.cpp,
// test_hpp.cpp): callbacks add(), the test waits for a number of them. Include after harness.h.
#ifndef GF_TEST_LATCH_HPP
#define GF_TEST_LATCH_HPP

#include <chrono>
#include <condition_variable>
#include <mutex>

// Counts events and lets a thread wait for a number of them.
class Latch {
  public:
    void add()
    {
        std::lock_guard<std::mutex> lock(mu_);
        ++count_;
        cv_.notify_all();
    }
    long count()
    {
        std::lock_guard<std::mutex> lock(mu_);
        return count_;
    }
    bool wait_for(long n, std::chrono::milliseconds timeout)
    {
        std::unique_lock<std::mutex> lock(mu_);
        return cv_.wait_for(lock, timeout, [&] { return count_ >= n; });
    }
    // Callbacks that must come: carrying on without them would free what they write to.
    void wait_or_die(long n, const char *what)
    {
        if (!wait_for(n, std::chrono::milliseconds(long(g_gft_timeout_s) * 750))) {
            gft_fatal("%s: %ld of %ld callbacks ran (lost callbacks or a deadlock)", what,
                      count(), n);
        }
    }

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    long count_ = 0;
};

#endif // GF_TEST_LATCH_HPP
