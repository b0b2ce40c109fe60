#include "nephra/validate/metrics.h"

#include <algorithm>
#include <random>
#include <set>

namespace nephra::validate {
namespace {

using Counts = std::vector<std::pair<int, int>>;  // per study: events, out of

// The pooled rate of `counts` with a percentile bootstrap over studies (the same resamples for every rate).
Rate rate_of(const Counts& counts, const std::vector<std::vector<size_t>>& resamples) {
  Rate r;
  for (const auto& [k, n] : counts) {
    r.k += k;
    r.n += n;
  }
  if (r.n == 0) return r;
  std::vector<double> values;
  values.reserve(resamples.size());
  for (const auto& sample : resamples) {
    int k = 0, n = 0;
    for (const size_t i : sample) {
      k += counts[i].first;
      n += counts[i].second;
    }
    if (n > 0) values.push_back(static_cast<double>(k) / n);
  }
  if (values.empty()) {
    r.low = r.high = r.value();
    return r;
  }
  std::sort(values.begin(), values.end());
  const auto at = [&](double q) { return values[static_cast<size_t>(q * static_cast<double>(values.size() - 1))]; };
  r.low = at(0.025);
  r.high = at(0.975);
  return r;
}

bool labelled_other_only(const StudyOutcome& s, const std::string& finding) {
  return !s.normal() && !s.truth.at(finding);
}

}  // namespace

bool StudyOutcome::normal() const {
  return std::none_of(truth.begin(), truth.end(), [](const auto& t) { return t.second; });
}

bool StudyOutcome::any_called() const {
  return std::any_of(called.begin(), called.end(), [](const auto& c) { return c.second; });
}

namespace {

// The same bootstrap resamples of the studies for every rate of one report.
class Rates {
 public:
  Rates(const std::vector<StudyOutcome>& outcomes, int bootstrap, unsigned seed) : outcomes_(outcomes) {
    const size_t n = outcomes.size();
    resamples_.resize(static_cast<size_t>(std::max(bootstrap, 0)));
    std::mt19937 rng(seed);
    std::uniform_int_distribution<size_t> pick(0, n == 0 ? 0 : n - 1);
    for (auto& sample : resamples_) {
      sample.resize(n);
      for (auto& i : sample) i = pick(rng);
    }
  }
  // `per_study` gives each study's (events, out of).
  template <typename PerStudy>
  Rate operator()(PerStudy&& per_study) const {
    Counts counts;
    counts.reserve(outcomes_.size());
    for (const auto& s : outcomes_) counts.push_back(per_study(s));
    return rate_of(counts, resamples_);
  }

 private:
  const std::vector<StudyOutcome>& outcomes_;
  std::vector<std::vector<size_t>> resamples_;
};

bool called(const StudyOutcome& s, const std::string& f) {
  const auto it = s.called.find(f);
  return it != s.called.end() && it->second;
}

std::pair<int, int> when(bool eligible, bool event) { return eligible ? std::pair{event ? 1 : 0, 1} : std::pair{0, 0}; }

FindingMetrics finding_metrics(const Rates& rate, const std::string& f) {
  FindingMetrics fm;
  fm.finding = f;
  fm.sensitivity = rate([&](const StudyOutcome& s) { return when(s.truth.at(f), called(s, f)); });
  fm.false_finding = rate([&](const StudyOutcome& s) { return when(s.normal(), called(s, f)); });
  fm.called_on_others = rate([&](const StudyOutcome& s) { return when(labelled_other_only(s, f), called(s, f)); });
  fm.located = rate([&](const StudyOutcome& s) {
    const auto it = s.on_labelled_slices.find(f);
    return when(it != s.on_labelled_slices.end(), it != s.on_labelled_slices.end() && it->second);
  });
  return fm;
}

std::vector<Stratum> strata_metrics(const Rates& rate, const std::vector<StudyOutcome>& outcomes,
                                    const std::vector<std::string>& findings) {
  std::set<std::pair<std::string, std::string>> strata;
  for (const auto& s : outcomes) {
    for (const auto& kv : s.strata) strata.insert(kv);
  }
  std::vector<Stratum> out;
  for (const auto& [key, value] : strata) {
    const auto in = [&, k = key, v = value](const StudyOutcome& s) {
      const auto it = s.strata.find(k);
      return it != s.strata.end() && it->second == v;
    };
    Stratum st{key, value, {}, {}, {}};
    st.sensitivity = rate([&](const StudyOutcome& s) {
      int k = 0, total = 0;
      for (const auto& f : findings) {
        if (!in(s) || !s.truth.at(f)) continue;
        ++total;
        k += called(s, f) ? 1 : 0;
      }
      return std::pair{k, total};
    });
    st.false_finding = rate([&](const StudyOutcome& s) { return when(in(s) && s.normal(), s.any_called()); });
    st.not_assessed = rate([&](const StudyOutcome& s) {
      return in(s) ? std::pair{s.not_assessed, s.slices} : std::pair{0, 0};
    });
    out.push_back(st);
  }
  return out;
}

std::vector<ReliabilityBin> reliability(const std::vector<StudyOutcome>& outcomes,
                                        const std::vector<std::string>& findings) {
  constexpr int kBins = 10;
  std::vector<ReliabilityBin> bins(kBins);
  for (int b = 0; b < kBins; ++b) {
    bins[static_cast<size_t>(b)].low = b / static_cast<double>(kBins);
    bins[static_cast<size_t>(b)].high = (b + 1) / static_cast<double>(kBins);
  }
  for (const auto& s : outcomes) {
    for (const auto& f : findings) {
      const auto it = s.score.find(f);
      if (it == s.score.end()) continue;
      auto& bin = bins[static_cast<size_t>(std::clamp(static_cast<int>(it->second * kBins), 0, kBins - 1))];
      bin.mean_score += it->second;
      ++bin.studies;
      bin.with_finding += s.truth.at(f) ? 1 : 0;
    }
  }
  for (auto& bin : bins) {
    if (bin.studies > 0) bin.mean_score /= bin.studies;
  }
  return bins;
}

}  // namespace

Metrics compute_metrics(const std::vector<StudyOutcome>& outcomes, const std::vector<std::string>& findings,
                        int bootstrap, unsigned seed) {
  const Rates rate(outcomes, bootstrap, seed);
  Metrics m;
  m.studies = static_cast<int>(outcomes.size());
  m.bootstrap = bootstrap;
  for (const auto& s : outcomes) m.normal_studies += s.normal() ? 1 : 0;
  for (const auto& f : findings) m.findings.push_back(finding_metrics(rate, f));
  m.any_false_finding = rate([](const StudyOutcome& s) { return when(s.normal(), s.any_called()); });
  m.not_assessed = rate([](const StudyOutcome& s) { return std::pair{s.not_assessed, s.slices}; });
  m.strata = strata_metrics(rate, outcomes, findings);
  m.reliability = reliability(outcomes, findings);
  return m;
}

nlohmann::json to_json(const Rate& r) {
  return {{"k", r.k}, {"n", r.n}, {"value", r.value()}, {"ci95", {r.low, r.high}}};
}

nlohmann::json to_json(const Metrics& m) {
  nlohmann::json findings = nlohmann::json::array();
  for (const auto& f : m.findings) {
    findings.push_back({{"finding", f.finding},
                        {"sensitivity", to_json(f.sensitivity)},
                        {"false_finding_on_normal", to_json(f.false_finding)},
                        {"called_on_other_findings", to_json(f.called_on_others)},
                        {"run_on_labelled_slices", to_json(f.located)}});
  }
  nlohmann::json strata = nlohmann::json::array();
  for (const auto& s : m.strata) {
    strata.push_back({{"key", s.key},
                      {"value", s.value},
                      {"sensitivity", to_json(s.sensitivity)},
                      {"false_finding_on_normal", to_json(s.false_finding)},
                      {"slices_not_assessed", to_json(s.not_assessed)}});
  }
  nlohmann::json bins = nlohmann::json::array();
  for (const auto& b : m.reliability) {
    bins.push_back({{"score", {b.low, b.high}},
                    {"pairs", b.studies},
                    {"with_finding", b.with_finding},
                    {"mean_score", b.mean_score}});
  }
  return {{"studies", m.studies},
          {"normal_studies", m.normal_studies},
          {"bootstrap_resamples", m.bootstrap},
          {"findings", findings},
          {"any_false_finding_on_normal", to_json(m.any_false_finding)},
          {"slices_not_assessed", to_json(m.not_assessed)},
          {"strata", strata},
          {"study_score_reliability", bins}};
}

}  // namespace nephra::validate
