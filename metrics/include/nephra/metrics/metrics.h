#pragma once
// Lock-free counters and histograms that the stages own, and a catalogue that renders them in the Prometheus
// text exposition format (version 0.0.4) for the node's /metrics endpoint.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace nephra::metrics {

class Counter {
 public:
  void inc(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

// Buckets are fixed at construction; observe() is wait-free apart from the sum's compare-exchange.
class Histogram {
 public:
  // Upper bounds in seconds, from 5 ms to 10 min: C-STORE of one slice up to a large study's classification.
  static std::vector<double> latency_buckets();

  explicit Histogram(std::vector<double> upper_bounds = latency_buckets());
  void observe(double value) noexcept;

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<std::uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0;
    std::uint64_t count = 0;
  };
  [[nodiscard]] Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;
  std::atomic<double> sum_{0};
};

using Labels = std::vector<std::pair<std::string, std::string>>;

// Holds references: every metric added must outlive the registry's last render().
class Registry {
 public:
  void add(const std::string& name, const std::string& help, const Counter& counter, const Labels& labels = {});
  void add(const std::string& name, const std::string& help, const Histogram& histogram, const Labels& labels = {});
  // Values read at scrape time from state the stages already keep (queue depth, free disk space, ...).
  void add_gauge(const std::string& name, const std::string& help, std::function<double()> read,
                 const Labels& labels = {});
  void add_counter(const std::string& name, const std::string& help, std::function<double()> read,
                   const Labels& labels = {});

  [[nodiscard]] std::string render() const;

 private:
  struct Series {
    Labels labels;
    std::function<double()> read;  // counters and gauges
    const Histogram* histogram = nullptr;
  };
  struct Family {
    std::string name;
    std::string help;
    std::string type;
    std::vector<Series> series;
  };
  Family& family(const std::string& name, const std::string& help, const std::string& type);

  mutable std::mutex mutex_;
  std::vector<Family> families_;
};

}  // namespace nephra::metrics
