#include "nephra/metrics/metrics.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

namespace nephra::metrics {
namespace {

std::string escape_label(const std::string& value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string label_text(const Labels& labels, const std::string& extra_key = "", const std::string& extra_value = "") {
  if (labels.empty() && extra_key.empty()) return "";
  std::string out = "{";
  for (const auto& [key, value] : labels) {
    if (out.size() > 1) out += ',';
    out += key + "=\"" + escape_label(value) + '"';
  }
  if (!extra_key.empty()) {
    if (out.size() > 1) out += ',';
    out += extra_key + "=\"" + extra_value + '"';
  }
  return out + "}";
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  std::ostringstream out;
  out.precision(17);
  out << v;
  return out.str();
}

}  // namespace

std::vector<double> Histogram::latency_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end())) throw std::invalid_argument("histogram bounds must be sorted");
}

void Histogram::observe(double value) noexcept {
  const auto slot = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  counts_[slot].fetch_add(1, std::memory_order_relaxed);
  double sum = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(sum, sum + value, std::memory_order_relaxed)) {
  }
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot snap;
  snap.upper_bounds = bounds_;
  std::uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    snap.cumulative.push_back(running);
  }
  snap.count = running;
  snap.sum = sum_.load(std::memory_order_relaxed);
  return snap;
}

Registry::Family& Registry::family(const std::string& name, const std::string& help, const std::string& type) {
  const auto it = std::find_if(families_.begin(), families_.end(), [&](const Family& f) { return f.name == name; });
  if (it == families_.end()) return families_.emplace_back(Family{name, help, type, {}});
  if (it->type != type) throw std::logic_error("metric " + name + " registered with two types");
  return *it;
}

void Registry::add(const std::string& name, const std::string& help, const Counter& counter, const Labels& labels) {
  add_counter(
      name, help, [&counter] { return static_cast<double>(counter.value()); }, labels);
}

void Registry::add(const std::string& name, const std::string& help, const Histogram& histogram, const Labels& labels) {
  const std::lock_guard guard(mutex_);
  family(name, help, "histogram").series.push_back(Series{labels, nullptr, &histogram});
}

void Registry::add_gauge(const std::string& name, const std::string& help, std::function<double()> read,
                         const Labels& labels) {
  const std::lock_guard guard(mutex_);
  family(name, help, "gauge").series.push_back(Series{labels, std::move(read), nullptr});
}

void Registry::add_counter(const std::string& name, const std::string& help, std::function<double()> read,
                           const Labels& labels) {
  const std::lock_guard guard(mutex_);
  family(name, help, "counter").series.push_back(Series{labels, std::move(read), nullptr});
}

std::string Registry::render() const {
  const std::lock_guard guard(mutex_);
  std::string out;
  for (const auto& f : families_) {
    out += "# HELP " + f.name + ' ' + f.help + "\n# TYPE " + f.name + ' ' + f.type + '\n';
    for (const auto& s : f.series) {
      if (s.histogram == nullptr) {
        out += f.name + label_text(s.labels) + ' ' + number(s.read()) + '\n';
        continue;
      }
      const auto snap = s.histogram->snapshot();
      for (size_t i = 0; i < snap.cumulative.size(); ++i) {
        const double bound = i < snap.upper_bounds.size() ? snap.upper_bounds[i] : INFINITY;
        out += f.name + "_bucket" + label_text(s.labels, "le", number(bound)) + ' ' +
               std::to_string(snap.cumulative[i]) + '\n';
      }
      out += f.name + "_sum" + label_text(s.labels) + ' ' + number(snap.sum) + '\n';
      out += f.name + "_count" + label_text(s.labels) + ' ' + std::to_string(snap.count) + '\n';
    }
  }
  return out;
}

}  // namespace nephra::metrics
