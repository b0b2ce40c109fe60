#pragma once
// The status page at / and its data at /status.json, for the people who run the node. The page is one
// self-contained HTML document (no CDN: hospital networks are often isolated) that polls /status.json. Nothing on it
// names a patient or a study: rounds are shown by their hashed study key.
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nephra/store/round_store.h"

namespace nephra::app {

// Cumulative counters sampled every few seconds; the last hour of them gives throughput.
class Throughput {
 public:
  struct Sample {
    double at = 0;  // seconds since the epoch
    unsigned long instances = 0;
    unsigned long studies = 0;
    unsigned long results = 0;
  };
  void record(const Sample& sample);
  // Totals over the hour up to `now` (the counters as they are) and per-minute counts, oldest first (minutes before
  // the node started count 0).
  [[nodiscard]] nlohmann::json last_hour(const Sample& now) const;

 private:
  mutable std::mutex mutex_;
  std::deque<Sample> samples_;
};

// The recent rounds as the page lists them: hashed key, calling AE, state, findings in words, timings.
nlohmann::json rounds_json(const std::vector<store::RoundView>& rounds, double now);

std::string status_page_html(bool try_page);

}  // namespace nephra::app
